"""vidnl: video action recognition and re-identification with nonlocal blocks."""

__version__ = "0.1.0"
