#!/usr/bin/env python3
"""Send one request to server.py and print the reply.

    python client.py 1                 # Client 1 sending 'Hello' ... received reply: World
    python client.py 2 Hi --timeout 1  # another id, another message, a shorter wait
    python client.py 3 img --service resize   # to the server's workers for "resize"

If no reply comes in time the client sends the request again, to the next server if
there are several, then gives up with one line on stderr. Exit codes: 0 reply received,
1 no reply, 2 bad arguments, 3 the server answered with an error, 130 interrupted.

The program is zmq_hello/client_cli.py (installed as zmq-hello-client), on the library's
Client (zmq_hello/client.py). request(), the one-shot function this file has always
offered, is still importable from here.
"""

from zmq_hello.client import request
from zmq_hello.client_cli import main, run

__all__ = ["main", "request"]

if __name__ == "__main__":
    run()
