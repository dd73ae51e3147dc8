"""The pure core: the on-disk format, the book (and its C twin), the stream protocol
shared by both APIs, health verdicts, backoff. No I/O: no os, asyncio, sockets or logging."""
