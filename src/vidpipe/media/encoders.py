"""Encoder presets: which FFmpeg encoder, pixel format and options each `--encoder` name means.

| preset  | encoder (CPU / NVENC)    | 8-bit      | >8-bit        | alpha                 | default quality |
|---------|--------------------------|------------|---------------|-----------------------|-----------------|
| h264    | libx264 / h264_nvenc     | yuv420p    | yuv420p10le   | dropped (warned)      | crf 18          |
| hevc    | libx265 / hevc_nvenc     | yuv420p    | yuv420p10le   | dropped (warned)      | crf 20          |
| hevc-grain | libx265               | yuv420p10le (**) | yuv420p10le | dropped (warned)   | crf 16, slow    |
| av1     | libsvtav1 / av1_nvenc    | yuv420p    | yuv420p10le   | dropped (warned)      | crf 30          |
| vp9     | libvpx-vp9               | yuv420p    | yuv420p (*)   | yuva420p (.webm/.mkv) | crf 30          |
| prores  | prores_ks                | yuv422p10le (HQ, profile 3)  | yuva444p10le (4444) |     |
| prores-hq | prores_ks              | yuv422p10le (HQ, profile 3, always) | dropped (warned) |   |
| dnxhr-hqx | dnxhd (DNxHR HQX)      | yuv422p10le (always)       | dropped (warned)      | ≥ 256×120 only  |
| ffv1    | ffv1 (lossless)          | yuv420p    | yuv420p10le   | bgra / gbrap16le      | lossless        |
| ffv1-10 | ffv1 (lossless)          | the source's layout at ≥ 10 bits (yuv420p10le …) | gbrap16le | lossless |
| png     | png (image sequence)     | rgb24      | rgb48be       | rgba / rgba64be       | lossless        |

(*) the bundled libvpx has no high-bit-depth support, so VP9 output is 8-bit.
(**) 10-bit from 8-bit sources too, as the seed encodes; `--bit-depth 8` for 8-bit.

The mezzanine presets (issue 18 item 3, `--preset mezzanine-dvd`): `prores-hq` is ProRes 422 HQ 10-bit whatever
the frames (the seed's `prores_ks -profile:v 3 -pix_fmt yuv422p10le`; `prores` switches to 4444 for alpha),
`dnxhr-hqx` DNxHR HQX 10-bit 4:2:2 (.mov or .mxf; FFmpeg's DNxHR needs frames of at least 256×120), `ffv1-10`
FFV1 at 10 bits or more in the source's layout (a deeper source keeps its depth).

`hevc-grain` is the S4 seed's final encode of film material (docs: issue 18): x265 10-bit, `-preset slow`,
`-tune grain`, `aq-mode=3:aq-strength=0.8:rc-grain=1`, crf 16 (`--crf`/`--speed` override crf and preset);
x265's grain tune is meant to keep film grain rather than smooth it away. Never picked by `auto`.

Alpha (`EncoderOptions.alpha`, media/alpha.py): RGBA frames keep their alpha where the preset and the container
can carry it (VP9's only in Matroska/WebM). Where they cannot, `keep` is a UsageError naming the outputs that can;
`auto` is `keep` for an alpha made on the way (a stage's matte, frames handed in without a source) and drops a
source's own alpha with a warning (a ProRes 4444 master to H.264 still works); `drop` writes none.

A lossless intermediate keeps the source's layout: ffv1 (and `--lossless` h264/hevc/vp9) write the source's
chroma subsampling, RGB-ness and bit depth where the encoder has such a format (an RGB source with ffv1 → bgr0 or
gbrpN; 4:4:4 → yuv444p…; lossless h264 of RGB → libx264rgb). `--pix-fmt` asks for any format the encoder takes.
`auto` picks NVENC H.264 (HEVC for >8-bit) when an NVENC encoder actually opens on this machine, otherwise by
container: .webm → vp9; .mov → prores with alpha, else h264; anything else → vp9 with alpha (.mkv), hevc for
>8-bit, h264 for 8-bit.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
import av.error
import av.logging

from ..errors import EncoderUnavailableError, UsageError
from .alpha import ALPHA_OUTPUTS, alpha_refusal

log = logging.getLogger(__name__)

PRESETS = (
    "auto", "h264", "hevc", "hevc-grain", "av1", "vp9", "prores", "prores-hq", "dnxhr-hqx", "ffv1", "ffv1-10", "png"
)  # fmt: skip
Preset = Literal[
    "auto", "h264", "hevc", "hevc-grain", "av1", "vp9", "prores", "prores-hq", "dnxhr-hqx", "ffv1", "ffv1-10", "png"
]  # fmt: skip
#: presets written at 10 bits whatever the source's depth (unless `bit_depth` says otherwise)
DEEP_PRESETS = ("hevc-grain", "prores-hq", "dnxhr-hqx", "ffv1-10")
#: FFmpeg's DNxHR encoder refuses smaller frames
DNXHR_MIN_SIZE = (256, 120)
#: the S4 seed's x265 parameters for grainy film (beside `-tune grain`, which FFmpeg's libx265 takes as `tune`)
GRAIN_X265_PARAMS = "aq-mode=3:aq-strength=0.8:rc-grain=1"
ALPHA_MODES = ("auto", "keep", "drop")
AlphaMode = Literal["auto", "keep", "drop"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EncoderOptions:
    encoder: Preset = "auto"
    #: quality (lower is better) for crf-style encoders; None = the preset's default
    crf: int | None = None
    #: encoder speed preset (x264/x265 names; SVT-AV1 numbers as strings); None = the preset's default
    speed: str | None = None
    #: force output bit depth (8 or 10); None = follow the source where the codec allows
    bit_depth: int | None = None
    #: mathematically lossless where the encoder can (x264 qp 0, x265/VP9/SVT lossless); ffv1/png always are
    lossless: bool = False
    #: encoder threads; 0 = FFmpeg's choice
    threads: int = 0
    #: extra FFmpeg encoder options
    extra: tuple[tuple[str, str], ...] = ()
    #: output pixel format (any the encoder takes); None = the preset's, or the source's layout when lossless
    pix_fmt: str | None = None
    #: RGBA frames: "keep" their alpha or fail (UsageError), "drop" it, or "auto": keep an alpha made on the way
    #: (strictly), a source's own where the output can (else dropped with a warning)
    alpha: AlphaMode = "auto"


@dataclass(frozen=True, slots=True, kw_only=True)
class EncoderChoice:
    preset: str
    codec: str
    pix_fmt: str
    options: dict[str, str]
    alpha: bool
    bit_depth: int
    hardware: bool = False

    @property
    def chroma_420(self) -> bool:
        return "420" in self.pix_fmt

    @property
    def chroma_step(self) -> tuple[int, int]:
        """Width and height multiples the chroma subsampling needs (2, 2 for 4:2:0; 1, 1 for 4:4:4 and RGB)."""
        lay = layout(self.pix_fmt)
        return (1, 1) if lay.family != "yuv" else lay.subsampling


_DEFAULT_CRF = {"h264": 18, "hevc": 20, "hevc-grain": 16, "av1": 30, "vp9": 30}
_DEFAULT_SPEED = {"h264": "veryfast", "hevc": "fast", "hevc-grain": "slow", "av1": "8"}
_CPU_CODEC = {
    "h264": "libx264",
    "hevc": "libx265",
    "hevc-grain": "libx265",
    "av1": "libsvtav1",
    "vp9": "libvpx-vp9",
    "prores": "prores_ks",
    "prores-hq": "prores_ks",
    "dnxhr-hqx": "dnxhd",
    "ffv1": "ffv1",
    "ffv1-10": "ffv1",
    "png": "png",
}
_NVENC_CODEC = {"h264": "h264_nvenc", "hevc": "hevc_nvenc", "av1": "av1_nvenc"}


#: the CUDA driver API's codes for success and for "no CUDA-capable device"
_CUDA_SUCCESS, _CUDA_ERROR_NO_DEVICE = 0, 100


@functools.cache
def cuda_device_present() -> bool:
    """Whether the CUDA driver loads and sees a device (asked of the driver: no torch needed). NVENC and NVDEC
    need both: without them FFmpeg's NVENC encoders cannot open, so they are not even tried (FFmpeg would log
    "Cannot load libcuda.so.1"). A driver without a device (or CUDA_VISIBLE_DEVICES="") answers no device; any
    other answer leaves it to FFmpeg's own probe (which keeps its log to itself)."""
    if os.name != "posix":
        return True  # other systems name the driver otherwise: let FFmpeg decide
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    status = driver.cuInit(0)
    if status == _CUDA_SUCCESS:
        status = driver.cuDeviceGetCount(ctypes.byref(count))
    no_device = status == _CUDA_ERROR_NO_DEVICE or (status == _CUDA_SUCCESS and count.value == 0)
    return not no_device


