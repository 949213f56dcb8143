"""Frame metrics shared by stages (interpolation's scene-cut check) and evaluations: PSNR and SSIM on
N×C×H×W float tensors in 0..1, one value per frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import UsageError

#: SSIM constants of Wang et al. 2004 for data in 0..1: (0.01)², (0.03)²; 11-tap Gaussian window, σ = 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
#: per-frame PSNR ceiling: 100 dB is an RMS error of 2.55e-3 levels on 0..255, far below one 8-bit step (a
#: single sample one level off in a 768×576 frame is already ~101 dB), so a capped frame is an exact rebuild
PSNR_CAP_DB = 100.0


def psnr_per_frame(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """N×C×H×W float 0..1 pairs → N PSNRs in dB (peak 1, i.e. 255 on 0..255), capped at `PSNR_CAP_DB`."""
    mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3))
    floor = 10 ** (-PSNR_CAP_DB / 10)  # the MSE at the cap; also keeps log10 off zero
    return (-10 * torch.log10(mse.clamp_min(floor))).float()


def _gaussian_window(channels: int, device: torch.device) -> torch.Tensor:
    x = torch.arange(SSIM_WINDOW, device=device, dtype=torch.float32) - (SSIM_WINDOW - 1) / 2
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim_per_frame(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """N×C×H×W float 0..1 pairs → N SSIMs (each channel separately, then the mean), valid window."""
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise UsageError(f"SSIM needs frames of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {a.shape[-1]}×{a.shape[-2]}")
    a, b = a.float(), b.float()
    c = a.shape[1]
    # one 2-D grouped conv: on the CPU it runs ~2× faster than two 1-D passes of 1-channel convs
    win = _gaussian_window(c, a.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, win, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    # Variances and covariance do not change when a and b are each shifted by a constant: taking them on data
    # centred on each frame's channel means keeps E[x²] − E[x]² from cancelling in float32 (raw 0..1 values
    # leave SSIM ~1e-4 off; flat frames come out with exactly zero variance)
    a0, b0 = a.mean(dim=(2, 3), keepdim=True), b.mean(dim=(2, 3), keepdim=True)
    ca, cb = a - a0, b - b0
    ma, mb = mu_a - a0, mu_b - b0
    var_a = blur(ca * ca) - ma**2
    var_b = blur(cb * cb) - mb**2
    cov = blur(ca * cb) - ma * mb
    ssim = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )
    return ssim.mean(dim=(1, 2, 3))
