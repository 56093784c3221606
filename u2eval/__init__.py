"""u2eval: an evaluation harness for vision-language models on U2-Bench."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