#: encoders that, run as root (the containers users rent), switch the threads they start from to real-time
#: scheduling (SVT-AV1 sets SCHED_FIFO 99): every process forked after that inherits it, and a busy one then starves
#: the machine (seen in CI: an xdist worker made SCHED_FIFO by an AV1 probe, its spinning children holding both cores)
REALTIME_ENCODERS = frozenset({"libsvtav1"})


def drop_realtime_scheduling() -> int:
    """Put every thread of this process that runs SCHED_FIFO/SCHED_RR back on the normal scheduler; how many were.
    Called once such an encoder has opened and started: vidpipe never asks for real-time scheduling itself."""
    if not hasattr(os, "sched_getscheduler"):
        return 0
    moved = 0
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
                os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
                moved += 1
        except OSError:  # a thread that ended meanwhile
            continue
    return moved


@functools.cache
def encoder_opens(codec: str, width: int = 256, height: int = 256, pix_fmt: str = "yuv420p") -> bool:
    """True when the encoder can really be opened here (NVENC needs a GPU with NVENC, not just the build)."""
    if codec in _NVENC_CODEC.values() and not cuda_device_present():
        return False
    if codec == "libsvtav1":
        # SVT-AV1 prints its banner straight to stderr unless told otherwise (1 = errors only)
        os.environ.setdefault("SVT_LOG", "1")
    # the probe's own log (e.g. "h264_nvenc: Cannot load libcuda.so.1") is kept to this thread and dropped: a
    # failed probe is an answer, not a warning for the run that asked
    with av.logging.Capture(local=True) as probe_log:
        try:
            cc = av.codec.CodecContext.create(codec, "w")
            cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
            cc.time_base = Fraction(1, 25)
            if codec == "libx265":
                cc.options = {"x265-params": "log-level=none"}  # its banner would go straight to stderr
            elif codec == "dnxhd":
                cc.options = {"profile": "dnxhr_hqx"}  # without a DNxHR profile it wants one of DNxHD's bit rates
            try:
                cc.open()
            finally:
                if codec in REALTIME_ENCODERS:
                    drop_realtime_scheduling()
            return True
        except (av.error.FFmpegError, av.codec.codec.UnknownCodecError, ValueError, OSError) as e:
            said = "; ".join(msg.strip() for _, _, msg in probe_log)
            log.debug("encoder %s does not open here: %s%s", codec, e, f" ({said})" if said else "")
            return False


