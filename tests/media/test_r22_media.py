"""Issue 22 (media fidelity) and issue 15 (7b): audio that does not decode, oversized frames, pixel aspect and
interlacing, and lossless output keeping the source's chroma."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import av
import torch

from vidpipe.assets import opencv_clip
from vidpipe.frames import Colour, FrameBatch
from vidpipe.media.probe import probe
from vidpipe.media.writer import VideoWriter
from vidpipe.stages.base import StreamSpec


def _tiny_batch(n: int, w: int = 64, h: int = 48, tb: F = F(1, 24)) -> FrameBatch:
    data = torch.randint(0, 255, (n, 3, h, w), dtype=torch.uint8)
    return FrameBatch(data=data, pts=list(range(n)), time_base=tb)


# -- issue 22 (13): WebM from Megamind.avi, whose first AC3 packet is damaged --


def test_webm_from_ac3_drops_undecodable_audio_and_counts_it(tmp_path: Path) -> None:
    """The audio is re-encoded to Opus for WebM; a packet the AC3 decoder refuses is dropped with a warning and
    counted, and the rest of the track is still written."""
    info = probe(opencv_clip("Megamind.avi"))
    spec = StreamSpec(width=64, height=48, time_base=F(1, 24), nominal_rate=F(24))
    out = tmp_path / "mega.webm"
    writer = VideoWriter(out, spec, Colour(), info)
    writer.write(_tiny_batch(4))
    stats = writer.close()
    assert stats.audio_dropped_packets >= 1
    assert any("AC3" in w.upper() and "dropped" in w for w in stats.warnings)
    with av.open(str(out)) as c:
        (audio,) = c.streams.audio
        assert audio.codec_context.name == "opus"
        seconds = sum(p.duration or 0 for p in c.demux(audio)) * audio.time_base
    assert seconds > info.duration * F(9, 10)  # all but the damaged packets' audio


def test_cli_webm_from_megamind_finishes_and_counts_dropped_audio(cli, tmp_path: Path) -> None:
    out = tmp_path / "mega.webm"
    r = cli("run", str(opencv_clip("Megamind.avi")), "-o", str(out), "--resize", "96x-1", "--progress", "none")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads(Path(f"{out}.json").read_text())
    assert manifest["streams"]["audio_dropped_packets"] >= 1
    assert any("did not decode" in w for w in manifest["warnings"])
