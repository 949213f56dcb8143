"""`vidpipe run … --report`: the report lands beside the output, and a run with an OOM back-off and a dropped
stream shows both, with the time spent in each stage and the memory sampled during the run."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from vidpipe.frames import FrameBatch
from vidpipe.report.run import RunRecorder, report_path, write_run_report
from vidpipe.runtime.pipeline import RunOptions, run
from vidpipe.schedule.chain import ScheduleOptions
from vidpipe.stages.base import Stage

CPU = torch.device("cpu")


class OomOnce(Stage):
    """Inverts the picture; its first call runs out of memory (the scheduler backs off and re-runs it)."""

    name = "oomonce"

    def __init__(self) -> None:
        self.calls = 0

    def process(self, batch: FrameBatch) -> FrameBatch:
        self.calls += 1
        if self.calls == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.with_data(255 - batch.data)


@pytest.fixture(scope="module")
def with_attachment(make) -> Path:
    """An MKV with a font-like attachment: an MP4 output cannot hold it (the writer drops it, with a warning)."""
    return make(
        "report-attach.mkv", size=(96, 64), frames=8, rate=Fraction(8), attachments=[("n.txt", "text/plain", b"hi")]
    )


def test_report_shows_oom_back_off_dropped_stream_and_timings(with_attachment, tmp_path):
    out = tmp_path / "out.mp4"
    stage = OomOnce()
    sleeps: list[float] = []
    opts = RunOptions(device="cpu", progress="none", schedule=ScheduleOptions(batch_size=4, sleep=sleeps.append))
    with RunRecorder([stage], CPU) as rec:
        result = run(with_attachment, out, [stage], opts)
    assert type(stage) is OomOnce  # the recorder's timing subclass is gone after the run
    page_path = write_run_report(with_attachment, result, rec, device="cpu")
    assert page_path == report_path(out) == tmp_path / "out.mp4.report.html"
    page = page_path.read_text()
    # the OOM back-off: the manifest's event, in the page's OOM table, and the stage's back-off count
    events = result.manifest["schedule"]["stages"][0]["oom_events"]
    assert len(events) == 1 and sleeps == [2.0]
    oom = page[page.index('<div id="oom">') :]
    assert re.search(r"<td>oomonce</td><td class=\"num\">1</td><td class=\"num\">4</td><td>0\.\.3</td>", oom)
    # the dropped attachment, in the streams table and the warnings
    streams = page[page.index('<div id="streams">') :]
    assert "<td>dropped</td><td>#1 attachment n.txt (container mp4 holds no attachments)</td>" in streams
    assert "stream not written: #1 attachment n.txt" in page[page.index('<ul id="warnings">') :]
    # time per stage: every call the runtime made (the failed one included: batch 4, then 2 × 4 at the smaller
    # size, then the end-of-stream flush), and memory sampled (a CPU run: no GPU memory)
    ((name, t),) = rec.timings()
    assert stage.calls == 5 and name == "oomonce" and t.calls == 6 and t.wall_s > 0 and t.device_s() is None
    assert '<td>oomonce</td><td class="num">6</td>' in page
    assert len(rec.samples) >= 2 and all(s.gpu_used_mb is None for s in rec.samples)
    assert 'id="gpu-memory">GPU memory over time: n/a (a CPU run)' in page
    # and the compare page of input vs output: the inverted output is far from the input
    assert 'id="inputs"' in page and page.index('id="inputs"') < page.index('id="run"')
    assert "8 of 8" in page


def test_registry_models_get_sha256_and_licence(tmp_path):
    from vidpipe.models.loading import pinned_sha256, resolve_weights
    from vidpipe.models.spec import get_spec
    from vidpipe.models.zoo_realesrgan import ensure_offline_weights
    from vidpipe.paths import sha256_file
    from vidpipe.report.run import model_facts

    name = "realesr-animevideov3-x2"
    ensure_offline_weights(name)
    path = resolve_weights(get_spec(name))
    sha, licence = model_facts(name)
    assert sha == (pinned_sha256(path) or sha256_file(path)) and re.fullmatch(r"[0-9a-f]{64}", sha)
    assert licence == get_spec(name).licence != "unknown"
    own = tmp_path / "w.safetensors"
    own.write_bytes(b"weights")
    assert model_facts(str(own)) == (sha256_file(own), "unknown (not a registry model)")


def test_cli_run_report_beside_the_output(cli, with_attachment, tmp_path):
    out = tmp_path / "o.mkv"
    res = cli("run", str(with_attachment), "-o", str(out), "--resize", "48x32", "--report", "--progress", "none")
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "o.mkv.report.html").read_text()
    assert out.is_file() and (tmp_path / "o.mkv.json").is_file()
    assert "vidpipe run: report-attach.mkv → o.mkv" in page and "<td>resize</td>" in page
    assert "8 of 8" in page  # every input frame matched with its output frame


@pytest.mark.gpu
def test_cuda_run_records_device_time_and_gpu_memory(with_attachment, tmp_path):
    """On CUDA: each stage's device time from the events around its calls, and GPU memory sampled over the run."""
    from vidpipe.stages.resize import Resize

    cuda = torch.device("cuda")
    stages = [Resize(192, 128)]
    with RunRecorder(stages, cuda) as rec:
        result = run(with_attachment, tmp_path / "g.mkv", stages, RunOptions(device="cuda", progress="none"))
    ((name, t),) = rec.timings()
    assert name == "resize" and t.calls > 0 and t.device_s() is not None and t.device_s() > 0
    assert rec.samples and all(s.gpu_used_mb is not None and s.gpu_used_mb > 0 for s in rec.samples)
    page = write_run_report(with_attachment, result, rec, device="cuda").read_text()
    assert "n/a (a CPU run)" not in page and "GPU in use (device)" in page and "n/a (CPU)" not in page


def test_many_inputs_get_a_report_each(make, with_attachment, tmp_path):
    from vidpipe.report.run import run_many_with_report
    from vidpipe.runtime.multi import plan_outputs
    from vidpipe.stages.resize import Resize

    other = make("report-other.mkv", size=(96, 64), frames=6, rate=Fraction(8))
    jobs, single = plan_outputs([str(with_attachment), str(other)], str(tmp_path / "out") + "/", suffix=".mkv")
    assert not single
    res = run_many_with_report(jobs, [Resize(48, 32)], RunOptions(device="cpu", progress="none"))
    assert [v.status for v in res.videos] == ["done", "done"]
    for job, frames in zip(jobs, (8, 6), strict=True):
        page = report_path(job.output).read_text()
        assert f"{frames} of {frames}" in page and "each video of a run over several has its own copies" in page
