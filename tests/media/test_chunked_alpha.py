"""Segment-parallel encoding of the alpha routes (issue 16: one libvpx instance with alpha caps a 1080p matte run
at ~15 fps on the H100 host): VP9 WebM `yuva420p` and ProRes 4444 chunks joined are one valid stream, alpha
kept, with the frames and times one encoder gives."""

from __future__ import annotations

import av
import pytest
import torch
from test_alpha import PRORES_ALPHA_LEVELS, VP9_ALPHA_MAE_LEVELS, VP9_CRF, levels, matte, spec_of

from vidpipe.frames import Colour, FrameBatch
from vidpipe.media import writer as writer_mod
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.reader import VideoReader
from vidpipe.media.writer import VideoWriter, WriterOptions

FRAMES = 24


@pytest.fixture(autouse=True)
def short_chunks(monkeypatch):
    """Chunks of 8 frames, so 24 frames span three of them."""
    monkeypatch.setattr(writer_mod, "MIN_CHUNK_FRAMES", 8)
    monkeypatch.setattr(writer_mod, "CHUNK_SECONDS", 0)


def _write(path, frames, workers: int, **encoder) -> VideoWriter:
    w = VideoWriter(path, spec_of(frames), Colour(), None,
                    WriterOptions(encoder=EncoderOptions(**encoder), encode_workers=workers))  # fmt: skip
    for k in range(0, len(frames), 5):  # batches that straddle the chunk boundaries
        part = frames[k : k + 5]
        w.write(FrameBatch(data=part, pts=list(range(k, k + len(part))), time_base=spec_of(frames).time_base))
    w.close()
    return w


def _back(path) -> tuple[list[int], torch.Tensor]:
    with VideoReader(probe(path)) as r:
        batches = list(r)
    return [p for b in batches for p in b.pts], torch.cat([b.data for b in batches])


def _keyframes(path) -> list[int]:
    with av.open(str(path)) as c:
        return [i for i, p in enumerate(p for p in c.demux(video=0) if p.size) if p.is_keyframe]


@pytest.mark.parametrize(
    ("encoder", "suffix", "bound"),
    [("vp9", ".webm", VP9_ALPHA_MAE_LEVELS), ("prores", ".mov", PRORES_ALPHA_LEVELS)],
    ids=["vp9-webm", "prores-4444"],
)
def test_alpha_chunks_join_to_one_stream_with_its_alpha(tmp_path, encoder, suffix, bound):
    frames = matte(FRAMES)
    one = _write(tmp_path / f"one{suffix}", frames, 0, encoder=encoder, crf=VP9_CRF)
    par = _write(tmp_path / f"par{suffix}", frames, 3, encoder=encoder, crf=VP9_CRF)
    assert one.stats.parallel is None and par.stats.parallel is not None
    assert par.stats.parallel.startswith("3 encoders")
    info = probe(tmp_path / f"par{suffix}").video
    assert info.alpha and info.pix_fmt == probe(tmp_path / f"one{suffix}").video.pix_fmt
    t1, a = _back(tmp_path / f"one{suffix}")
    t2, b = _back(tmp_path / f"par{suffix}")
    assert t1 == t2 and len(t2) == FRAMES and b.shape == frames.shape  # the times one encoder gives
    assert levels(b[:, 3], frames[:, 3]).mean() <= bound  # alpha kept in every chunk
    assert _keyframes(tmp_path / f"par{suffix}")[:3] == ([0, 8, 16] if encoder == "vp9" else [0, 1, 2])
    if encoder == "prores":
        assert torch.equal(a, b)  # intra-only: the same frames, whoever encodes them
