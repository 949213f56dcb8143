"""The skip-finished check (schedule/idempotency.py) knows an input by its content, not only its size and mtime:
another file of the same size with a copied mtime is made again (issue 22, item 10)."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import torch

from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.paths import SAMPLE_BLOCK, WHOLE_FILE_BELOW, content_sample
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.schedule.idempotency import input_fingerprint
from vidpipe.testing import decode_all


def _opts() -> RunOptions:
    return RunOptions(
        device="cpu",
        progress="none",
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),  # type: ignore[arg-type]
        schedule=ScheduleOptions(skip_finished=True),
    )


def _same_size_pair(make) -> tuple[Path, Path]:
    """Two uncompressed clips of one size and length: the same byte count, other pictures."""
    a = make("same-size-a.avi", size=(32, 24), frames=3, codec="rawvideo", source="testsrc2")
    b = make("same-size-b.avi", size=(32, 24), frames=3, codec="rawvideo", source="mandelbrot")
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    return a, b


def _swap_in(src: Path, into: Path) -> None:
    """Put `src`'s bytes into `into` keeping `into`'s mtime, as `cp --preserve=timestamps` of another file does."""
    st = into.stat()
    shutil.copyfile(src, into)
    os.utime(into, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert into.stat().st_mtime_ns == st.st_mtime_ns


def test_another_file_with_the_same_size_and_mtime_is_made_again(make, tmp_path: Path) -> None:
    a, b = _same_size_pair(make)
    src, out = tmp_path / "in.avi", tmp_path / "out.mkv"
    shutil.copyfile(a, src)
    assert not run(src, out, [], _opts()).skipped
    assert run(src, out, [], _opts()).skipped  # unchanged: skipped, as before

    _swap_in(b, src)
    again = run(src, out, [], _opts())
    assert not again.skipped, "a different input with the same size and mtime was skipped"
    run(b, tmp_path / "solo.mkv", [], _opts())
    assert torch.equal(decode_all(out)[1], decode_all(tmp_path / "solo.mkv")[1])  # the new input's frames


def test_fingerprint_changes_with_any_byte_of_a_small_file(tmp_path: Path) -> None:
    f = tmp_path / "small.bin"
    data = bytearray(os.urandom(3 * SAMPLE_BLOCK + 17))
    assert len(data) < WHOLE_FILE_BELOW
    f.write_bytes(data)
    base = input_fingerprint(f)
    st = f.stat()
    for at in (0, len(data) // 2, len(data) - 1):
        changed = bytearray(data)
        changed[at] ^= 0xFF
        f.write_bytes(changed)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert input_fingerprint(f) != base, f"byte {at} changed, fingerprint did not"
    f.write_bytes(data)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert input_fingerprint(f) == base  # deterministic


def test_large_file_is_sampled_at_head_tail_and_blocks(tmp_path: Path) -> None:
    """Above WHOLE_FILE_BELOW only samples are read; a change in the head, the tail or the middle block is seen."""
    f = tmp_path / "large.bin"
    size = WHOLE_FILE_BELOW + 5 * SAMPLE_BLOCK + 3
    with f.open("wb") as fh:
        fh.truncate(size)  # sparse: cheap to make
    base = content_sample(f)
    for at in (0, size // 2, size - 1):
        with f.open("r+b") as fh:
            fh.seek(at)
            fh.write(b"\x01")
        assert content_sample(f) != base, f"byte {at} changed, the sample did not"
        with f.open("r+b") as fh:
            fh.seek(at)
            fh.write(b"\x00")
        assert content_sample(f) == base


def test_fingerprint_is_recorded_in_the_manifest(make, tmp_path: Path) -> None:
    src = make("fp.mkv", size=(32, 24), frames=2, rate=Fraction(25))
    res = run(src, tmp_path / "fp-out.mkv", [], _opts())
    fp = res.manifest["input_fingerprint"]
    assert fp["size"] == src.stat().st_size and fp["content_sha256"] == content_sample(src)
