#!/usr/bin/env python3
"""The benchmark's baseline: the tutorial's server loop with its two bugs fixed.

Its client sent no extra id frame, so the ROUTER receives [id, request]; and there is no
time.sleep in the loop and no printing. What is left is the smallest poller-driven
ROUTER echo, the floor that server.py's extra machinery is measured against.
"""

import sys

import zmq


def main() -> None:
    endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:*"
    with zmq.Context() as context, context.socket(zmq.ROUTER) as socket:
        socket.bind(endpoint)
        print(f"Listening on {socket.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        while True:
            socks = dict(poller.poll(100))
            if socket in socks and socks[socket] == zmq.POLLIN:
                identity, request = socket.recv_multipart()
                socket.send_multipart([identity, b"World"])


if __name__ == "__main__":
    main()
