"""Output paths of `vidpipe run` (issue 22, items 0, 1 and 13): vidpipe never deletes what it did not create, a
folder given as -o takes `<input stem>.<ext>`, a PNG sequence goes only into a new or empty folder with
`--encoder png`, two inputs never share an output name, and an output that cannot be written is one `error:` line
(exit 4) found before any frame is decoded."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from vidpipe.errors import OutputError, UsageError
from vidpipe.frames import Colour, FrameBatch
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.probe import probe
from vidpipe.media.writer import VideoWriter, WriterOptions, check_target
from vidpipe.paths import unique_names
from vidpipe.runtime import pipeline
from vidpipe.runtime.multi import output_jobs
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.stages.base import StreamSpec

TAG = r"[0-9a-f]{8}"


def _opts(encoder: str = "ffv1", *, manifest: bool = True) -> RunOptions:
    return RunOptions(
        device="cpu",
        progress="none",
        manifest=manifest,
        writer=WriterOptions(encoder=EncoderOptions(encoder=encoder)),  # type: ignore[arg-type]
    )


@pytest.fixture
def src(make) -> Path:
    return make("safety.mkv", size=(32, 24), frames=3, rate=Fraction(25), codec="ffv1")


def _plant(folder: Path, src: Path) -> dict[Path, bytes]:
    """A folder of things vidpipe did not make: the input itself, a note, a nested file, a hidden file and a
    frame named the way vidpipe names PNG frames."""
    planted = {
        folder / "a.mkv": src.read_bytes(),
        folder / "keep.txt": b"mine",
        folder / "sub" / "nested.txt": b"nested",
        folder / ".hidden": b"hidden",
        folder / "00000001.png": b"someone else's frame",
    }
    for p, data in planted.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return planted


def _survived(planted: dict[Path, bytes]) -> None:
    gone = [str(p) for p, data in planted.items() if not p.is_file() or p.read_bytes() != data]
    assert not gone, f"vidpipe deleted or changed files it did not create: {gone}"


def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]


# (extra arguments, -o ends with a slash, second input, expected exit code, files expected in the folder after)
MODES = {
    "folder": ([], False, False, 2, []),  # victim/a.mkv would be the input itself: refused
    "folder/": ([], True, False, 2, []),
    "folder --suffix mp4": (["--suffix", "mp4"], False, False, 0, ["a.mp4", "a.mp4.json"]),
    "folder/ --encoder ffv1 --suffix avi": (["--encoder", "ffv1", "--suffix", "avi"], True, False, 0, ["a.avi"]),
    "folder --encoder png": (["--encoder", "png"], False, False, 4, []),  # not empty: refused
    "folder/ --encoder png": (["--encoder", "png"], True, False, 4, []),
    "two inputs --suffix mp4": (["--suffix", "mp4"], False, True, 0, ["a.mp4", "b.mp4"]),
    "two inputs --encoder png": (["--encoder", "png"], True, True, 0, ["a/00000003.png", "b/00000003.png"]),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_output_naming_an_existing_folder_deletes_nothing(mode: str, src: Path, tmp_path: Path, cli) -> None:
    extra, slash, two, code, made = MODES[mode]
    victim = tmp_path / "victim"
    planted = _plant(victim, src)
    other = tmp_path / "other" / "b.mkv"
    other.parent.mkdir()
    other.write_bytes(src.read_bytes())
    inputs = [str(victim / "a.mkv"), *([str(other)] if two else [])]
    out = str(victim) + ("/" if slash else "")
    res = cli("run", *inputs, "-o", out, "--device", "cpu", "--progress", "none", *extra)
    _survived(planted)
    assert res.returncode == code, res.stderr
    if code:
        _one_error_line(res)
    for name in made:
        assert (victim / name).is_file(), (name, sorted(p.name for p in victim.iterdir()))


def test_png_sequence_only_into_a_new_or_empty_folder(src: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    assert run(src, new, [], _opts("png")).frames_out == 3 and len(list(new.glob("*.png"))) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(src, empty, [], _opts("png")).frames_out == 3 and len(list(empty.glob("*.png"))) == 3
    # its own earlier frames (its manifest beside them) are replaced; anything else is refused, untouched
    assert run(src, new, [], _opts("png")).frames_out == 3 and len(list(new.glob("*.png"))) == 3
    (new / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        run(src, new, [], _opts("png"))
    assert (new / "notes.txt").read_text() == "mine" and len(list(new.glob("*.png"))) == 3
    # frames named like ours but not made by vidpipe (no manifest): refused
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "00000001.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="not empty"):
        run(src, theirs, [], _opts("png"))
    assert (theirs / "00000001.png").read_bytes() == b"x"
    # a file where the folder would go
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OutputError):
        run(src, tmp_path / "file", [], _opts("png"))
    assert (tmp_path / "file").read_bytes() == b"x"


def test_a_folder_is_never_an_output_file(src: Path, tmp_path: Path) -> None:
    folder = tmp_path / "x.mkv"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(OutputError, match="folder"):
        run(src, folder, [], _opts())
    assert (folder / "inside").is_dir()


def test_output_without_extension_needs_encoder_png(src: Path, tmp_path: Path, cli) -> None:
    res = cli("run", str(src), "-o", str(tmp_path / "out"), "--device", "cpu", "--progress", "none")
    assert res.returncode == 2 and "--encoder png" in _one_error_line(res)
    assert not (tmp_path / "out").exists()


def test_unknown_extension_is_one_error_line(src: Path, tmp_path: Path, cli) -> None:
    res = cli("run", str(src), "-o", str(tmp_path / "out.xyz"), "--device", "cpu", "--progress", "none")
    assert res.returncode == 2 and ".xyz" in _one_error_line(res), res.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["/proc/vidpipe-out.mkv", "/proc/no-such-dir/out.mkv", "/sys/vidpipe-out.mkv"])
def test_unwritable_output_fails_before_decoding(src: Path, target: str, cli, monkeypatch) -> None:
    res = cli("run", str(src), "-o", target, "--device", "cpu", "--progress", "none")
    assert res.returncode == 4 and target.rsplit("/", 1)[0] in _one_error_line(res)
    assert "decode:" not in res.stderr  # the decoder never opened

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoding started before the output was found unwritable")

    monkeypatch.setattr(pipeline, "VideoReader", no_decoding)
    with pytest.raises(OutputError):
        run(src, target, [], _opts())


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A read-only tmpfs (root writes through a 0o555 folder, not through a read-only mount)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {res.stderr.decode().strip() or res.returncode}")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_read_only_filesystem_is_one_error_line(src: Path, read_only: Path, cli) -> None:
    for target in (read_only / "out.mkv", read_only / "sub" / "out.mkv"):
        res = cli("run", str(src), "-o", str(target), "--device", "cpu", "--progress", "none")
        assert res.returncode == 4 and "Read-only" in _one_error_line(res), res.stderr


def test_writer_on_a_read_only_filesystem_raises_output_error_and_aborts_cleanly(read_only: Path) -> None:
    """Without the up-front check (a library caller), opening fails as OutputError and the clean-up of the
    partial file, which cannot be removed there either, does not raise over it."""
    spec = StreamSpec(width=32, height=24, time_base=Fraction(1, 25), nominal_rate=Fraction(25))
    w = VideoWriter(read_only / "out.mkv", spec, Colour(), None, WriterOptions())
    batch = FrameBatch(data=torch.zeros(1, 3, 24, 32, dtype=torch.uint8), pts=[0], time_base=Fraction(1, 25))
    with pytest.raises(OutputError, match="Read-only"):
        w.write(batch)  # the muxer opens the file with its first packet: here, or when flushing
        w.close()
    w.abort()
    assert list(read_only.iterdir()) == []


def test_check_target_refuses_before_writing_anything(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="extension"):
        check_target(tmp_path / "noext", WriterOptions())
    with pytest.raises(UsageError, match=r"\.xyz"):
        check_target(tmp_path / "a.xyz", WriterOptions())
    check_target(tmp_path / "deep" / "a.mkv", WriterOptions())
    assert [p.name for p in tmp_path.rglob("*")] == ["deep"]  # the folder it will write into; no probe file left


# -- two inputs, one name (item 1) ----------------------------------------------------------------------------


def test_two_inputs_with_one_name_get_distinct_outputs(make, tmp_path: Path, cli) -> None:
    d1, d2 = tmp_path / "d1" / "clip.mkv", tmp_path / "d2" / "clip.mkv"
    for p, size in ((d1, (32, 24)), (d2, (48, 32))):
        p.parent.mkdir()
        p.write_bytes(make(f"same-name-{size[0]}.mkv", size=size, frames=2, rate=Fraction(25)).read_bytes())
    args = ["run", str(d1), str(d2), "-o", str(tmp_path / "out") + "/", "--device", "cpu", "--encoder", "ffv1"]
    first = cli(*args, "--progress", "none")
    assert first.returncode == 0, first.stderr
    outs = sorted((tmp_path / "out").glob("*.mkv"))
    assert len(outs) == 2 and all(re.fullmatch(f"clip-{TAG}.mkv", p.name) for p in outs), outs
    # each output is its own input's (the sizes tell them apart)
    jobs = output_jobs([d1, d2], tmp_path / "out")
    assert {j.output for j in jobs} == set(outs)
    for j in jobs:
        assert probe(j.output).video.display_size == probe(j.input).video.display_size
    # the names are deterministic: a second run finds both finished
    again = cli(*args, "--progress", "none")
    assert again.returncode == 0 and "0 made, 2 skipped" in again.stderr, again.stderr


def test_output_names_are_deterministic_and_independent_of_how_inputs_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tmp_path / "d1" / "clip.mp4", tmp_path / "d2" / "clip.mp4"
    absolute = [j.output.name for j in output_jobs([a, b], tmp_path / "out", "mkv")]
    monkeypatch.chdir(tmp_path)
    relative = [j.output.name for j in output_jobs([Path("d1/clip.mp4"), Path("d2/clip.mp4")], Path("out"), "mkv")]
    assert absolute == relative and absolute[0] != absolute[1]
    # names that differ in case alone collide on case-insensitive file systems: told apart too
    upper = [j.output.name for j in output_jobs([a, tmp_path / "d3" / "CLIP.mp4"], tmp_path / "out", "mkv")]
    assert upper[0].casefold() != upper[1].casefold()
    # an input whose name is free keeps its plain name
    assert output_jobs([a, tmp_path / "other.mp4"], tmp_path / "out", "mkv")[0].output.name == "clip.mkv"
    # an output that is an input is refused before any work
    with pytest.raises(UsageError, match="input"):
        output_jobs([tmp_path / "out" / "x.mkv"], tmp_path / "out")


def test_unique_names_with_a_mapping_that_merges_names() -> None:
    """`a b.mp4` and `a_b.mp4` map to one object key once spaces become `_` (jobs/keys.py): the caller names them
    with its own rule and unique_names tells them apart the same way."""
    sources = ["in/a b.mp4", "in/a_b.mp4", "in/c.mp4"]
    names = [s.rsplit("/", 1)[-1].replace(" ", "_") for s in sources]
    got = unique_names(names, sources)
    assert got[2] == "c.mp4" and got[0] != got[1]
    assert all(re.fullmatch(f"a_b-{TAG}.mp4", n) for n in got[:2])
    assert unique_names(names, sources) == got
    assert unique_names(["x.mkv"], ["x.mp4"]) == ["x.mkv"]
    assert os.sep not in "".join(got)
