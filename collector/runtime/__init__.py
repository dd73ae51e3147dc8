"""I/O: the supervisor, one feed per symbol, the WebSocket transports, the single
writer and its segment files."""
