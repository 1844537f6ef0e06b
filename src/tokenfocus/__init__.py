"""tokenfocus: token-level signals in transformer language models."""

__version__ = "0.1.0"
