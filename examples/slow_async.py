"""An async handler that waits on something slow (here asyncio.sleep; in real code an
HTTP call or a database query) before it answers. A thousand such requests wait at once
on one event loop, with no thread each:

    python server.py --handler examples.slow_async:handle
"""

import asyncio

DELAY = 0.5  # seconds


async def handle(request: bytes) -> bytes:
    await asyncio.sleep(DELAY)
    return b"World"
