"""Per-frame and per-pair features of the classical cut detector (numpy + OpenCV, CPU).

All differences are normalised to 0..1 so that thresholds do not depend on the resolution the feature runs
at: histogram distance is half the L1 distance of normalised histograms, SSIM dissimilarity is 1 − SSIM, flow
magnitude is in fractions of the image diagonal and the flow residual is a mean absolute grey difference / 255.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

#: bins per HSV channel of the frame histogram: coarse enough to ignore noise and small motion, fine enough
#: to tell two shots of similar colour apart (PySceneDetect's HistogramDetector uses 256 bins of luma only)
HIST_BINS = 32
#: SSIM constants of Wang et al. 2004 for 8-bit data: (0.01·255)², (0.03·255)²
SSIM_C1 = (0.01 * 255) ** 2
SSIM_C2 = (0.03 * 255) ** 2
#: SSIM window: the paper's 11-tap Gaussian with σ = 1.5
SSIM_SIGMA = 1.5
#: Farneback parameters: a 3-level pyramid at scale 0.5 covers motion of ~⅛ of the frame, 15-px windows are
#: OpenCV's documented defaults for video; 3 iterations, poly_n 5 / sigma 1.2 as in OpenCV's sample
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}


def fit_side(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size with the longest side at most `max_side`, aspect kept, never upscaled (at least 8 px a side)."""
    scale = min(1.0, max_side / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def halve_to(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The smallest level of `img`'s pyramid of exact 2×2 box averages that is still at least `size` (width,
    height) on both sides (halving stops early at an odd side). A halving is OpenCV's fast INTER_AREA case:
    1280×720 RGB → 640×360 costs ~0.6 ms, one INTER_AREA step to 384×216 ~6 ms (its generic path)."""
    w, h = size
    while img.shape[1] >= 2 * w and img.shape[0] >= 2 * h and img.shape[1] % 2 == 0 and img.shape[0] % 2 == 0:
        img = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return img


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink to `size` (width, height) without aliasing that would look like change between frames: box-average
    halvings (`halve_to`), then bilinear for the last factor below 2, where the two taps of each output pixel
    still cover every input pixel (the usual pyramid-then-interpolate scheme). Where halving stopped early (odd
    sides), one INTER_AREA step instead. Never upscales."""
    img = halve_to(img, size)
    w, h = size
    if (img.shape[1], img.shape[0]) == size:
        return img
    if img.shape[1] >= 2 * w or img.shape[0] >= 2 * h:
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)


def grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


#: OpenCV's RGB → grey weights (BT.601 luma), so that the luma of a thumbnail is the mean of `grey` of the frame
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def changed_share(a: np.ndarray, b: np.ndarray, level: float) -> float:
    """Share of the pixels of two float RGB images whose largest channel difference exceeds `level`."""
    d = cv2.absdiff(a, b)
    # channel by channel: numpy's max over a last axis of 3 is ~10× slower than two elementwise maxima
    return float((np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2]) > level).mean())


def thumb_grey(thumb: np.ndarray) -> np.ndarray:
    """Grey uint8 image of a float RGB thumbnail (0..1), as `grey` makes it from uint8 RGB."""
    return np.clip(thumb @ LUMA_WEIGHTS * 255.0 + 0.5, 0, 255).astype(np.uint8)


def mean_luma(thumb: np.ndarray) -> float:
    """Mean luma (0..1) of a float RGB thumbnail (0..1): area averaging keeps the mean, so this is the frame's."""
    return float(np.dot(cv2.mean(thumb)[:3], LUMA_WEIGHTS))


