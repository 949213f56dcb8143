"""One request of a queue worker run as a job: a video (an ``s3://`` URL or an ``http(s)://`` URL) with the options
of ``vidpipe run``, processed on a device of this worker, uploaded, verified and answered with the result (the
presigned URL, sizes and checksums, timings).

A request::

    {"video": "s3://bucket/raw/clip.mp4",                     # or https://…; required
     "options": {"upscale": "realesr-animevideov3-x2", "encoder": "h264", "crf": 18},   # as `vidpipe run`
     "output": {"bucket": "…", "prefix": "results", "object_key": "…", "container": "mp4", "presign_seconds": 3600},
     "mode": "upscaled",                                      # optional, as in a job spec
     "segment_seconds": 30}                                   # optional: where a cancel takes effect

It becomes a job spec (jobs.spec: one validator, the same errors as a YAML job) with uploads on, the object under
``<prefix>/<job id>/`` unless ``object_key`` names it; store credentials come from the worker's environment
(``B2_KEY``, ``B2_SECRET``, ``B2_ENDPOINT``, ``B2_BUCKET``), never from a request.

Models are loaded once per worker: :class:`WarmChains` keeps each stage chain, keyed by its model signature (every
stage option of the request and the device), and hands each job shallow copies, which share the loaded weights and
get their own state from ``setup`` (as `runtime.multi` shares one chain between videos). One job per device at a
time (:class:`DevicePool`): a worker with N GPUs takes N jobs at once, each on its own GPU. A cancelled job stops
at its next step (a segment done, the join, the upload) and uploads nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..errors import InputError, Interrupted, UsageError, VidpipeError
from ..jobs.keys import sanitize_component
from ..jobs.runner import JobRunner
from ..jobs.spec import build_spec

if TYPE_CHECKING:
    from ..jobs.spec import JobSpec
    from ..runtime.recipe import PipelineRecipe
    from ..stages.base import Stage

log = logging.getLogger(__name__)

#: chains kept loaded at once: a worker serving two models in turn keeps both, a third evicts the oldest
DEFAULT_KEEP_CHAINS: Final = 2
#: a cancel takes effect at the next finished segment: short enough to free the GPU soon, long enough that the
#: per-segment start-up (~1 s) is noise
DEFAULT_SEGMENT_SECONDS: Final = 30
DOWNLOAD_CHUNK: Final = 1 << 20
DOWNLOAD_TIMEOUT_S: Final = 60.0
_REQUEST_KEYS: Final = ("video", "options", "output", "mode", "segment_seconds")

Progress = Callable[[dict[str, Any]], None]


# -- loaded models ------------------------------------------------------------------------------------------


class WarmChains:
    """Stage chains kept loaded between jobs, keyed by their model signature."""

    def __init__(self, keep: int = DEFAULT_KEEP_CHAINS) -> None:
        self.keep = keep
        self._chains: OrderedDict[str, list[Stage]] = OrderedDict()
        self._lock = threading.Lock()
        #: chains built (weights loaded) since the worker started
        self.built = 0

    @staticmethod
    def signature(recipe: PipelineRecipe, device: str) -> str:
        """Every stage option of the recipe (models, dtypes, tiles, …) and the device: what the loaded weights and
        the chain's shape depend on."""
        return json.dumps({"stages": recipe.stage_values, "device": device}, sort_keys=True, default=str)

    def has(self, recipe: PipelineRecipe, device: str) -> bool:
        return self.signature(recipe, device) in self._chains

    def factory(self, recipe: PipelineRecipe, device: str) -> Callable[[], list[Stage]]:
        """What JobRunner calls per input: copies of the chain kept under this signature (sharing its loaded
        weights), or a new chain the first time. Either is kept as the one the next call copies: it is set up by
        the job it is handed to, so a first job that failed before loading anything leaves no unloaded template
        behind for every later job to load again."""
        key = self.signature(recipe, device)

        def make() -> list[Stage]:
            with self._lock:
                kept = self._chains.pop(key, None)
                if kept is None:
                    chain = recipe.stages()
                    self.built += 1
                else:
                    chain = [copy.copy(stage) for stage in kept]
                self._chains[key] = chain  # most recently used last
                while len(self._chains) > self.keep:
                    evicted, _ = self._chains.popitem(last=False)
                    log.info("serve: dropped the chain least recently used (%s)", evicted[:80])
                return chain

        return make


