#!/usr/bin/env python3
"""A Majordomo (MDP/0.2) worker: runs a handler for server.py, or for any MDP broker.

It connects to the broker, registers for a service (READY), and answers its requests
one at a time (REQUEST, then FINAL), exchanging heartbeats while it waits for work.
Registered with several brokers, it keeps heartbeating the others while a handler runs
for one (from a thread of its own), so that none takes a slow worker for a dead one.

    python worker.py --connect tcp://server-host:5556 --handler examples.cpu:handle
    python server.py --backend 'tcp://*:5556' ...   # the broker side, on the server

A broker silent for 3 heartbeats (killed, restarted, network gone) is reconnected to on
a fresh socket, with a growing pause between tries (the guide's Paranoid Pirate): the
worker never gives up on its own. SIGINT or SIGTERM: finish the request in hand, send
its reply, tell the broker (DISCONNECT), exit 0; a second signal exits at once.

The code is Worker in zmq_hello/worker.py (installed, this program is zmq-hello-worker).
"""

from zmq_hello.worker import run

if __name__ == "__main__":
    run()
