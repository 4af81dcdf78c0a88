#!/usr/bin/env python3
"""A ZeroMQ request-reply server: one ROUTER socket, one poll loop, a pool of workers.

Any client answers: client.py, a plain DEALER, a REQ socket. Each reply goes back to
the connection its request came from. The handler runs on worker threads (or, for an
`async def` handler, as tasks on one asyncio event loop), so the poll loop never waits
for it and a slow request never holds up the others. To use more cores or machines,
the server becomes a Majordomo (MDP) broker for worker processes (worker.py).

    python server.py                                  # tcp://127.0.0.1:5555, 16 workers
    python server.py --handler examples.echo:handle   # serve your own function
    python server.py --workers 0 --quiet              # handler inline: fastest for cheap ones
    python server.py --processes 2 --handler examples.cpu:handle   # one process a core

The code is in the zmq_hello package (installed, this program is zmq-hello-server): the
poll loop is Server.serve() in zmq_hello/server.py; where the handler runs (threads, an
event loop, inline, MDP workers) is a Runner, behind one interface (zmq_hello/runners.py).
"""

from zmq_hello.server import run

if __name__ == "__main__":
    run()
