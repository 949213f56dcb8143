"""vidpipe: run AI models over video on GPUs, streaming, without losing frames, audio or timing.

Python API: `vidpipe.probe(path)`, `vidpipe.run(input, output, stages, RunOptions(...))`; stages live in
`vidpipe.stages`, errors in `vidpipe.errors`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "probe": "vidpipe.media.probe",
    "MediaInfo": "vidpipe.media.info",
    "run": "vidpipe.runtime.pipeline",
    "RunOptions": "vidpipe.runtime.pipeline",
    "RunResult": "vidpipe.runtime.pipeline",
    "FrameBatch": "vidpipe.frames",
    "Stage": "vidpipe.stages.base",
    "StreamSpec": "vidpipe.stages.base",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    # lazy: `import vidpipe` stays cheap (no torch/PyAV import until something is used)
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vidpipe' has no attribute {name!r}")
