"""Disk space for a job: the space an input's segments and joined output will need, estimated before they start
(a disk with less than half of it free is refused), and the classification of a disk that fills up anyway
(ENOSPC, EDQUOT anywhere in an exception's chain) as :class:`~vidpipe.errors.DiskFullError`."""

from __future__ import annotations

import errno
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from ..errors import DiskFullError
from ..frames import StreamSpec
from ..media.encoders import EncoderChoice
from ..media.info import MediaInfo

log = logging.getLogger(__name__)

#: refuse to start when less than this fraction of the estimated need is free: the estimate of a compressed
#: size is rough (content decides), but below half of it the job cannot finish
REFUSE_BELOW: Final = 0.5
#: output bytes per pixel of a frame, by encoder, roughly at their default settings: lossy CRF encoders about
#: 0.4 bit/pixel (generous: 1080p H.264 at CRF 18 is often 0.1-0.2), ProRes 422 HQ 0.44 (220 Mbit/s at
#: 1080p30), lossless 4:2:0 codecs about half of the raw 1.5 bytes, PNG about half of raw RGB
BYTES_PER_PIXEL: Final = {"lossy": 0.05, "prores": 0.5, "lossless": 0.75, "png": 1.5}


def disk_full(exc: BaseException) -> DiskFullError | None:
    """The DiskFullError for `exc` if anything in its chain is ENOSPC/EDQUOT (the writer and the storage
    module wrap OS errors in their own), else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return e
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" ({e.filename})" if e.filename else ""
            return DiskFullError(f"disk full{where}: free space or use a larger disk, then run the job again to resume")
        e = e.__cause__ or e.__context__
    return None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def estimate_output_bytes(spec: StreamSpec, info: MediaInfo, choice: EncoderChoice, lossless: bool) -> int:
    w, h = spec.crop_to or (spec.width, spec.height)
    frames = spec.frames
    if frames is None:
        rate = spec.rate or spec.nominal_rate or info.video.rate
        frames = round((info.duration or 0) * rate)
    if choice.preset == "png":
        kind = "png"
    elif choice.preset == "prores":
        kind = "prores"
    elif lossless or choice.preset == "ffv1":
        kind = "lossless"
    else:
        kind = "lossy"
    return int(frames * w * h * BYTES_PER_PIXEL[kind])


def check_free_space(needs: Mapping[Path, int], what: str) -> None:
    """Refuse (DiskFullError) when a file system has clearly too little free space for `needs` (bytes per
    directory; directories on one file system add up); warn when it is merely tight."""
    by_dev: dict[int, tuple[Path, int]] = {}
    for path, need in needs.items():
        where = _existing(path)
        dev = where.stat().st_dev
        prev = by_dev.get(dev)
        by_dev[dev] = (prev[0] if prev else where, (prev[1] if prev else 0) + need)
    for where, need in by_dev.values():
        free = shutil.disk_usage(where).free
        gb = 1e9
        if free < need * REFUSE_BELOW:
            raise DiskFullError(
                f"not enough disk space for {what}: about {need / gb:.2f} GB needed on the disk of {where}, "
                f"{free / gb:.2f} GB free; free space, use a larger disk or point work_dir/output.dir elsewhere"
            )
        if free < need:
            log.warning(
                "disk space is tight for %s: ~%.2f GB needed, %.2f GB free on %s", what, need / gb, free / gb, where
            )
