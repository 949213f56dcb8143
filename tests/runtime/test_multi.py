"""Many inputs in one run (runtime/multi.py): cross-video micro-batches never mix resolution buckets and hold at most
8 videos, every video's output is the one a solo run writes, stages with context run per video, and a re-run
skips what is finished (same models, settings and input) and makes again what changed."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from framecheck import YUV420_LEVELS, assert_frames_close
from vidpipe.errors import InputNotFoundError, UsageError
from vidpipe.media.encoders import EncoderOptions
from vidpipe.media.reader import ReaderOptions
from vidpipe.media.writer import WriterOptions
from vidpipe.models.archs.srvgg import ARCH, SRVGGNetCompact
from vidpipe.models.loading import META_ARCH, save_safetensors
from vidpipe.models.zoo_rife import ensure_offline_weights
from vidpipe.runtime.multi import Job, bucket_of, expand_inputs, output_jobs, run_many, single_file
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.schedule.crossvideo import MAX_VIDEOS_PER_MICRO_BATCH
from vidpipe.stages.interpolate import Interpolate
from vidpipe.stages.upscale import Upscale
from vidpipe.testing import decode_all

#: 3 clips in the 360 bucket (two of one size, one of another) and 2 in the 540 bucket (short side 368)
MIXED = {"xa.mkv": (64, 48), "xb.mkv": (64, 48), "xc.mkv": (96, 64), "xd.mkv": (368, 368), "xe.mkv": (368, 368)}


def tiny_sr(path: Path, seed: int = 0) -> Path:
    """A small ×2 SRVGGNetCompact with seeded random weights, in the official key layout."""
    net = SRVGGNetCompact(num_feat=8, num_conv=2, scale=2)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in net.state_dict().items()}
    return save_safetensors(state, path, {META_ARCH: ARCH})


def _opts(*, batch: int | None = None, reader_batch: int = 8, skip: bool = False) -> RunOptions:
    return RunOptions(
        device="cpu",
        progress="none",
        reader=ReaderOptions(batch_size=reader_batch),
        writer=WriterOptions(encoder=EncoderOptions(encoder="ffv1")),  # type: ignore[arg-type]
        schedule=ScheduleOptions(batch_size=batch, skip_finished=skip),
    )


@pytest.fixture(scope="module")
def sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_sr(tmp_path_factory.mktemp("multi-sr") / "tiny.safetensors")


@pytest.fixture(scope="module")
def mixed(make) -> list[Path]:
    return [make(name, size=size, frames=3 + i % 3, rate=Fraction(25)) for i, (name, size) in enumerate(MIXED.items())]


def _same_as_solo(src: Path, got: Path, stages, tmp_path: Path) -> None:
    solo = tmp_path / "solo" / src.name
    run(src, solo, stages, _opts())
    t_solo, f_solo = decode_all(solo)
    t_got, f_got = decode_all(got)
    assert t_got == t_solo
    # another batch composition (frames of other videos beside them): equal up to rounding, see framecheck
    assert_frames_close(f_got, f_solo, levels=YUV420_LEVELS, what=src.name)


def test_five_mixed_clips_batch_across_videos_within_buckets(sr: Path, mixed: list[Path], tmp_path: Path) -> None:
    jobs = [Job(p, tmp_path / "out" / p.name) for p in mixed]
    res = run_many(jobs, [Upscale(sr, tile=0)], _opts())
    assert [v.status for v in res.videos] == ["done"] * 5
    bucket = {str(p): bucket_of(p) for p in mixed}
    assert sorted(set(bucket.values())) == [360, 540]
    assert res.micro_batches
    for mb in res.micro_batches:
        assert {bucket[v] for v in mb.videos} == {mb.bucket}  # never two buckets in one micro-batch
        assert len(set(mb.videos)) <= MAX_VIDEOS_PER_MICRO_BATCH
    assert any(len(set(mb.videos)) > 1 for mb in res.micro_batches)  # batching across videos did happen
    # every frame of every video went through exactly one micro-batch
    assert sum(mb.frames for mb in res.micro_batches) == sum(v.frames_in for v in res.videos)
    for p, v in zip(mixed, res.videos, strict=True):
        assert v.manifest is not None and v.manifest["schedule"]["cross_video"]["stages"] == ["upscale"]
        _same_as_solo(p, tmp_path / "out" / p.name, [Upscale(sr, tile=0)], tmp_path)


def test_no_micro_batch_holds_more_than_eight_videos(sr: Path, make, tmp_path: Path) -> None:
    clips = [make(f"cap{i}.mkv", size=(32, 24), frames=4, rate=Fraction(25)) for i in range(10)]
    # 16 frames a round over 8 open videos: 2 frames each, so a 16-frame micro-batch would take all 8 videos
    res = run_many([Job(c, tmp_path / c.name) for c in clips], [Upscale(sr, tile=0)], _opts(batch=16, reader_batch=16))
    assert [v.status for v in res.videos] == ["done"] * 10
    widest = max(len(set(mb.videos)) for mb in res.micro_batches)
    assert widest == MAX_VIDEOS_PER_MICRO_BATCH


def test_stages_with_context_run_per_video_after_the_cross_video_stage(sr: Path, make, tmp_path: Path) -> None:
    ensure_offline_weights("rife-hdv3")
    clips = [make(f"ctx{i}.mkv", size=(32, 24), frames=3 + i, rate=Fraction(24)) for i in range(2)]

    def chain():
        return [Upscale(sr, tile=0), Interpolate("rife-hdv3", multi=2)]

    res = run_many([Job(c, tmp_path / "out" / c.name) for c in clips], chain(), _opts())
    assert {mb.stage for mb in res.micro_batches} == {"upscale"}
    for c, v in zip(clips, res.videos, strict=True):
        assert v.manifest is not None
        assert [s["stage"] for s in v.manifest["schedule"]["stages"]] == ["upscale", "interpolate"]
        assert v.manifest["stage_reports"]["interpolate"]["frames_in"] == v.frames_in  # its own state, not shared
        _same_as_solo(c, tmp_path / "out" / c.name, chain(), tmp_path)


def _mtimes(paths: list[Path]) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


def test_rerun_skips_finished_outputs_and_remakes_what_changed(make, tmp_path: Path) -> None:
    m1, m2 = tiny_sr(tmp_path / "m1.safetensors", seed=1), tiny_sr(tmp_path / "m2.safetensors", seed=2)
    clips = [make(f"idem{i}.mkv", size=(32, 24), frames=3, rate=Fraction(25)) for i in range(3)]
    jobs = [Job(c, tmp_path / "out" / c.name) for c in clips]
    first = run_many(jobs, [Upscale(m1, tile=0)], _opts(skip=True))
    assert [v.status for v in first.videos] == ["done"] * 3
    made = _mtimes([j.output for j in jobs])

    again = run_many(jobs, [Upscale(m1, tile=0)], _opts(skip=True))
    assert [v.status for v in again.videos] == ["skipped"] * 3
    assert all("same signature" in v.reason for v in again.videos)
    assert _mtimes([j.output for j in jobs]) == made  # not touched

    # the middle output is remade with other weights; the next run of the whole set redoes that one only
    run_many([jobs[1]], [Upscale(m2, tile=0)], _opts(skip=True))
    mixed = run_many(jobs, [Upscale(m1, tile=0)], _opts(skip=True))
    assert [v.status for v in mixed.videos] == ["skipped", "done", "skipped"]
    assert "models" in mixed.videos[1].reason

    # an edited input is made again; so is everything when skipping is off
    os.utime(clips[2], ns=(clips[2].stat().st_atime_ns, clips[2].stat().st_mtime_ns + 10**9))
    edited = run_many(jobs, [Upscale(m1, tile=0)], _opts(skip=True))
    assert [v.status for v in edited.videos] == ["skipped", "skipped", "done"]
    assert [v.status for v in run_many(jobs, [Upscale(m1, tile=0)], _opts()).videos] == ["done"] * 3


def test_weights_changed_in_place_are_noticed(make, tmp_path: Path) -> None:
    weights = tiny_sr(tmp_path / "w.safetensors", seed=1)
    clip = make("inplace.mkv", size=(32, 24), frames=3, rate=Fraction(25))
    out = tmp_path / "o.mkv"
    assert not run(clip, out, [Upscale(weights, tile=0)], _opts(skip=True)).skipped
    assert run(clip, out, [Upscale(weights, tile=0)], _opts(skip=True)).skipped
    tiny_sr(weights, seed=3)  # same path, other weights
    assert not run(clip, out, [Upscale(weights, tile=0)], _opts(skip=True)).skipped


def test_expand_inputs_files_dirs_globs_and_lists(make, tmp_path: Path) -> None:
    a = make("ls-a.mkv", size=(32, 24), frames=2)
    folder = tmp_path / "in"
    folder.mkdir()
    b, c = folder / "b.mp4", folder / "c.mkv"
    for p in (b, c):
        p.write_bytes(a.read_bytes())
    (folder / "notes.txt").write_text("not a video")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# inputs\n{a}\n\nin/c.mkv\n")
    got = expand_inputs([str(a), str(folder), str(folder / "*.mkv"), f"@{lst}"])
    assert got == [a, b, c]  # each once, in the order first named; the .txt is not taken from the folder
    with pytest.raises(InputNotFoundError):
        expand_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(InputNotFoundError):
        expand_inputs([str(tmp_path / "*.webm")])


def test_one_plain_argument_keeps_the_single_input_meaning(tmp_path: Path) -> None:
    """`vidpipe run IN -o OUT` with one file, even a missing one (its error stays the one-input error), is not
    a many-input run; a folder, a pattern or a list is."""
    f = tmp_path / "a.mp4"
    f.write_bytes(b"x")
    assert single_file([str(f)]) and single_file([str(tmp_path / "missing.mp4")])
    assert not single_file([str(tmp_path)])
    assert not single_file([str(tmp_path / "*.mp4")]) and not single_file([f"@{f}"])
    assert not single_file([str(f), str(f)])


def test_output_names_and_collisions(tmp_path: Path) -> None:
    jobs = output_jobs([Path("x/a.mp4"), Path("y/b.mkv")], tmp_path, "mkv")
    assert [j.output for j in jobs] == [tmp_path / "a.mkv", tmp_path / "b.mkv"]
    # one name from two folders: each gets its own, deterministically (tests/test_outputs_safety.py)
    same = output_jobs([Path("x/a.mp4"), Path("y/a.mp4")], tmp_path)
    assert len({j.output for j in same}) == 2 and same == output_jobs([Path("x/a.mp4"), Path("y/a.mp4")], tmp_path)
    with pytest.raises(UsageError, match="overwrite its input"):
        output_jobs([tmp_path / "a.mp4"], tmp_path)


def test_cli_many_inputs_then_rerun_skips(sr: Path, make, tmp_path: Path, cli) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        src = make(f"cli{i}.mkv", size=(32, 24), frames=3, rate=Fraction(25))
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "broken.mkv").write_text("not a video")
    args = ["run", str(folder), "-o", str(tmp_path / "out"), "--upscale", str(sr), "--device", "cpu"]
    first = cli(*args, "--progress", "none")
    assert first.returncode == 3, first.stderr  # the broken input's error class; the others are made
    assert "failed" in first.stderr and "2 made, 0 skipped" in first.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mkv")) == ["cli0.mkv", "cli1.mkv"]
    (folder / "broken.mkv").unlink()
    second = cli(*args, "--progress", "none")
    assert second.returncode == 0 and "0 made, 2 skipped" in second.stderr, second.stderr
    forced = cli(*args, "--progress", "none", "--force")
    assert forced.returncode == 0 and "2 made, 0 skipped" in forced.stderr, forced.stderr
