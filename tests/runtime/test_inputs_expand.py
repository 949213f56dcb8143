"""Input expansion (vidpipe.paths.expand_inputs, used by `vidpipe run` and `vidpipe job run`): an existing path is
taken literally, glob characters and all; only a path that does not exist is a pattern (issue 22, item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidpipe import paths
from vidpipe.errors import InputNotFoundError
from vidpipe.jobs import runner
from vidpipe.runtime import multi


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """clip[1].mp4 beside clip1.mp4 and clip2.mp4, and a folder whose name is a glob class."""
    for name in ("clip[1].mp4", "clip1.mp4", "clip2.mp4", "in[1]/a.mkv", "in[1]/b.mkv", "in1/c.mkv"):
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(name.encode())
    return tmp_path


def _run(args: list[str]) -> list[str]:
    return [str(p) for p in multi.expand_inputs(args)]


def _job(args: list[str]) -> list[str]:
    return runner.expand_inputs(tuple(args))


@pytest.mark.parametrize("expand", [_run, _job], ids=["run", "job"])
def test_an_existing_path_with_glob_characters_is_taken_literally(folder: Path, expand) -> None:
    literal = str(folder / "clip[1].mp4")
    assert expand([literal]) == [literal]  # not clip1.mp4
    assert expand([str(folder / "in[1]")]) == [str(folder / "in[1]" / "a.mkv"), str(folder / "in[1]" / "b.mkv")]


@pytest.mark.parametrize("expand", [_run, _job], ids=["run", "job"])
def test_a_path_that_does_not_exist_is_a_pattern(folder: Path, expand) -> None:
    assert expand([str(folder / "clip[12].mp4")]) == [str(folder / "clip1.mp4"), str(folder / "clip2.mp4")]
    # a pattern under a folder whose name has glob characters: the folder is taken literally
    inside = [str(folder / "in[1]" / "a.mkv"), str(folder / "in[1]" / "b.mkv")]
    assert expand([str(folder / "in[1]" / "*.mkv")]) == inside
    with pytest.raises(InputNotFoundError, match="no files match"):
        expand([str(folder / "*.webm")])


def test_both_commands_share_one_expansion(folder: Path) -> None:
    """`job run` keeps its own ways (s3:// passed through, a missing file left to fail with its input) and `run`
    its own (a missing file is an error now); lists work for both, each input once."""
    lst = folder / "list.txt"
    lst.write_text("# inputs\nclip[1].mp4\n\nclip1.mp4\n")
    s3 = "s3://bucket/videos/clip[1].mp4"
    missing = str(folder / "missing.mp4")
    got = paths.expand_inputs([f"@{lst}", str(folder / "clip[1].mp4"), s3, missing], missing="keep")
    assert got == [str(folder / "clip[1].mp4"), str(folder / "clip1.mp4"), s3, missing]
    assert _job([f"@{lst}", s3, missing]) == [*got[:2], s3, missing]
    assert _run([f"@{lst}"]) == got[:2]
    with pytest.raises(InputNotFoundError, match="no such file"):
        _run([missing])


def test_a_file_named_like_a_list_is_taken_literally(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    Path("@take.mp4").write_bytes(b"x")
    assert paths.expand_inputs(["@take.mp4"]) == ["@take.mp4"]
    assert multi.single_file(["@take.mp4"])
    assert not multi.single_file([str(folder / "clip[9].mp4")])  # a pattern
    assert multi.single_file([str(folder / "clip[1].mp4")])  # a file
