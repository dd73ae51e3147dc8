"""gemini-collector: records Gemini market data into whole-line JSON files."""

__version__ = "0.1.0"
