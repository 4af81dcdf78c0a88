"""A CPU-bound handler: pure Python, about 2 ms a request on a 2-core laptop-class machine.
Threads do not help it (one runs Python at a time); worker processes do.

    python server.py --handler examples.cpu:handle
"""

LIMIT = 4000  # primes below this: about 2 ms of pure-Python work


def handle(request: bytes) -> bytes:
    count = 0
    for candidate in range(2, LIMIT):
        for divisor in range(2, int(candidate**0.5) + 1):
            if candidate % divisor == 0:
                break
        else:
            count += 1
    return f"{count} primes below {LIMIT}".encode()