def histogram(rgb: np.ndarray) -> np.ndarray:
    """Concatenated H, S, V histograms, each summing to 1."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    ranges = ((0, 180), (0, 256), (0, 256))  # OpenCV's 8-bit hue spans 0..179
    hists = []
    for c, r in enumerate(ranges):
        h = cv2.calcHist([hsv], [c], None, [HIST_BINS], list(r)).ravel()
        hists.append(h / max(1.0, float(h.sum())))
    return np.concatenate(hists).astype(np.float32)


#: (Kr, Kb) luma coefficients of the YUV matrices (FFmpeg names), as `media.yuv` converts them; others: BT.601
_KR_KB = {"bt709": (0.2126, 0.0722), "bt2020nc": (0.2627, 0.0593), "bt2020c": (0.2627, 0.0593)}


def luma_lut(full_range: bool) -> np.ndarray:
    """8-bit Y' code → full-range grey (what `grey` gives for the decoded RGB, up to the matrix's weights)."""
    codes = np.arange(256, dtype=np.float32)
    grey = codes if full_range else (codes - 16.0) * (255.0 / 219.0)
    return np.clip(grey + 0.5, 0, 255).astype(np.uint8)


def ycbcr_matrix(matrix: str, full_range: bool) -> np.ndarray:
    """3×4 affine map of 8-bit (Y', Cb, Cr, 1) to 8-bit RGB for `cv2.transform`, by the stream's matrix and range."""
    kr, kb = _KR_KB.get(matrix, (0.299, 0.114))
    kg = 1.0 - kr - kb
    y0, ys, cs = (0.0, 255.0, 255.0) if full_range else (16.0, 219.0, 224.0)
    # RGB/255 = Y·(Y'−y0)/ys + (Cb−128)/cs·[0, −2(1−kb)kb/kg, 2(1−kb)] + (Cr−128)/cs·[2(1−kr), −2(1−kr)kr/kg, 0]
    cb = np.array([0.0, -2 * (1 - kb) * kb / kg, 2 * (1 - kb)]) * 255.0 / cs
    cr = np.array([2 * (1 - kr), -2 * (1 - kr) * kr / kg, 0.0]) * 255.0 / cs
    y = np.full(3, 255.0 / ys)
    m = np.stack([y, cb, cr], axis=1)
    offset = -(y * y0) - 128.0 * (cb + cr)
    return np.concatenate([m, offset[:, None]], axis=1).astype(np.float32)


def hist_diff(a: np.ndarray, b: np.ndarray) -> float:
    """0 for identical histograms, 1 for disjoint ones (mean over the three channels)."""
    return float(np.abs(a - b).sum()) / 6.0


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two grey uint8 images (Gaussian-window SSIM of Wang et al.)."""
    x = a.astype(np.float32)
    y = b.astype(np.float32)

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), SSIM_SIGMA)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mx * mx + my * my + SSIM_C1) * (sxx + syy + SSIM_C2)
    return float((num / den).mean())


@lru_cache(maxsize=8)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of an h×w image, float32, for `cv2.remap` (read-only, shared)."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


def flow_features(prev: np.ndarray, nxt: np.ndarray) -> tuple[float, float, float]:
    """Farneback flow prev→next on grey uint8 images: (mean magnitude / diagonal, residual after warping next
    back onto prev, raw mean difference), the last two / 255. Motion is what the flow explains: a pan leaves a
    small residual, a cut or a blend does not."""
    flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)
    h, w = prev.shape
    mag = cv2.magnitude(flow[..., 0], flow[..., 1])
    gx, gy = _pixel_grid(h, w)
    warped = cv2.remap(nxt, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    resid = mean_abs_diff(warped, prev) / 255.0
    raw = mean_abs_diff(nxt, prev) / 255.0
    return float(mag.mean()) / float(np.hypot(w, h)), resid, raw


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a − b| over all elements (OpenCV's L1 norm, accumulated in float64, no temporaries)."""
    return cv2.norm(a, b, cv2.NORM_L1) / a.size


def blend_fit(a: np.ndarray, m: np.ndarray, b: np.ndarray, min_diff: float = 0.0) -> tuple[float, float, float]:
    """Fit m ≈ (1−α)·a + α·b (float32 images). Returns (α, residual / |b − a|, mean |b − a|): a frame in the
    middle of a dissolve is such a blend with α inside (0, 1) and a small relative residual. Ends closer than
    `min_diff` (mean |b − a|) are not fitted (α 0, residual ∞): most windows inside one shot stop there.

    Least squares from three squared distances (OpenCV norms, accumulated in float64, no temporaries):
    (m − a)·(b − a) = (‖m − a‖² + ‖b − a‖² − ‖m − b‖²) / 2 and the residual² = ‖m − a‖² − α²‖b − a‖²."""
    dab = cv2.norm(b, a, cv2.NORM_L1) / a.size
    if dab < min_diff:
        return 0.0, float("inf"), dab
    dd = cv2.norm(b, a, cv2.NORM_L2SQR)
    if dd <= 0.0:
        return 0.0, float("inf"), 0.0
    ma = cv2.norm(m, a, cv2.NORM_L2SQR)
    alpha = (ma + dd - cv2.norm(m, b, cv2.NORM_L2SQR)) / (2 * dd)
    return alpha, float(np.sqrt(max(0.0, ma - alpha * alpha * dd) / dd)), dab


def blend_alpha(a: np.ndarray, m: np.ndarray, b: np.ndarray, dd: float) -> float:
    """α of `blend_fit` alone, given ‖b − a‖² = `dd` > 0 (shared by every frame fitted between the same ends)."""
    return (cv2.norm(m, a, cv2.NORM_L2SQR) + dd - cv2.norm(m, b, cv2.NORM_L2SQR)) / (2 * dd)
