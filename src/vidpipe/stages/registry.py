"""The stage registry: every stage `vidpipe run` can build, by name, with its options and properties.

One entry per stage says how to build it from the run's option values (`build`), which `vidpipe run` options it
reads (names, types, defaults, help, valid values), what it is (task, cost unit, analysis-only, rate-changing),
how `bench costs` measures it (`cost_subject`) and a small instance for the contract suite (`sample`). The recipe
(`runtime/recipe.py`), the CLI, job specs, `doctor` and the contract test read it, so a new stage is its own file
plus one entry in `STAGES` (see docs/architecture.md, "Add a stage").

Nothing here imports torch or a stage module at import time (`vidpipe --help` stays fast): each factory imports
its stage when called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from ..errors import UsageError

if TYPE_CHECKING:
    from .base import Stage

Values = Mapping[str, Any]
Task = Literal["geometry", "upscale", "interpolate", "matte", "analysis", "vsr", "restore"]


def choice(value: str, valid: tuple[str, ...], what: str) -> str:
    if value not in valid:
        raise UsageError(f"invalid {what} {value!r}; valid: {', '.join(valid)}")
    return value


def parse_rate(value: str) -> Fraction:
    try:
        rate = Fraction(value)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"invalid frame rate {value!r}; expected e.g. 60, 59.94 or 60000/1001") from None
    if rate <= 0:
        raise UsageError(f"frame rate must be > 0, got {value}")
    return rate


def parse_tile(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit():
        raise UsageError(f"invalid tile {value!r}; valid: auto, 0 (whole frames) or a size in pixels")
    return int(value)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One `vidpipe run` option a stage reads: `name` is the recipe field (`resize_method`; the CLI spells it
    `--resize-method`), `type` the value's Python type (a `bool` is a flag), `choices` the valid values where there
    is a fixed set, `min` the least valid number where there is one. The CLI parameter, the recipe field and the
    job-spec field (`pipeline.<name>`, `VIDPIPE_<NAME>`) are generated from it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    #: what an error calls it (default: the flag)
    what: str = ""
    min: int | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any) -> None:
        if self.choices and value is not None and value != self.default:
            choice(value, self.choices, self.what or f"{self.flag} value")
        if self.min is not None and value is not None and value < self.min:
            raise UsageError(f"{self.what or self.flag} must be ≥ {self.min}, got {value}")


@dataclass(frozen=True, slots=True)
class StageEntry:
    """A registered stage. `wanted(values)`: the run asks for it; `build(values)`: the stage, not set up (no
    weights loaded), raising UsageError for a bad value. `options` are the ones it owns (`shared` ones it reads
    but another entry owns, such as `dtype`). `sample()` builds a small instance for the contract suite (None:
    covered elsewhere); `cost_subject(model, dtype)` the instance `bench costs` measures (None: not measured)."""

    name: str
    module: str
    task: Task
    unit: Literal["frame", "frame_pair", "window"]
    wanted: Callable[[Values], bool]
    build: Callable[[Values], Stage]
    options: tuple[OptionSpec, ...] = ()
    shared: tuple[str, ...] = ()
    #: the option naming its model (`doctor` sizes `build({model_option: model})`); None: no model
    model_option: str | None = None
    #: the upload label a run of this model stage alone earns (jobs.keys.MODES; both model stages: "both")
    mode_label: str | None = None
    analysis_only: bool = False
    rate_changing: bool = False
    #: frames of context it needs (0: per frame), when static
    context: int = 0
    sample: Callable[[], list[Stage]] | None = None
    #: the sample uses real weights: over 20 s on 2 quiet cores, the slow suite's
    sample_slow: bool = False
    cost_subject: Callable[[str, str], Stage] | None = None

    def check(self, values: Values) -> None:
        for o in self.options:
            o.check(values.get(o.name, o.default))


#: options several stages read and no entry owns (an entry names those it reads in `shared`)
SHARED_OPTIONS: Final = (
    OptionSpec("dtype", str, "auto", "auto | fp16 | bf16 | fp32 (auto: fp16 on CUDA, fp32 on CPU)"),
)


# --- cuts --------------------------------------------------------------------------------------------------------

#: `--cuts` values: off, the classical detector's presets (stages.cuts.presets, written out so that this module
#: imports no stage; a test checks they agree) and TransNetV2
CUT_DETECTORS: Final = ("off", "quality", "default", "fast", "transnetv2")


def _cuts(values: Values) -> Stage:
    from .cuts.stage import Cuts

    return Cuts(choice(values.get("cuts") or "off", CUT_DETECTORS, "--cuts detector"))


def _cuts_sample() -> list[Stage]:
    from .cuts.stage import Cuts

    return [Cuts("fast")]


# --- dewatermark ---------------------------------------------------------------------------------------------


def _dewatermark(values: Values) -> Stage:
    from .dewatermark import Dewatermark

    return Dewatermark(values["dewatermark"], window=values.get("dewatermark_window"))


def _dewatermark_sample() -> list[Stage]:
    from .dewatermark import Dewatermark

    # a box (no detection statistics needed) and a window small enough that the engine's seams are crossed
    return [Dewatermark("box:4,4,24,12", window=4, overlap=2)]


# --- pad ---------------------------------------------------------------------------------------------------------


def _pad(values: Values) -> Stage:
    from .pad import Pad

    return Pad(values["pad"])


def _pad_sample() -> list[Stage]:
    from .pad import Pad

    return [Pad(32)]


# --- matte -------------------------------------------------------------------------------------------------------

MATTE_OUTPUTS: Final = ("rgba", "alpha", "composite", "green")  # the stage's own (stages.matte), checked in the tests
MATTE_LAYOUTS: Final = ("auto", "mono", "sbs", "tb")  # stages.matte.LAYOUTS, checked in the tests


def _matte(values: Values) -> Stage:
    from .matte import Matte

    return Matte(
        values["matte"],
        output=choice(values.get("matte_output", "rgba"), MATTE_OUTPUTS, "--matte-output"),
        background=values.get("background"),
        downsample=values.get("downsample", "auto"),
        dtype=values.get("dtype", "auto"),
        compile=values.get("compile", False),  # upscale's entry owns --compile: "torch.compile model stages"
        layout=choice(values.get("layout", "auto"), MATTE_LAYOUTS, "--layout"),
    )


def _matte_sample() -> list[Stage]:
    from .matte import Matte

    # random weights (the real ones are tested in tests/stages/test_matte.py): the contract is about frames,
    # timestamps and streams; `green` so that any encoder takes it (rgba needs an alpha-capable output)
    return [Matte(random_rvm(), output="green")]


def random_rvm(seed: int = 0) -> Path:
    """An RVM MobileNetV3 with random weights (seeded), saved once as safetensors in the temp folder."""
    import tempfile

    import torch

    from ..models.archs.rvm import MattingNetwork
    from ..models.loading import save_safetensors

    path = Path(tempfile.gettempdir()) / f"vidpipe-rvm-random-{seed}.safetensors"
    if not path.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_safetensors(MattingNetwork("mobilenetv3").state_dict(), path)
    return path


# --- upscale -----------------------------------------------------------------------------------------------------


def _upscale(values: Values) -> Stage:
    from .upscale import Upscale

    return Upscale(
        values["upscale"],
        outscale=values.get("outscale"),
        tile=parse_tile(values.get("tile", "auto")),
        dtype=values.get("dtype", "auto"),
        compile=values.get("compile", False),
        kernels=values.get("kernels", "torch"),
    )


def _upscale_cost(model: str, dtype: str) -> Stage:
    from .upscale import Upscale

    return Upscale(model, dtype=dtype, tile=0)  # whole frames: the scheduler derives tiles from whole-frame costs


def _upscale_sample() -> list[Stage]:
    from ..models.zoo_realesrgan import ensure_offline_weights
    from .upscale import Upscale

    ensure_offline_weights("realesr-animevideov3-x2")
    return [Upscale("realesr-animevideov3-x2", tile=64)]


# --- vsr ---------------------------------------------------------------------------------------------------------


def _vsr(values: Values) -> Stage:
    from .vsr import DEFAULT_OVERLAP, DEFAULT_WINDOW, Vsr

    window, overlap = values.get("vsr_window"), values.get("vsr_overlap")
    return Vsr(
        values["vsr"],
        window=DEFAULT_WINDOW if window is None else window,
        overlap=DEFAULT_OVERLAP if overlap is None else overlap,
        dtype=values.get("dtype", "auto"),
    )


def _vsr_sample() -> list[Stage]:
    from .vsr import Vsr

    # random weights (the real ones are tested in tests/stages/test_vsr.py): the contract is about frames,
    # timestamps and streams; a small window with context so that the engine's seams are crossed
    return [Vsr(random_basicvsr(), window=8, overlap=2)]


def random_basicvsr(seed: int = 0, *, num_feat: int = 8, num_block: int = 1) -> Path:
    """A small BasicVSR with random weights (seeded), saved once as safetensors in the temp folder: the official
    key layout at a fraction of the widths (SPyNet's too: the official one alone costs ~50× the rest here)."""
    import tempfile

    import torch

    from ..models.archs.basicvsr import BasicVSR
    from ..models.loading import save_safetensors

    path = Path(tempfile.gettempdir()) / f"vidpipe-basicvsr-random-{seed}-{num_feat}x{num_block}-spy8.safetensors"
    if not path.is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = BasicVSR(num_feat=num_feat, num_block=num_block, hr_feat=num_feat, spynet=(8, 8, 8, 8, 8, 2))
            save_safetensors(net.state_dict(), path)
    return path


# --- interpolate -------------------------------------------------------------------------------------------------

SCENE_CUT_MODES: Final = ("fill", "blend")  # the stage's own (stages.interpolate), checked in the tests
RIFE_KERNELS: Final = ("auto", "tc", "fast", "torch")  # stages.interpolate.KERNELS, checked in the tests


def _interpolate_wanted(values: Values) -> bool:
    if values.get("interpolate") is not None:
        return True
    if values.get("fps") is not None or values.get("multi") is not None:
        raise UsageError("--fps/--multi need --interpolate MODEL")
    return False


def _interpolate(values: Values) -> Stage:
    from .interpolate import KERNELS as kernels
    from .interpolate import SCENE_CUT_MODES as modes
    from .interpolate import Interpolate

    fps, multi = values.get("fps"), values.get("multi")
    if (fps is None) == (multi is None):
        raise UsageError("--interpolate needs exactly one of --fps or --multi")
    return Interpolate(
        values["interpolate"],
        fps=parse_rate(fps) if fps else None,
        multi=multi,
        # --multi k lasts as long as the input, as --fps does: n·k frames, the last one held k−1 periods
        # (the stage's own default, (n−1)·k+1 frames, ends a source period early and audio overhangs)
        fill_tail=True if multi is not None else None,
        scene_cut=choice(values.get("scene_cut", "fill"), modes, "--scene-cut mode"),  # type: ignore[arg-type]
        dtype=values.get("dtype", "auto"),
        kernels=choice(values.get("rife_kernels", "auto"), kernels, "--rife-kernels"),
    )


def _interpolate_sample() -> list[Stage]:
    from ..models.zoo_rife import ensure_offline_weights
    from .interpolate import Interpolate

    ensure_offline_weights("rife-hdv3")
    return [Interpolate("rife-hdv3", fps=Fraction(60))]


def _interpolate_cost(model: str, dtype: str) -> Stage:
    from .interpolate import Interpolate

    return Interpolate(model, multi=2, dtype=dtype)  # type: ignore[arg-type]


# --- resize ------------------------------------------------------------------------------------------------------

#: stages.resize.METHODS, written out (a test checks they agree): torch's, then stages/resample.py's kernels
RESIZE_METHODS: Final = ("bicubic", "bilinear", "area", "catrom", "mitchell", "lanczos", "spline16", "spline36")


def _resize(values: Values) -> Stage:
    from .resize import Resize, parse_size

    square = bool(values.get("square_pixels", False))
    size = values.get("resize")
    w, h = parse_size(size) if size is not None else (-1, -1)  # -1x-1: square pixels, same picture
    method = choice(values.get("resize_method", "bicubic"), RESIZE_METHODS, "resize method")
    return Resize(w, h, method, square_pixels=square)  # type: ignore[arg-type]


def _resize_sample() -> list[Stage]:
    from .resize import Resize

    return [Resize(160, -1, "area"), Resize(96, 64, "lanczos")]


# --- crop --------------------------------------------------------------------------------------------------------


def _crop(values: Values) -> Stage:
    from .crop import Crop, parse_crop

    return Crop(parse_crop(values["crop"]))


def _crop_sample() -> list[Stage]:
    from .crop import Crop

    return [Crop((32, 24, 8, 6)), Crop(None)]


#: every stage `vidpipe run` builds, in the default run order (`--order` permutes the ones it names)
STAGES: Final[dict[str, StageEntry]] = {
    e.name: e
    for e in (
        StageEntry(
            name="cuts",
            module="vidpipe.stages.cuts.stage",
            task="analysis",
            unit="frame_pair",
            wanted=lambda v: (v.get("cuts") or "off") != "off",
            build=_cuts,
            options=(
                OptionSpec(
                    "cuts",
                    str,
                    "off",
                    "detect cuts in the same pass (first, on the source frames): off | quality | default | fast | "
                    "transnetv2; hard cuts reset recurrent stages, interpolation never synthesises across cuts",
                    CUT_DETECTORS,
                    "--cuts detector",
                ),
            ),
            analysis_only=True,
            context=40 + 42,  # the presets' look-ahead (SETTLE_LAG) + look-behind (WINDOW); TransNetV2 75 + 100
            sample=_cuts_sample,
        ),
        StageEntry(
            name="dewatermark",
            module="vidpipe.stages.dewatermark",
            # on the source's frames, before anything resamples them: the marks' boxes and masks are in its pixels
            task="restore",
            unit="window",
            wanted=lambda v: v.get("dewatermark") is not None,
            build=_dewatermark,
            options=(
                OptionSpec(
                    "dewatermark",
                    str,
                    None,
                    "remove watermarks/logos: auto | box:X,Y,W,H[@F0-F1] | mask:PATH(.png|.json)[@F0-F1], several "
                    "joined by ';'",
                ),
                OptionSpec(
                    "dewatermark_window",
                    int,
                    None,
                    "--dewatermark: kept frames per window (default: the seed's VRAM table on CUDA, 16 on CPU)",
                    min=1,
                ),
            ),
            sample=_dewatermark_sample,
        ),
        StageEntry(
            name="pad",
            module="vidpipe.stages.pad",
            task="geometry",
            unit="frame",
            wanted=lambda v: v.get("pad") is not None,
            build=_pad,
            options=(OptionSpec("pad", int, None, "pad frames to a multiple of N (cropped back on output)"),),
            sample=_pad_sample,
        ),
        StageEntry(
            name="matte",
            module="vidpipe.stages.matte",
            task="matte",
            unit="frame",
            wanted=lambda v: v.get("matte") is not None,
            build=_matte,
            options=(
                OptionSpec("matte", str, None, "matting model (RVM): rvm-mobilenetv3 | rvm-resnet50 | weights file"),
                OptionSpec(
                    "downsample",
                    str,
                    "auto",
                    "--matte: auto (long side 480 px, RVM's advice: 0.25 at 1080p) or a ratio in (0, 1]",
                ),
                OptionSpec(
                    "matte_output",
                    str,
                    "rgba",
                    "rgba (source + alpha: .webm/.mov/.mkv ffv1/png) | alpha (grey matte) | composite "
                    "(onto --background) | green (chroma key)",
                    MATTE_OUTPUTS,
                    "--matte-output",
                ),
                OptionSpec(
                    "background", str, None, "--matte-output composite: a colour (#00ff00, green), an image or a video"
                ),
                OptionSpec(
                    "layout",
                    str,
                    "auto",
                    "--matte on VR video: auto (the input's stereo metadata, else a name token _LR/_SBS/_3DH or "
                    "_TB/_OU/_3DV, else mono) | mono | sbs (left/right eyes) | tb (top/bottom); each eye is matted "
                    "with its own recurrent state",
                    MATTE_LAYOUTS,
                    "--layout",
                ),
            ),
            shared=("dtype",),
            model_option="matte",
            mode_label="matted",
            sample=_matte_sample,
            # no cost_subject yet: a run's probe sizes it (`Stage.probe_call`, a step from a fresh state), but no
            # `bench costs` row is committed for it; `vidpipe bench matte` measures its speed
        ),
        StageEntry(
            name="vsr",
            module="vidpipe.stages.vsr",
            # a model task of its own (models register for "vsr"), not "upscale": the frames it outputs depend
            # on their neighbours, and it runs on the temporal engine's windows. Before upscale: it is trained on
            # the source's own low-resolution frames (bicubic ×4 down), not on another model's output
            task="vsr",
            unit="window",
            wanted=lambda v: v.get("vsr") is not None,
            build=_vsr,
            options=(
                OptionSpec(
                    "vsr", str, None, "video SR model (×4, windowed): basicvsr-reds4 | basicvsr-vimeo90k-bi | … | file"
                ),
                OptionSpec("vsr_window", int, None, "--vsr: kept frames per window T (default 16)", min=1),
                OptionSpec(
                    "vsr_overlap", int, None, "--vsr: context frames on each side of a window (default 16)", min=0
                ),
            ),
            shared=("dtype",),
            model_option="vsr",
            mode_label="upscaled",
            sample=_vsr_sample,
        ),
        StageEntry(
            name="upscale",
            module="vidpipe.stages.upscale",
            task="upscale",
            unit="frame",
            wanted=lambda v: v.get("upscale") is not None,
            build=_upscale,
            options=(
                OptionSpec("upscale", str, None, "SR model: registry name, imported name or weights file"),
                OptionSpec("outscale", float, None, "final scale after the model (default: the model's)"),
                OptionSpec("tile", str, "auto", "auto | 0 (whole frames) | N px tiles"),
                OptionSpec("compile", bool, False, "torch.compile model stages (GPU; warm-up first)"),
                OptionSpec("kernels", str, "torch", "upscale: torch | fused (ours, Triton; CUDA fp16/bf16)"),
            ),
            shared=("dtype",),
            model_option="upscale",
            mode_label="upscaled",
            sample=_upscale_sample,
            sample_slow=True,
            cost_subject=_upscale_cost,
        ),
        StageEntry(
            name="interpolate",
            module="vidpipe.stages.interpolate",
            task="interpolate",
            unit="frame_pair",
            wanted=_interpolate_wanted,
            build=_interpolate,
            options=(
                OptionSpec("interpolate", str, None, "RIFE model: rife-hdv3 | rife-4.6 | … | weights file"),
                OptionSpec("fps", str, None, "target frame rate for --interpolate, e.g. 60 or 60000/1001"),
                OptionSpec("multi", int, None, "frame-rate multiplier for --interpolate", min=2),
                OptionSpec(
                    "scene_cut",
                    str,
                    "fill",
                    "fill | blend: what replaces synthesis across a cut",
                    SCENE_CUT_MODES,
                    "--scene-cut mode",
                ),
                OptionSpec(
                    "rife_kernels",
                    str,
                    "auto",
                    "auto | tc | fast | torch: how HDv3 runs on CUDA in fp16/bf16 (tc: cuDNN on padded widths + "
                    "Triton epilogues + CUDA graphs, auto's choice; fast: fused Triton convolutions; torch: eager)",
                    RIFE_KERNELS,
                    "--rife-kernels",
                ),
            ),
            shared=("dtype",),
            model_option="interpolate",
            mode_label="interpolated",
            rate_changing=True,
            context=1,
            sample=_interpolate_sample,
            sample_slow=True,
            cost_subject=_interpolate_cost,
        ),
        StageEntry(
            name="resize",
            module="vidpipe.stages.resize",
            task="geometry",
            unit="frame",
            wanted=lambda v: v.get("resize") is not None or bool(v.get("square_pixels")),
            build=_resize,
            options=(
                OptionSpec("resize", str, None, "resize to WxH (one side may be -1)"),
                OptionSpec(
                    "resize_method",
                    str,
                    "bicubic",
                    "bicubic | bilinear | area (torch's) | catrom (zscale's bicubic) | mitchell | lanczos | spline16 "
                    "| spline36",
                    RESIZE_METHODS,
                    "resize method",
                ),
                OptionSpec("square_pixels", bool, False, "resample to square pixels (default: keep the pixel aspect)"),
            ),
            sample=_resize_sample,
        ),
        StageEntry(
            name="crop",
            module="vidpipe.stages.crop",
            task="geometry",
            unit="frame",
            wanted=lambda v: v.get("crop") is not None,
            build=_crop,
            options=(
                OptionSpec(
                    "crop",
                    str,
                    None,
                    "crop to W:H:X:Y of the frames after resize (FFmpeg's crop=w:h:x:y), or auto (the clip's black "
                    "borders, sampled over it)",
                ),
            ),
            sample=_crop_sample,
        ),
    )
}

#: the two-stage `--order` values of old, still valid
LEGACY_ORDERS: Final = ("upscale,interpolate", "interpolate,upscale")


def entry(name: str) -> StageEntry:
    try:
        return STAGES[name]
    except KeyError:
        raise UsageError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}") from None


