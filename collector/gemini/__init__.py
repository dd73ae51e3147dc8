"""Gemini's two market-data APIs (pure): the wire formats (`wire`, `v1`, `current`) and
each API's per-symbol stream protocol (`v1_stream`, `current_stream`), which turn frames
into records."""
