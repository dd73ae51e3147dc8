"""gemini-collector: records Gemini market data into whole-line JSON files."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `collector.read(...)` for research code, without importing it into the daemon
    if name in ("read", "read_lines", "to_dataframe"):
        from collector.tools import reading

        return getattr(reading, name)
    raise AttributeError(f"module 'collector' has no attribute {name!r}")
