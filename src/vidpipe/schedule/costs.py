"""Cost tables: what one unit of work of a stage costs on a device, measured, never guessed.

A row follows the checklist schema of seed 001 §1 and is keyed by (component, model_signature, runtime, dtype,
resolution bucket, device). Tables are JSON files:

    {
      "schema": 1,
      "rows": [
        {
          "component": "upscale",                  # Stage.name
          "unit": "frame",                         # Stage.unit: frame | frame_pair | window
          "input_bucket": {"short_side": 720, "width": 1280, "height": 720},   # bucket + size measured at
          "runtime": "inprocess",                  # inprocess | triton (kept for a future Triton runtime)
          "model_signature": "3f0c…",              # cost_signature(stage), 16 hex digits
          "dtype": "fp16",                         # fp32 | fp16 | bf16: what the stage computes in
          "gpu_memory_per_task_mb": 412.5,         # peak allocated per unit above the resident weights; null on CPU
          "cpu_rss_peak_mb": 35.1,                 # peak host RSS growth per unit; null if not measured
          "latency_ms_per_unit": 8.72,             # mean wall time per unit at the largest batch measured
          "max_batch_size_component": 8,           # the component's hard cap on a batch
          "cross_video_batching": true,            # frame-independent stages only (context 0)
          "notes": "ms/unit at batch 1/2: 9.100/8.720; peak GPU MB at batch 1/2: 412.5/790.0",
          "provenance": {"commit": "56eff5f", "date": "2026-11-22T10:00:00Z", "gpu": "NVIDIA H100 80GB HBM3",
                         "torch": "2.11.0", "cuda": "13.0", "source": "probe"}
        }
      ]
    }

Committed tables (`vidpipe bench costs`) live in `resource_costs/` next to this module; rows measured by the short
on-device probe for combinations no table has are cached, one file per row, in `vidpipe.assets.home()/"costs"`.
A row is used only on the device it was measured on (`provenance.gpu`): latency and cuDNN workspaces differ
between GPUs, and a probe is cheap.

Resolution buckets are short-side classes (the common delivery heights 360, 540, 720, 1080, 1440, 2160, 4320);
a size falls in the smallest bucket at least as large as its short side, so portrait and landscape video share
rows and a row is measured at the top of its bucket (16:9 at the bucket's short side). Memory scales with the
area, not the short side: `scaled_memory_mb` corrects a row upward for wider frames of the same bucket.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from .. import assets
from ..errors import UsageError
from ..frames import FrameBatch
from ..paths import write_json
from ..stages.base import Stage, StreamSpec, Unit

log = logging.getLogger(__name__)

Runtime = Literal["inprocess", "triton"]
DType = Literal["fp32", "fp16", "bf16"]

SCHEMA_VERSION = 1
#: short-side classes of common delivery formats (360p … 8K), see the module docstring
RESOLUTION_BUCKETS = (360, 540, 720, 1080, 1440, 2160, 4320)
#: buckets are measured at 16:9, the most common aspect
BUCKET_ASPECT = Fraction(16, 9)
#: the probe's micro-batches (issue 6: "one or two micro-batches, no sweep")
PROBE_BATCH_SIZES = (1, 2)
#: the cap on a component's batch unless it states one: GPU-NOTES measured batching gains up to 8 (IFNet) and
#: none for the conv-heavy SR nets; larger batches only add latency and host memory (queue × batch)
DEFAULT_MAX_BATCH_SIZE = 8
#: where committed tables live, and where probed rows are cached
TABLES_DIR = Path(__file__).parent / "resource_costs"
CACHE_SUBDIR = "costs"

#: builds a stage, not yet set up, computing in the dtype its row will record
StageFactory = Callable[[], Stage]
#: called on a measured stage right after its setup (e.g. to run whole frames where the tile is automatic)
Prepare = Callable[[Stage], None]

_MB = 2**20
_RUNTIMES: tuple[str, ...] = get_args(Runtime)
_DTYPES: tuple[str, ...] = get_args(DType)
_UNITS: tuple[str, ...] = get_args(Unit)


def bucket_for(width: int, height: int) -> int:
    """The resolution bucket of a frame size: the smallest bucket ≥ its short side (beyond 8K, the side itself)."""
    if width < 1 or height < 1:
        raise UsageError(f"frame size must be positive, got {width}×{height}")
    short = min(width, height)
    return next((b for b in RESOLUTION_BUCKETS if short <= b), short)


def bucket_size(bucket: int) -> tuple[int, int]:
    """(width, height) a bucket is measured at: 16:9 landscape at the bucket's short side, width even."""
    return 2 * math.ceil(bucket * BUCKET_ASPECT / 2), bucket


