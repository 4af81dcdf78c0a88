#!/usr/bin/env python3
"""The Majordomo worker, where the tutorial runs it: `python worker.py --help` lists its
flags.

Its code is Worker in zmq_hello/worker.py (installed, this program is zmq-hello-worker).
"""

from zmq_hello.worker import run

if __name__ == "__main__":
    run()
