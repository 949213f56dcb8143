"""`--dewatermark auto` over a file (issue 17): the whole input's marks found before the main pass, by the
detection `vidpipe watermark detect` runs, then removed as `mask:` of that detection's .json would be; the
analysis pass reads the frames the run reads (`--start/--frames`), numbered alike, and only a stage given the
source's frames is offered it."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from test_dewatermark import logo, marked, pan
from test_matte import write_rgb

from vidpipe.frames import FrameBatch
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.source_pass import SourcePass
from vidpipe.media.writer import WriterOptions
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.runtime.recipe import trimmed
from vidpipe.stages.base import Stage
from vidpipe.stages.dewatermark import Dewatermark

OPTS = RunOptions(device="cpu", progress="none", writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")))


def _read(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _report(out: Path) -> dict[str, Any]:
    return json.loads(out.with_name(out.name + ".json").read_text())["stage_reports"]["dewatermark"]


def test_auto_over_a_file_removes_exactly_what_mask_of_the_detect_commands_json_does(tmp_path: Path, cli) -> None:
    clip = write_rgb(tmp_path / "m.mkv", (marked(pan(32), logo(0.6)) * 255).round().to(torch.uint8))
    r = cli("watermark", "detect", str(clip), "-o", str(tmp_path / "d.json"), "--device", "cpu")
    assert r.returncode == 0 and "wrote 1 mark(s)" in r.stdout, r.stderr
    outs = {}
    for spec in ("auto", f"mask:{tmp_path / 'd.json'}"):
        outs[spec] = run(clip, tmp_path / f"{spec[:4]}.mkv", [Dewatermark(spec)], OPTS).output
    auto, mask = (_read(p) for p in outs.values())
    assert np.array_equal(auto, mask) and not np.array_equal(auto, _read(clip))
    rep = _report(outs["auto"])
    assert rep["auto_detection"]["over"] == "input" and rep["auto_detection"]["frames"] == 32
    assert rep["auto_detection"]["seconds"] > 0 and rep["seconds"]["detect"] >= rep["auto_detection"]["seconds"]
    detected = json.loads((tmp_path / "d.json").read_text())["marks"]
    assert [(m["first"], m["last"]) for m in rep["marks"]] == [(m["first"], m["last"]) for m in detected]
    assert _report(outs[f"mask:{tmp_path / 'd.json'}"])["auto_detection"] is None


class _Spy(Stage):
    """Passes frames through; records the (index, pts) of the frames the pass and the run give it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.analysed: list[tuple[int, int]] | None = None
        self.seen: list[tuple[int, int]] = []

    def analyse_source(self, source: SourcePass) -> None:
        self.analysed = [(i, p) for b in source.batches(5, after=3) for i, p in zip(b.index, b.pts, strict=True)]

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.seen += zip(batch.index, batch.pts, strict=True)
        return batch


def test_the_pass_reads_the_runs_frames_numbered_alike_up_to_the_last_written_and_its_look_ahead(
    tmp_path: Path,
) -> None:
    clip = write_rgb(tmp_path / "c.mkv", (pan(30) * 255).round().to(torch.uint8))
    whole = _Spy("spy")
    run(clip, tmp_path / "whole.mkv", [whole], OPTS)
    assert whole.analysed == whole.seen and len(whole.seen) == 30
    part, after = _Spy("spy"), _Spy("later")
    opts = trimmed(OPTS, start="0.4", duration=None, frames=6)  # frames 10..15 at 25 fps
    run(clip, tmp_path / "part.mkv", [part, after], opts)
    assert part.analysed is not None and part.seen == part.analysed[: len(part.seen)]  # numbered alike
    # from the window's first frame (no reach: no pre-roll): its 6 frames and the 3 of look-ahead asked for
    assert [p for _, p in part.analysed] == [p for _, p in whole.seen[10:19]]
    assert [i for i, _ in part.analysed] == list(range(9))
    assert after.analysed is None  # after a stage that may change frames: not offered the pass


def test_auto_on_frames_without_a_file_still_detects_within_each_window() -> None:
    from vidpipe.frames import StreamSpec

    st = Dewatermark("auto", window=24)
    st.setup(torch.device("cpu"), StreamSpec(width=160, height=120, time_base=Fraction(1, 25)))
    u8 = (marked(pan(24), logo(1.0)) * 255).round().to(torch.uint8)
    out = st.process_window(FrameBatch(data=u8, pts=list(range(24)), time_base=Fraction(1, 25)))
    assert not torch.equal(out.data, u8)
    assert st.report()["auto_detection"] == {"over": "each window"} and st.report()["auto_found"] == 1


def test_the_detect_commands_window_is_the_whole_input_detections() -> None:
    from vidpipe.cli.watermark_cmd import DETECT_WINDOW
    from vidpipe.stages.watermark import whole

    assert DETECT_WINDOW == whole.DETECT_WINDOW  # written out in the CLI so that `vidpipe --help` loads no torch


def test_the_pass_in_planes_converted_on_the_device_finds_the_mark_the_rgb_pass_does(tmp_path: Path) -> None:
    """On a GPU the analysis pass takes the decoder's 4:2:0 planes and converts them where it detects (swscale's
    RGB on one host thread bounded the 1080p pass); each pooled batch is handed back (a kept one stalls the
    reader). Run here on the CPU: the same conversion code, the same mark within rounding of the conversion."""
    from vidpipe.media.probe import probe
    from vidpipe.media.reader import ReaderOptions
    from vidpipe.media.yuv import PlanarBatch
    from vidpipe.stages.watermark.whole import detect_clip

    frames = (marked(pan(36), logo(0.6)) * 255).round().to(torch.uint8)
    clip = write_rgb(tmp_path / "m.mkv", frames, pix_fmt="yuv420p")
    source = SourcePass(probe(clip), ReaderOptions(queue_size=1))  # a pool of 4 buffers for 9 batches: handed back
    kinds: list[type] = []

    def seen(planar: bool):  # type: ignore[no-untyped-def]
        for b in source.batches(4, planar=planar):
            kinds.append(type(b))
            yield b

    rgb = detect_clip(seen(False), torch.device("cpu"), window=36)
    planes = detect_clip(seen(True), torch.device("cpu"), window=36)
    assert kinds.count(PlanarBatch) == 9 and kinds.count(FrameBatch) == 9
    assert len(rgb.marks) == len(planes.marks) == 1 and planes.frames == 36
    a, b = rgb.marks[0].alpha > 0.1, planes.marks[0].alpha > 0.1
    assert (a & b).sum() / (a | b).sum() >= 0.9
    assert (rgb.marks[0].first, rgb.marks[0].last) == (planes.marks[0].first, planes.marks[0].last)