def with_model(name: str, model: str) -> Stage:
    """The stage `name` on `model` with every other option at its default (as `doctor` sizes it); an
    interpolation runs ×2."""
    e = entry(name)
    if e.model_option is None:
        with_models = ", ".join(n for n, x in STAGES.items() if x.model_option)
        raise UsageError(f"stage {name!r} takes no model; valid: {with_models}")
    return e.build({e.model_option: model} | ({"multi": 2} if e.rate_changing else {}))


def stage_options() -> dict[str, OptionSpec]:
    """Every registered stage option by name (its recipe field), in the order `vidpipe run --help` lists them:
    each entry's own, a shared one after the first entry that reads it. Read at call time: the recipe, job specs
    and the CLI (`cli.app.refresh_stage_options`) follow an entry added to `STAGES`."""
    shared = {o.name: o for o in SHARED_OPTIONS}
    options: dict[str, OptionSpec] = {}
    for e in STAGES.values():
        for o in e.options:
            options.setdefault(o.name, o)
        for name in e.shared:
            if name in shared:
                options.setdefault(name, shared[name])
    return options | {n: o for n, o in shared.items() if n not in options}


def option(name: str) -> OptionSpec:
    """The registered option called `name` (a recipe field)."""
    return stage_options()[name]


def run_order(order: str) -> list[str]:
    """Every registered stage name in run order: the names `order` lists take the places those stages have by
    default, in the order given (`interpolate,upscale` swaps the two; cuts stays first, resize last)."""
    names = [n.strip() for n in order.split(",")]
    unknown = [n for n in names if n not in STAGES]
    if unknown or len(set(names)) != len(names) or not names:
        raise UsageError(
            f"invalid order {order!r}; valid: {', '.join(LEGACY_ORDERS)} or any comma-separated list of the stages "
            f"{', '.join(STAGES)}, each at most once"
            + (f" (unknown: {', '.join(unknown)})" if unknown else " (a stage named twice)")
        )
    default = list(STAGES)
    slots = sorted(default.index(n) for n in names)
    for slot, name in zip(slots, names, strict=True):
        default[slot] = name
    return default


def model_stages(values: Values) -> dict[str, str]:
    """The model stages these values run: stage name → the model it was given."""
    models = {n: e.model_option for n, e in STAGES.items() if e.model_option}
    return {n: values[opt] for n, opt in models.items() if values.get(opt) is not None}


def mode_label(values: Values) -> str:
    """The upload label (jobs.keys.MODES) of a run with these values: its model stage's, "both" for two, else
    "result"."""
    labels = [STAGES[n].mode_label or "result" for n in model_stages(values)]
    if len(labels) > 1:
        return "both"
    return labels[0] if labels else "result"


def build_chain(values: Values) -> list[Stage]:
    """The stages a run with these option values runs, in `values["order"]`'s run order."""
    for e in STAGES.values():
        e.check(values)
    order = run_order(values.get("order") or ",".join(LEGACY_ORDERS[:1]))
    return [STAGES[n].build(values) for n in order if STAGES[n].wanted(values)]
