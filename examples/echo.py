"""Echo: the reply is the request. python server.py --handler examples.echo:handle"""


def handle(request: bytes) -> bytes:
    return request
