#!/usr/bin/env python3
"""The server, where the tutorial runs it: `python server.py --help` lists its flags.

Its code is the zmq_hello package's (installed, this program is zmq-hello-server): the
poll loop is Server.serve() in zmq_hello/server.py, and where the handler runs (threads,
an event loop, inline, MDP workers) is a Runner behind one interface, in
zmq_hello/runners.py; every Majordomo rule is in zmq_hello/majordomo.py, with no I/O.
"""

from zmq_hello.server import run

if __name__ == "__main__":
    run()