def signature_hash(signature: dict[str, Any]) -> str:
    """A stable short hash of a stage's `signature()` (sorted keys; 16 hex digits of sha256)."""
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cost_signature(stage: Stage) -> str:
    """The `model_signature` a cost row of a set-up stage is keyed by: the hash of its `cost_signature()` (its
    signature without what the scheduler derives from the row, such as the tile; `signature()` by default)."""
    return signature_hash(stage.cost_signature())


def device_name(device: torch.device) -> str:
    """The identity of a device as rows record it in `provenance.gpu`."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)" if device.type == "cpu" else device.type


@dataclass(frozen=True, slots=True, kw_only=True)
class InputBucket:
    short_side: int
    #: the size the row was measured at
    width: int
    height: int

    @staticmethod
    def of(width: int, height: int) -> InputBucket:
        return InputBucket(short_side=bucket_for(width, height), width=width, height=height)


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    commit: str
    date: str
    gpu: str
    torch: str
    cuda: str
    #: how the figures were made: "bench" (vidpipe bench costs) or "probe" (short on-device probe)
    source: str = "bench"

    @staticmethod
    def here(device: torch.device, source: str) -> Provenance:
        return Provenance(
            commit=_commit(),
            date=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            gpu=device_name(device),
            torch=torch.__version__,
            cuda=torch.version.cuda or "none",
            source=source,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CostKey:
    component: str
    model_signature: str
    runtime: Runtime
    dtype: DType
    bucket: int
    gpu: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CostRow:
    component: str
    unit: Unit
    input_bucket: InputBucket
    runtime: Runtime
    model_signature: str
    dtype: DType
    gpu_memory_per_task_mb: float | None
    cpu_rss_peak_mb: float | None
    latency_ms_per_unit: float
    max_batch_size_component: int
    cross_video_batching: bool
    provenance: Provenance
    notes: str = ""

    def __post_init__(self) -> None:
        _check(self.unit in _UNITS, f"unit {self.unit!r}; valid: {', '.join(_UNITS)}")
        _check(self.runtime in _RUNTIMES, f"runtime {self.runtime!r}; valid: {', '.join(_RUNTIMES)}")
        _check(self.dtype in _DTYPES, f"dtype {self.dtype!r}; valid: {', '.join(_DTYPES)}")
        for name in ("gpu_memory_per_task_mb", "cpu_rss_peak_mb"):
            v = getattr(self, name)
            _check(v is None or (math.isfinite(v) and v >= 0), f"{name} {v!r}; must be ≥ 0 or null")
        _check(
            math.isfinite(self.latency_ms_per_unit) and self.latency_ms_per_unit >= 0,
            f"latency_ms_per_unit {self.latency_ms_per_unit!r}; must be ≥ 0",
        )
        _check(self.max_batch_size_component >= 1, f"max_batch_size_component {self.max_batch_size_component}")

    @property
    def key(self) -> CostKey:
        return CostKey(
            component=self.component,
            model_signature=self.model_signature,
            runtime=self.runtime,
            dtype=self.dtype,
            bucket=self.input_bucket.short_side,
            gpu=self.provenance.gpu,
        )

    def scaled_memory_mb(self, width: int, height: int, *, host: bool = False) -> float | None:
        """Memory per unit for a `width`×`height` input of this row's bucket: the measured figure, scaled up by the
        area ratio when the input is larger than what was measured (never down: a smaller frame keeps the safer
        figure)."""
        base = self.cpu_rss_peak_mb if host else self.gpu_memory_per_task_mb
        if base is None:
            return None
        ratio = (width * height) / (self.input_bucket.width * self.input_bucket.height)
        return base * max(1.0, ratio)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(obj: dict[str, Any]) -> CostRow:
        try:
            fields = dict(obj)
            fields["input_bucket"] = InputBucket(**fields["input_bucket"])
            fields["provenance"] = Provenance(**fields["provenance"])
            return CostRow(**fields)
        except (TypeError, KeyError) as e:
            raise UsageError(f"invalid cost row {obj!r}: {e}") from e


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise UsageError(f"invalid cost row: {what}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CostTable:
    rows: tuple[CostRow, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, "rows": [r.to_json() for r in self.rows]}

    @staticmethod
    def from_json(obj: Any) -> CostTable:
        if not isinstance(obj, dict) or obj.get("schema") != SCHEMA_VERSION or not isinstance(obj.get("rows"), list):
            raise UsageError(f"not a vidpipe cost table (expected schema {SCHEMA_VERSION} with a list of rows)")
        return CostTable(rows=tuple(CostRow.from_json(r) for r in obj["rows"]))

    def save(self, path: Path) -> None:
        write_json(path, self.to_json())

    @staticmethod
    def load(path: Path) -> CostTable:
        try:
            return CostTable.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, UsageError) as e:
            raise UsageError(f"cannot read cost table {path}: {e}") from e


def load_dir(directory: Path, *, strict: bool = True) -> list[CostRow]:
    """Rows of every `*.json` table in `directory` (none if it does not exist). `strict=False` skips unreadable
    files with a warning (a cache can always be re-probed); committed tables must read."""
    rows: list[CostRow] = []
    if not directory.is_dir():
        return rows
    for path in sorted(directory.glob("*.json")):
        try:
            rows.extend(CostTable.load(path).rows)
        except UsageError as e:
            if strict:
                raise
            log.warning("ignoring cached cost row: %s", e)
    return rows


# --- measuring ---------------------------------------------------------------------------------------------------


def _commit() -> str:
    # VIDPIPE_COMMIT first: a copy of the tree on a lent GPU machine has no .git, or not the commit it runs
    if os.environ.get("VIDPIPE_COMMIT"):
        return os.environ["VIDPIPE_COMMIT"]
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _rss_bytes() -> int:
    """Current resident set of this process (Linux `/proc/self/statm`; 0 where it cannot be read)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@contextmanager
