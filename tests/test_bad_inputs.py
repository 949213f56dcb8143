"""Each bad input gives one clear `error:` line, its documented exit code, no traceback and no hang."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest

from vidpipe.assets import opencv_clip
from vidpipe.errors import (
    CorruptInputError,
    EmptyInputError,
    InputNotFoundError,
    NotMediaError,
    NoVideoStreamError,
    TruncatedInputError,
    UnsupportedFormatError,
)


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=48000)
        with av.open("sine=duration=0.5", format="lavfi") as src:
            for fr in src.decode(audio=0):
                fr.pts = None
                out.mux(a.encode(fr))
        out.mux(a.encode())
    return path


def _bayer(path: Path) -> Path:
    with av.open(str(path), "w", format="nut") as out:
        vs = out.add_stream("rawvideo", rate=25)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "bayer_rggb8"
        for i in range(3):
            fr = av.VideoFrame(64, 48, "bayer_rggb8")
            fr.planes[0].update(np.full(fr.planes[0].buffer_size, i * 40, np.uint8).tobytes())
            fr.pts = i
            out.mux(vs.encode(fr))
        out.mux(vs.encode())
    return path


def _damaged(src: Path, path: Path) -> Path:
    data = bytearray(src.read_bytes())
    rnd = random.Random(1)
    for off in range(len(data) // 3, len(data) // 3 + 4000, 97):
        data[off : off + 20] = bytes(rnd.getrandbits(8) for _ in range(20))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def bad(tmp_path: Path, make) -> dict[str, Path]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    whole = make("whole.mp4", frames=50).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])  # moov is written last: cut at 50% it is missing
    return {
        "missing": tmp_path / "nope.mp4",
        "empty": empty,
        "text": text,
        "truncated": cut,
        "no-video": _audio_only(tmp_path / "audio.m4a"),
        "bayer": _bayer(tmp_path / "bayer.nut"),
        "corrupt": _damaged(
            make("gop10.mkv", frames=100, source="mandelbrot", options={"g": "10"}), tmp_path / "corrupt.mkv"
        ),
    }


CASES = [
    ("missing", InputNotFoundError, "no such file"),
    ("empty", EmptyInputError, "file is empty"),
    ("text", NotMediaError, "not a video file"),
    ("truncated", TruncatedInputError, "cut short"),
    ("no-video", NoVideoStreamError, "no video stream"),
    ("bayer", UnsupportedFormatError, "pixel format 'bayer_rggb8' is not supported"),
    ("corrupt", CorruptInputError, "damaged frame"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("case", "error", "text"), CASES)
def test_bad_input_one_line_and_exit_code(bad, cli, tmp_path, case, error, text):
    out = tmp_path / "out.mp4"
    proc = cli("run", str(bad[case]), "-o", str(out), "--progress", "none", timeout=60)
    assert proc.returncode == error.exit_code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and text in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.vidpipe-partial*"))


@pytest.mark.timeout(120)
def test_corrupt_skip_counts_in_manifest(bad, cli, tmp_path):
    out = tmp_path / "skip.mkv"
    proc = cli("run", str(bad["corrupt"]), "-o", str(out), "--on-corrupt", "skip", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    import json

    m = json.loads((tmp_path / "skip.mkv.json").read_text())
    assert m["corrupt_skipped"] > 0 and m["frames_in"] + m["corrupt_skipped"] == 100
    assert m["frames_out"] == m["frames_in"]


def test_frames_lost_after_damage_are_counted(make, monkeypatch):
    """After damage a threaded decoder may return nothing for the frames around it, without an error (how many
    depends on thread timing: 1 to 10 in `test_corrupt_skip_counts_in_manifest`'s file). Every packet must still
    be accounted for: frames read + skipped == 100. Here a decoder fails one packet, then its next 7 calls'
    frames are thrown away (frames the caller never sees, as after real damage)."""
    import av

    from vidpipe.media.probe import probe
    from vidpipe.media.reader import ReaderOptions, VideoReader

    real = VideoReader._open_decoder

    def open_decoder(self, vs):  # type: ignore[no-untyped-def]
        decode = real(self, vs)
        state = {"packets": 0, "swallow": 0}

        def lossy(packet):  # type: ignore[no-untyped-def]
            frames = decode(packet)
            if packet.size:
                state["packets"] += 1
            if state["packets"] == 30 and state["swallow"] == 0:
                state["swallow"] = 7
                raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")
            if state["swallow"] > 0 and packet.size:
                state["swallow"] -= 1
                return []
            return frames

        return lossy

    monkeypatch.setattr(VideoReader, "_open_decoder", open_decoder)
    src = make("gop10.mkv", frames=100, source="mandelbrot", options={"g": "10"})
    reader = VideoReader(probe(src), ReaderOptions(on_corrupt="skip"))
    frames = sum(len(b.pts) for b in reader)
    assert reader.stats.packets == 100 and frames < 99
    assert frames + reader.stats.corrupt_skipped == 100
    assert any("lost after damage" in w for w in reader.stats.warnings)


def _resyncing_mkv(src: Path, path: Path) -> Path:
    """`src` (an MKV from `make`) with one SimpleBlock's size field overwritten by a huge value: the demuxer logs an
    error, skips to the next element it recognises and loses a few packets, raising nothing, and the decoder sees
    no damaged frame either (the frames lost were not referenced). The first block that does this is used."""
    data = src.read_bytes()
    # SimpleBlock: ID 0xA3, a 2-byte EBML size (0b01xxxxxx …), track number 0x81
    blocks = [o for o in range(len(data) - 4) if data[o] == 0xA3 and data[o + 1] >> 6 == 1 and data[o + 3] == 0x81]
    for o in blocks[len(blocks) // 3 :][:20]:
        damaged = bytearray(data)
        damaged[o + 1 : o + 3] = b"\x7f\xf0"
        path.write_bytes(bytes(damaged))
        if _silently_short(path):
            return path
    raise AssertionError("no block whose damage makes the demuxer skip packets silently")


def _silently_short(path: Path) -> bool:
    """Fewer than 100 packets, yet every frame decodes without an error or a damage flag."""
    packets, damaged = 0, False
    with av.open(str(path)) as c:
        try:
            for p in c.demux(c.streams.video[0]):
                packets += bool(p.size)
                damaged |= any(f.is_corrupt for f in p.decode())
        except av.error.InvalidDataError:
            damaged = True
    return packets < 100 and not damaged


def test_frames_a_resyncing_demuxer_skips_are_never_lost_silently(make, cli, tmp_path):
    """A damaged Matroska block: the demuxer skips packets with only an error in FFmpeg's log. The default run
    fails with one line; --on-corrupt skip counts every lost frame (frames_in + corrupt_skipped == 100)."""
    src = _resyncing_mkv(make("gop10.mkv", frames=100, source="mandelbrot", options={"g": "10"}), tmp_path / "r.mkv")
    proc = cli("run", str(src), "-o", str(tmp_path / "fail.mkv"), "--progress", "none")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == CorruptInputError.exit_code and "damaged frame" in lines[-1], proc.stderr
    assert not (tmp_path / "fail.mkv").exists()
    proc = cli("run", str(src), "-o", str(tmp_path / "skip.mkv"), "--on-corrupt", "skip", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    import json

    m = json.loads((tmp_path / "skip.mkv.json").read_text())
    assert (
        m["corrupt_skipped"] > 0
        and m["frames_in"] + m["corrupt_skipped"] == 100 == m["frames_out"] + m["corrupt_skipped"]
    )
    assert any("matroska" in w for w in m["warnings"])


@pytest.mark.timeout(180)
def test_megamind_bugy_behaves_as_documented(cli, tmp_path):
    """Megamind_bugy.avi (opencv-doc) is a re-encode with packed B-frames and a wrong rate in its header; FFmpeg
    decodes all 270 frames with warnings only. Documented behaviour: it is processed, 270 frames in and out at
    the header's 30 fps, and FFmpeg's warnings are collected once in the manifest."""
    src = opencv_clip("Megamind_bugy.avi")
    out = tmp_path / "bugy.mkv"
    proc = cli("run", str(src), "-o", str(out), "--resize", "360x-1", "--progress", "none")
    assert proc.returncode == 0, proc.stderr
    import json

    m = json.loads((tmp_path / "bugy.mkv.json").read_text())
    assert m["frames_in"] == m["frames_out"] == 270 and m["corrupt_skipped"] == 0
    assert any("packed xvid" in w for w in m["warnings"])  # FFmpeg warning, reported once


def test_cuda_device_on_a_cpu_machine_is_an_error(make, cli, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = cli("run", str(make("tiny.mp4", frames=2)), "-o", str(tmp_path / "o.mp4"), "--device", "cuda")
    assert proc.returncode == 5 and "no CUDA device is available" in proc.stderr


def test_invalid_option_values_list_the_valid_ones(make, cli, tmp_path):
    proc = cli("run", str(make("tiny.mp4", frames=2)), "-o", str(tmp_path / "o.mp4"), "--encoder", "divx")
    assert proc.returncode == 2 and "valid: auto, h264" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [("run", "--bogus", "x.mp4"), ("nosuchcommand",), ("cuts", "x.mp4"), ("run", "a.mp4", "-o", "b.mp4", "--crf")],
    ids=["unknown-option", "unknown-command", "missing-option", "option-without-value"],
)
def test_bad_command_lines_give_one_error_line(cli, argv):
    """Mistakes typer/click catch themselves (not our validation) still end in one `error:` line and exit 2."""
    proc = cli(*argv)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "--help" in lines[0] and "Traceback" not in proc.stderr
