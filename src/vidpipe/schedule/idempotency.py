"""Idempotent re-runs (issue 6): a finished output is not made again.

Every manifest records
- `model_signature`: a hash of the chain's stage signatures, in order — each holds its model's weights hash,
  architecture and every parameter that changes the output (`Stage.signature()`);
- `settings_signature`: a hash of the reader and writer settings that change the output (encoder, quality,
  streams copied, what to do with damaged frames, …; never performance knobs such as batch or queue sizes);
- `input_fingerprint`: the input's size, modification time (nanoseconds) and a content hash
  (`paths.content_sample`: the whole file when small, else its head, tail and sampled blocks, ~17 MiB read
  whatever its size): size and mtime alone took another file copied with its mtime for the finished input.

An output is finished when its manifest and the output itself exist and all three match; otherwise it is made
again (new weights, other parameters, an edited input, a run that died before its manifest was written).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..media.reader import ReaderOptions
from ..media.writer import WriterOptions
from ..paths import content_sample
from ..stages.base import Stage

#: reader settings that change speed or memory only, never the frames decoded
PERFORMANCE_ONLY = frozenset({"batch_size", "queue_size", "threads", "hwaccel", "planar", "pin_memory"})


def _hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_signature(stages: Sequence[Stage]) -> str:
    """The chain's signature: its set-up stages' `signature()`s in order (the order changes the output too)."""
    return _hash([s.signature() for s in stages])


def settings_signature(reader: ReaderOptions, writer: WriterOptions) -> str:
    read = {k: v for k, v in dataclasses.asdict(reader).items() if k not in PERFORMANCE_ONLY}
    return _hash({"reader": read, "writer": dataclasses.asdict(writer)})


def input_fingerprint(path: Path) -> dict[str, int | str]:
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "content_sha256": content_sample(path)}


def signature_fields(
    src: Path, stages: Sequence[Stage], reader: ReaderOptions, writer: WriterOptions
) -> dict[str, Any]:
    """What a manifest records so that a later run can tell this output is finished."""
    return {
        "model_signature": model_signature(stages),
        "settings_signature": settings_signature(reader, writer),
        "input_fingerprint": input_fingerprint(src),
    }


def finished(src: Path, dst: Path, manifest: Path, expected: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(the finished run's manifest, why) when `dst` is finished with the `expected` signature fields, else
    (None, why it must be made)."""
    if not manifest.is_file():
        return None, "no manifest"
    if not dst.exists():
        return None, "output missing"
    try:
        old = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "manifest unreadable"
    if not isinstance(old, dict):
        return None, "manifest unreadable"
    for key, what in (
        ("model_signature", "the models or their parameters changed"),
        ("settings_signature", "the reader or encoder settings changed"),
        ("input_fingerprint", "the input changed"),
    ):
        if old.get(key) != expected[key]:
            return None, what
    return old, f"finished with the same signature (manifest {manifest.name})"