def _peak_rss(poll_s: float = 0.002) -> Iterator[list[int]]:
    """Samples RSS in a thread while the body runs; yields a one-element list that holds the peak growth in
    bytes afterwards (`ru_maxrss` cannot be reset, so it cannot measure one call late in a process)."""
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(poll_s):
            peak[0] = max(peak[0], _rss_bytes())

    t = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    t.start()
    result = [0]
    try:
        yield result
    finally:
        done.set()
        t.join()
        result[0] = max(0, max(peak[0], _rss_bytes()) - base)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Sample:
    batch: int
    ms_per_unit: float
    gpu_peak_mb: float | None
    rss_peak_mb: float


#: synthetic frames pan over one smooth random scene by 1 px per frame, wrapping after this many: content a
#: stage treats as one shot (pure noise would be a scene cut at every frame, and interpolation would skip the
#: model it is measured for)
_PAN = 16


class _Frames:
    """Synthetic input batches as the reader makes them (integer, channels-last) with continuing pts."""

    def __init__(self, spec: StreamSpec, device: torch.device, seed: int) -> None:
        self.spec, self.device = spec, device
        self.next = 0
        rate = spec.nominal_rate or spec.rate
        self.step = max(1, round(1 / (rate * spec.time_base))) if rate else 1
        channels = 4 if spec.alpha else 3
        grid = torch.rand(1, channels, 9, 16, generator=torch.Generator().manual_seed(seed))
        size = (spec.height + _PAN, spec.width + _PAN)
        self.scene = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0)

    def batch(self, n: int) -> FrameBatch:
        s = self.spec
        hi = 65535 if s.bit_depth > 8 else 255
        shifts = [(self.next + k) % _PAN for k in range(n)]
        x = torch.stack([self.scene[d : d + s.height, d : d + s.width] for d in shifts])
        x = (x * hi).round().to(torch.int32)
        x = x.to(torch.uint16) if s.bit_depth > 8 else x.to(torch.uint8)
        data = x.permute(0, 3, 1, 2).to(self.device)  # NHWC memory viewed as NCHW, as the reader hands it over
        idx = list(range(self.next, self.next + n))
        self.next += n
        return FrameBatch(data=data, pts=[i * self.step for i in idx], time_base=s.time_base, index=idx)