class DevicePool:
    """One job per device at a time: each GPU torch sees, or the CPU where there is none."""

    def __init__(self, devices: list[str] | None = None) -> None:
        if devices is None:
            import torch

            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            devices = [f"cuda:{i}" for i in range(n)] or ["cpu"]
        self.devices = list(devices)
        self._free: queue.Queue[str] = queue.Queue()
        for d in self.devices:
            self._free.put(d)

    def __len__(self) -> int:
        return len(self.devices)

    @contextmanager
    def hold(self) -> Iterator[str]:
        device = self._free.get()
        try:
            yield device
        finally:
            self._free.put(device)


# -- a request ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    video: str
    options: dict[str, Any]
    output: dict[str, Any]
    mode: str | None
    segment_seconds: float


def parse_request(payload: Any) -> Request:
    if not isinstance(payload, Mapping):
        raise UsageError(f"request: must be a mapping of {', '.join(_REQUEST_KEYS)}; got {type(payload).__name__}")
    unknown = sorted(set(payload) - set(_REQUEST_KEYS))
    if unknown:
        raise UsageError(f"request: unknown key {unknown[0]!r}; valid keys: {', '.join(_REQUEST_KEYS)}")
    video = payload.get("video")
    if not isinstance(video, str) or not video.startswith(("s3://", "http://", "https://")):
        raise UsageError(f"request: video must be an s3://, http:// or https:// URL, got {video!r}")
    options, output = payload.get("options") or {}, payload.get("output") or {}
    for name, value in (("options", options), ("output", output)):
        if not isinstance(value, Mapping):
            raise UsageError(f"request: {name} must be a mapping, got {type(value).__name__}")
    if "device" in options:
        raise UsageError("request: options.device is the worker's choice (one job per GPU); leave it out")
    if "dir" in output or output.get("upload") is False:
        raise UsageError("request: output.dir and output.upload are the worker's (a result is always uploaded)")
    seconds = payload.get("segment_seconds", DEFAULT_SEGMENT_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise UsageError(f"request: segment_seconds must be a number ≥ 0, got {seconds!r}")
    mode = payload.get("mode")
    return Request(video=video, options=dict(options), output=dict(output), mode=mode, segment_seconds=seconds)


def download(url: str, dest_dir: Path, cancel: threading.Event) -> Path:
    """An http(s) URL into `dest_dir` (its last path component, sanitised), checked against Content-Length."""
    name = sanitize_component(Path(urllib.parse.urlparse(url).path).name, fallback="input")
    dest = dest_dir / name
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{name}.part")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(part, "wb") as f:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(DOWNLOAD_CHUNK):
                if cancel.is_set():
                    raise Interrupted("cancelled while downloading the input")
                f.write(chunk)
            got = f.tell()
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise InputError(f"cannot download {url}: {getattr(e, 'reason', None) or e}") from None
    if expected is not None and got != int(expected):
        part.unlink(missing_ok=True)
        raise InputError(f"download of {url} is incomplete: {got} of {expected} bytes")
    part.rename(dest)
    return dest


class _WorkerRunner(JobRunner):
    """A job that reports its steps as progress and stops at the next one once cancelled."""

    def __init__(self, spec: JobSpec, *, progress: Progress, cancel: threading.Event, **kwargs: Any) -> None:
        super().__init__(spec, **kwargs)
        self._progress, self._cancel = progress, cancel

    def reached(self, point: str) -> None:
        if self._cancel.is_set():
            raise Interrupted(f"cancelled at {point}")
        step, _, n = point.partition(":")
        self._progress({"step": step, **({"segment": int(n)} if n else {})})


# -- the worker ---------------------------------------------------------------------------------------------


class Worker:
    """Runs requests as jobs under `root` (one directory per request, removed after it), chains kept warm."""

    def __init__(
        self,
        root: Path,
        *,
        env: Mapping[str, str] | None = None,
        devices: DevicePool | None = None,
        chains: WarmChains | None = None,
    ) -> None:
        self.root = Path(root)
        self.env = dict(os.environ if env is None else env)
        self.devices = devices or DevicePool()
        self.chains = chains or WarmChains()

    def run(self, job_id: str, payload: Any, *, progress: Progress, cancel: threading.Event) -> dict[str, Any]:
        """The answer to one request: the result (status, outputs with their presigned URLs, timings) or, for a
        request that failed, ``error`` (one line) beside what the job recorded."""
        started = time.monotonic()
        work = self.root / sanitize_component(job_id, fallback="job")
        try:
            request = parse_request(payload)
            with self.devices.hold() as device:
                return self._run(request, work, device, progress=progress, cancel=cancel, started=started)
        except VidpipeError as e:
            log.error("serve: request %s failed: %s", job_id, e)
            return {"status": "failed", "error": f"{type(e).__name__}: {e}", "exit_code": e.exit_code}
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _run(
        self,
        request: Request,
        work: Path,
        device: str,
        *,
        progress: Progress,
        cancel: threading.Event,
        started: float,
    ) -> dict[str, Any]:
        timings: dict[str, float] = {}
        video = request.video
        if not video.startswith("s3://"):
            progress({"step": "download"})
            t = time.monotonic()
            video = str(download(video, work / "input", cancel))
            timings["download"] = round(time.monotonic() - t, 3)
        output = {**request.output, "dir": str(work / "out"), "upload": True}
        if "object_key" not in output:  # two requests for one video in the same second get two objects
            output["prefix"] = "/".join(p for p in (str(output.get("prefix", "")).strip("/"), work.name) if p)
        doc: dict[str, Any] = {
            "inputs": [video],
            "pipeline": {**request.options, "device": device},
            "output": output,
            "segments": {"seconds": request.segment_seconds},
            "work_dir": str(work / "state"),
            "result_json": str(work / "result.json"),
            "sentinel": str(work / "DONE"),
        }
        if request.mode:
            doc["mode"] = request.mode
        spec = build_spec(doc, base_dir=work, env=self.env)
        warm = self.chains.has(spec.pipeline, device)
        progress({"step": "start", "device": device, "models": "loaded" if warm else "loading"})
        runner = _WorkerRunner(
            spec,
            env=self.env,
            progress=progress,
            cancel=cancel,
            stages=self.chains.factory(spec.pipeline, device),
        )
        if cancel.is_set():
            raise Interrupted("cancelled before the job started")
        outcome = runner.run()
        result = json.loads(spec.result_json.read_text())
        (entry,) = result["inputs"]
        answer: dict[str, Any] = {
            "status": result["status"],
            "job_id": result["job_id"],
            "device": device,
            "models_were_loaded": warm,
            "outputs": [_public(o) for o in entry.get("outputs", [])],
            "timings": {**timings, **entry.get("timings", {}), "request": round(time.monotonic() - started, 3)},
        }
        if not outcome.ok:
            answer["error"] = "; ".join(outcome.errors) or "job failed"
            answer["exit_code"] = outcome.exit_code
        return answer


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a caller gets of an output record: where it is and how to check it (no local path)."""
    keys = ("mode", "bucket", "key", "size", "sha256", "etag", "verified", "presigned_url", "presigned_expires_at")
    return {k: record.get(k) for k in keys}


__all__ = ["DevicePool", "Request", "WarmChains", "Worker", "download", "parse_request"]