@dataclass(frozen=True, slots=True)
class Layout:
    """What a pixel format keeps of a picture: family (rgb, yuv, gray), chroma subsampling, alpha, depth."""

    family: str
    subsampling: tuple[int, int]
    alpha: bool
    depth: int


def layout(pix_fmt: str) -> Layout:
    fmt = av.VideoFormat(pix_fmt, 16, 16)
    comps = fmt.components
    alpha = any(c.is_alpha for c in comps)
    depth = max((c.bits for c in comps), default=8)
    if fmt.is_rgb:
        return Layout("rgb", (1, 1), alpha, depth)
    colour = [c for c in comps if not c.is_alpha]
    if len(colour) < 3:
        return Layout("gray", (1, 1), alpha, depth)
    chroma = colour[1]  # planar or packed, the second colour component is a chroma one
    return Layout("yuv", (16 // max(1, chroma.width), 16 // max(1, chroma.height)), alpha, depth)


def _formats(codec: str) -> list[str]:
    return [f.name for f in av.codec.Codec(codec, "w").video_formats or ()]


def _same_layout(codec: str, source_pix_fmt: str, depth: int | None, alpha: bool) -> str | None:
    """The encoder's format with the source's family, subsampling and alpha, at its depth (or `depth`) or the
    nearest deeper one, that the encoder really opens with (libvpx lists yuva444p but refuses it without
    `strict`); None when it has none. Semi-planar (nv*), full-range-by-name (yuvj*) and big-endian formats are
    skipped: the planar ones say the same."""
    src = layout(source_pix_fmt)
    want = depth or src.depth
    fits: list[tuple[int, str]] = []
    for name in _formats(codec):
        if name.startswith(("nv", "yuvj", "pal")) or name.endswith("be"):
            continue
        lay = layout(name)
        if (lay.family, lay.subsampling, lay.alpha) == (src.family, src.subsampling, alpha) and lay.depth >= want:
            fits.append((lay.depth, name))
    return next((name for _, name in sorted(fits) if encoder_opens(codec, pix_fmt=name)), None)


def resolve(
    opts: EncoderOptions,
    *,
    suffix: str,
    source_depth: int,
    alpha: bool,
    source_pix_fmt: str | None = None,
    alpha_made: bool = False,
) -> EncoderChoice:
    """Pick encoder, pixel format and options for an output file with extension `suffix`. `source_pix_fmt` lets
    lossless encoders keep the source's layout (chroma, RGB, depth). `alpha`: the frames are RGBA; `alpha_made`:
    that alpha is the output's own (a stage made it), so `auto` must keep it."""
    preset = opts.encoder
    if preset not in PRESETS:
        raise UsageError(f"unknown encoder {preset!r}; valid: {', '.join(PRESETS)}")
    if opts.alpha not in ALPHA_MODES:
        raise UsageError(f"unknown alpha mode {opts.alpha!r}; valid: {', '.join(ALPHA_MODES)}")
    strict = opts.alpha == "keep" or (opts.alpha == "auto" and alpha_made)
    alpha = alpha and opts.alpha != "drop"
    depth = opts.bit_depth or (10 if source_depth > 8 or preset in DEEP_PRESETS else 8)
    if depth not in (8, 10):
        raise UsageError(f"bit depth {depth} not supported; valid: 8, 10")
    suffix = suffix.lower()
    hardware = False
    if preset == "auto":
        nv = "hevc" if depth > 8 else "h264"
        if not alpha and suffix in (".mp4", ".mkv", ".mov") and encoder_opens(_NVENC_CODEC[nv]):
            preset, hardware = nv, True
        elif suffix == ".webm":
            preset = "vp9"
        elif suffix == ".mov":
            preset = "prores" if alpha else ("hevc" if depth > 8 else "h264")
        elif suffix == ".mkv" and alpha:
            preset = "vp9"
        elif suffix in (".png", "") or suffix.endswith("png"):
            preset = "png"
        else:
            preset = "hevc" if depth > 8 else "h264"
        log.info(
            "encoder: auto picked %s%s",
            preset,
            " on NVENC" if hardware else " on the CPU (no NVENC here)" if preset in _NVENC_CODEC else "",
        )
    codec = _NVENC_CODEC[preset] if hardware else _CPU_CODEC[preset]
    if not hardware and not encoder_opens(codec, pix_fmt="rgb24" if preset == "png" else _pix_fmt(preset, 8, False)):
        raise EncoderUnavailableError(f"encoder {codec} is not available in this FFmpeg build")
    refusal = alpha_refusal(preset, suffix) if alpha else None
    if refusal is not None and strict:
        raise UsageError(f"the output must keep its alpha channel, but {refusal}; alpha is kept by {ALPHA_OUTPUTS}")
    if refusal is not None:
        log.warning("encoder: %s; the alpha channel is dropped (alpha is kept by %s)", refusal, ALPHA_OUTPUTS)
    keep_alpha = alpha and refusal is None
    if preset == "vp9" and depth > 8:
        log.warning("encoder: this FFmpeg's libvpx has no 10-bit support; VP9 output is 8-bit")
        depth = 8
    pix_fmt = _pix_fmt(preset, depth, keep_alpha)
    lossless = preset in ("ffv1", "ffv1-10") or (opts.lossless and preset in ("h264", "hevc", "vp9") and not hardware)
    if opts.pix_fmt is not None:
        valid = _formats(codec)
        if opts.pix_fmt not in valid:
            raise UsageError(f"--pix-fmt {opts.pix_fmt!r} is not taken by {codec}; valid: {', '.join(valid)}")
        pix_fmt = opts.pix_fmt
    elif lossless and source_pix_fmt:
        if preset == "h264" and layout(source_pix_fmt).family == "rgb":
            codec = "libx264rgb"  # x264's RGB build: RGB stays RGB, no lossy matrix on the way
        least = opts.bit_depth or (max(10, layout(source_pix_fmt).depth) if preset == "ffv1-10" else None)
        kept = _same_layout(codec, source_pix_fmt, least, keep_alpha)
        if kept is None:
            log.warning("encoder: %s has no format like the source's %s; writing %s", codec, source_pix_fmt, pix_fmt)
            codec = _CPU_CODEC[preset]
        else:
            pix_fmt = kept
    out = layout(pix_fmt)
    if keep_alpha and not out.alpha:
        if strict:
            raise UsageError(
                f"the output must keep its alpha channel, but pixel format {pix_fmt} has none; formats of {codec} "
                f"with alpha: {', '.join(f for f in _formats(codec) if layout(f).alpha)}"
            )
        log.warning("encoder: pixel format %s has no alpha plane; the alpha channel is dropped", pix_fmt)
    return EncoderChoice(
        preset=preset,
        codec=codec,
        pix_fmt=pix_fmt,
        options=_options(preset, opts, hardware, keep_alpha and out.alpha),
        alpha=keep_alpha and out.alpha,
        bit_depth=out.depth if preset != "prores" else 10,
        hardware=hardware,
    )


def check_frame_size(choice: EncoderChoice, width: int, height: int) -> None:
    """Refuse, naming the limit, a frame size the chosen encoder cannot open with (DNxHR's least size)."""
    if choice.preset == "dnxhr-hqx" and (width < DNXHR_MIN_SIZE[0] or height < DNXHR_MIN_SIZE[1]):
        w, h = DNXHR_MIN_SIZE
        raise UsageError(
            f"DNxHR takes frames of at least {w}x{h}, these are {width}x{height}; use prores-hq or ffv1-10"
        )


def _pix_fmt(preset: str, depth: int, alpha: bool) -> str:
    deep = depth > 8
    if preset == "prores":
        return "yuva444p10le" if alpha else "yuv422p10le"
    if preset in ("prores-hq", "dnxhr-hqx"):
        return "yuv422p10le"
    if preset == "png":
        return ("rgba64be" if alpha else "rgb48be") if deep else ("rgba" if alpha else "rgb24")
    if preset in ("ffv1", "ffv1-10") and alpha:
        # RGBA frames with no source layout to keep: stored as RGB, so they come back bit for bit
        return "gbrap16le" if deep else "bgra"
    if preset == "vp9" and alpha:
        return "yuva420p"
    return "yuv420p10le" if deep else "yuv420p"


def _options(preset: str, opts: EncoderOptions, hardware: bool, alpha: bool) -> dict[str, str]:
    o: dict[str, str] = {}
    crf = opts.crf if opts.crf is not None else _DEFAULT_CRF.get(preset)
    if hardware:
        o.update({"preset": opts.speed or "p5", "rc": "vbr", "cq": str(crf or 20)})
    elif preset in ("h264", "hevc", "hevc-grain"):
        o.update({"crf": str(crf), "preset": opts.speed or _DEFAULT_SPEED[preset]})
        if preset == "hevc":
            o["x265-params"] = "log-level=error"
        elif preset == "hevc-grain":
            o.update({"tune": "grain", "x265-params": f"log-level=error:{GRAIN_X265_PARAMS}"})
    elif preset == "av1":
        o.update({"crf": str(crf), "preset": opts.speed or _DEFAULT_SPEED["av1"]})
        o["svtav1-params"] = "lp=0"
    elif preset == "vp9":
        # constant-quality mode needs b:v 0; row-mt spreads one frame over the cores
        o.update({"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": opts.speed or "4"})
        if alpha:
            o["auto-alt-ref"] = "0"  # libvpx refuses alt-ref frames together with an alpha plane
    elif preset == "prores":
        # prores_ks profile 3 = 422 HQ; 4 = 4444, the one that carries alpha
        o.update({"profile": "4" if alpha else "3", "vendor": "apl0"})
    elif preset == "prores-hq":
        o.update({"profile": "3", "vendor": "apl0"})  # 422 HQ, the seed's -profile:v 3
    elif preset == "dnxhr-hqx":
        o["profile"] = "dnxhr_hqx"
    elif preset in ("ffv1", "ffv1-10"):
        o.update({"level": "3", "slicecrc": "1"})
    if opts.lossless:
        if preset == "h264" and not hardware:
            o.pop("crf", None)
            o["qp"] = "0"
        elif preset == "hevc" and not hardware:
            o["x265-params"] = "log-level=error:lossless=1"
        elif preset == "vp9":
            o.pop("crf", None)  # libvpx refuses a CQ level together with lossless
            o["lossless"] = "1"
        elif preset not in ("ffv1", "ffv1-10", "png"):
            raise UsageError(f"--lossless is not available for {preset}; lossless encoders: h264, hevc, vp9, ffv1, png")
    o.update(dict(opts.extra))
    return o