def _sample(stage: Stage, frames: _Frames, device: torch.device, n: int, repeats: int) -> _Sample:
    stage.probe_call(frames.batch(n))  # warm-up: lazy init, cuDNN algorithm choice, first-call allocations
    inputs = [frames.batch(n) for _ in range(repeats)]
    # The input batch is made before the baseline (so `repeats` of them are not all charged) but is resident while
    # a batch runs: it is added back once, on the device it lives on.
    input_mb = inputs[0].data.element_size() * inputs[0].data.numel() / _MB
    _synchronize(device)
    if device.type == "cuda":
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with _peak_rss() as rss:
        t0 = time.perf_counter()
        for x in inputs:
            out = stage.probe_call(x)
            del out
        _synchronize(device)
        elapsed = time.perf_counter() - t0
    cuda = device.type == "cuda"
    gpu = (torch.cuda.max_memory_allocated(device) - base) / _MB + input_mb if cuda else None
    host = rss[0] / _MB + (0.0 if cuda else input_mb)
    return _Sample(batch=n, ms_per_unit=1000 * elapsed / (n * repeats), gpu_peak_mb=gpu, rss_peak_mb=host)


def measure(
    stage_factory: StageFactory,
    spec: StreamSpec,
    device: torch.device,
    dtype: DType,
    batch_sizes: Sequence[int] = PROBE_BATCH_SIZES,
    *,
    repeats: int = 1,
    max_batch: int = DEFAULT_MAX_BATCH_SIZE,
    runtime: Runtime = "inprocess",
    source: str = "bench",
    seed: int = 0,
    prepare: Prepare | None = None,
) -> CostRow:
    """One cost row for the stage `stage_factory()` builds (computing in `dtype`) on input described by `spec`.

    For each batch size: one warm-up call, then `repeats` timed calls on fresh synthetic frames. A unit is an
    input frame (in steady state a frame-pair stage makes one pair per input frame). Memory per unit is the
    largest peak-per-unit over the batch sizes (peak above the resident weights, input frames included, ÷ units),
    so the fixed part of a call (workspaces) is charged to every unit: conservative, as a budget must be. Latency
    is taken at the largest batch, what the scheduler will run at."""
    sizes = sorted(set(batch_sizes))
    if not sizes or sizes[0] < 1 or repeats < 1:
        raise UsageError(f"measure needs batch sizes ≥ 1 and repeats ≥ 1, got {batch_sizes}, {repeats}")
    if dtype not in _DTYPES:
        raise UsageError(f"invalid dtype {dtype!r}; valid: {', '.join(_DTYPES)}")
    stage = stage_factory()
    stage.setup(device, spec)
    if prepare is not None:
        prepare(stage)
    frames = _Frames(spec, device, seed)
    try:
        with torch.inference_mode():
            samples = [_sample(stage, frames, device, n, repeats) for n in sizes]
            stage.flush()
        component, unit, context = stage.name, stage.unit, stage.context
        signature = cost_signature(stage)
    finally:
        del stage  # the probe's copy of the weights goes before the real run starts
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.empty_cache()
    gpu = [s.gpu_peak_mb / s.batch for s in samples if s.gpu_peak_mb is not None]
    batches = "/".join(str(s.batch) for s in samples)
    notes = f"ms/unit at batch {batches}: " + "/".join(f"{s.ms_per_unit:.3f}" for s in samples)
    if gpu:
        notes += f"; peak GPU MB at batch {batches}: " + "/".join(f"{s.gpu_peak_mb:.1f}" for s in samples)
    return CostRow(
        component=component,
        unit=unit,
        input_bucket=InputBucket.of(spec.width, spec.height),
        runtime=runtime,
        model_signature=signature,
        dtype=dtype,
        gpu_memory_per_task_mb=round(max(gpu), 3) if gpu else None,
        cpu_rss_peak_mb=round(max(s.rss_peak_mb / s.batch for s in samples), 3),
        latency_ms_per_unit=round(samples[-1].ms_per_unit, 4),
        max_batch_size_component=max_batch,
        cross_video_batching=context == 0,
        provenance=Provenance.here(device, source),
        notes=notes,
    )


