"""Atomic file writes: temp file in the same directory, fsync, rename. A reader sees the old file or the whole
new one, never a torn one, even after a crash or SIGKILL.

They live in `vidpipe.paths` (media, runtime and schedule write manifests and caches too, and must not import
`jobs`); this name stays for the job modules and existing callers."""

from __future__ import annotations

from ..paths import DEFAULT_MODE, write_bytes, write_json

__all__ = ["DEFAULT_MODE", "write_bytes", "write_json"]
