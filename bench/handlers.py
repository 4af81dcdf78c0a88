"""Zero-work handlers for the benchmark, served with --handler bench.handlers:NAME."""


async def world_async(request: bytes) -> bytes:
    return b"World"
