"""vidpipe: run AI models over video on GPUs, streaming, without losing frames, audio or timing."""

from __future__ import annotations

__version__ = "0.1.0"