# --- lookup ------------------------------------------------------------------------------------------------------


def key_for(stage: Stage, spec: StreamSpec, device: torch.device, dtype: DType, runtime: Runtime) -> CostKey:
    """The key of a stage that is set up (its signature may depend on the input it was set up for)."""
    return CostKey(
        component=stage.name,
        model_signature=cost_signature(stage),
        runtime=runtime,
        dtype=dtype,
        bucket=bucket_for(spec.width, spec.height),
        gpu=device_name(device),
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


class CostBook:
    """Committed tables plus the probe cache; `row_for` probes and caches what neither has."""

    def __init__(self, rows: Iterable[CostRow] = (), *, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._rows: dict[CostKey, CostRow] = {}
        for r in rows:
            self._rows[r.key] = r  # a later row (the cache, a newer table) wins

    @staticmethod
    def default(tables_dir: Path = TABLES_DIR, cache_dir: Path | None = None) -> CostBook:
        cache = cache_dir if cache_dir is not None else assets.home() / CACHE_SUBDIR
        return CostBook([*load_dir(tables_dir), *load_dir(cache, strict=False)], cache_dir=cache)

    def find(self, key: CostKey) -> CostRow | None:
        return self._rows.get(key)

    def add(self, row: CostRow) -> None:
        """Keep `row` and write it to the cache (one file per row, so concurrent processes never lose rows)."""
        self._rows[row.key] = row
        if self.cache_dir is not None:
            k = row.key
            name = f"{_slug(k.component)}-{k.model_signature}-{k.bucket}-{k.dtype}-{k.runtime}-{_slug(k.gpu)}.json"
            CostTable(rows=(row,)).save(self.cache_dir / name)

    def row_for(
        self,
        stage: Stage,
        spec: StreamSpec,
        device: torch.device,
        dtype: DType,
        *,
        probe: StageFactory | None = None,
        runtime: Runtime = "inprocess",
        max_batch: int = DEFAULT_MAX_BATCH_SIZE,
        prepare: Prepare | None = None,
    ) -> tuple[CostRow | None, str]:
        """The row for a set-up `stage` on `spec` input, and where it came from ("table", "probe" or "none").

        With no row for this device, `probe` (a factory of an identical, not yet set-up stage) is measured on
        `spec` with `PROBE_BATCH_SIZES` and the row cached; the probe runs its own copy of the stage, so a stage
        that keeps state between batches is never disturbed."""
        key = key_for(stage, spec, device, dtype, runtime)
        row = self.find(key)
        if row is not None:
            return row, "table"
        if probe is None:
            return None, "none"
        row = measure(probe, spec, device, dtype, runtime=runtime, max_batch=max_batch, source="probe", prepare=prepare)
        if row.key != key:
            raise UsageError(
                f"the probe's stage signs differently from the stage it stands for ({row.model_signature} vs "
                f"{key.model_signature}); a probe factory must build the same stage"
            )
        self.add(row)
        return row, "probe"
