"""Connected parts of a mask in a few passes over the whole map (issue 17, `--dewatermark auto`): detection cuts
its supports into parts many times per window, and a loop of one 3×3 pass per pixel of a part's diameter (with a
host round trip each) cost more than everything else detection does at 1080p."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: passes between the checks whether the labels still change (each check is a host round trip on a GPU)
ROUNDS = 4
#: pointer jumps per pass
JUMPS = 2


def label(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(h×w labels, their ids ascending) of the 8-connected components of a bool h×w mask: a component's label is
    1 + the raster index of its last pixel (0 off the mask), so ascending ids order the components by their last
    pixel. Each pass takes the largest label among a pixel's neighbours, then follows each label to the label of
    the pixel it names (pointer jumping: a label crosses a part in about log₂ of its length of passes, not one
    pixel a pass)."""
    h, w = mask.shape
    dtype = torch.float32 if h * w < 2**24 else torch.float64  # labels are exact integers
    fg = mask.to(dtype)
    labels = torch.arange(1, h * w + 1, device=mask.device, dtype=dtype).view(h, w) * fg
    if not bool(mask.any()):
        return labels, labels.new_zeros(0)
    while True:
        before = labels
        for _ in range(ROUNDS):
            labels = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * fg
            # a label k names pixel k − 1 of the same part, whose own label is at least k
            for _ in range(JUMPS):
                labels = F.pad(labels.flatten(), (1, 0))[labels.long()]
        if torch.equal(labels, before):
            break
    return labels, torch.unique(labels[labels > 0])


def components(mask: torch.Tensor) -> list[torch.Tensor]:
    """The 8-connected components of a bool h×w mask (each h×w bool), in the order of their last pixel in raster
    order (`label`)."""
    labels, ids = label(mask)
    return list(labels[None] == ids[:, None, None]) if len(ids) else []


def components_many(masks: torch.Tensor) -> list[list[torch.Tensor]]:
    """`components` of each bool h×w mask of `masks` (N×h×w), from one `label` call: the masks side by side with
    a clear column between them (no part crosses it), so N searches' host round trips are one search's. Within a
    mask the order is `components`' (the last pixel's raster order is the same there)."""
    n, h, w = masks.shape
    if n == 0:
        return []
    wide = F.pad(masks, (0, 1)).permute(1, 0, 2).reshape(h, n * (w + 1))
    labels, ids = label(wide)
    if not len(ids):
        return [[] for _ in range(n)]
    # a label is 1 + the raster index of its part's last pixel: its column says whose mask it is
    owner = ((ids.long() - 1) % (n * (w + 1))) // (w + 1)
    tiles = labels.view(h, n, w + 1)[:, :, :w].permute(1, 0, 2)  # N×h×w, each mask's labels
    mine: list[list[int]] = [[] for _ in range(n)]
    for j, i in enumerate(owner.tolist()):
        mine[i].append(j)
    out: list[list[torch.Tensor]] = []
    for i, js in enumerate(mine):
        sel = ids[torch.tensor(js, dtype=torch.long, device=ids.device)]
        out.append(list(tiles[i][None] == sel[:, None, None]))
    return out


def hosts(
    mask: torch.Tensor, host: tuple[torch.Tensor, torch.Tensor]
) -> tuple[list[torch.Tensor], list[int], list[int], list[torch.Tensor]]:
    """(the components of `mask` as `components` gives them, each one's size, the size of the component of the
    host mask (`host`: its `label`) it overlaps most, the larger of those that tie (0 where the host mask is
    empty), and the components of the host mask), counted for every component at once with one round trip to the
    host: one overlap per pair of components was many per part."""
    host_labels, host_ids = host
    host_parts = list(host_labels[None] == host_ids[:, None, None]) if len(host_ids) else []
    labels, ids = label(mask)
    if not len(ids):
        return [], [], [], host_parts
    parts = list(labels[None] == ids[:, None, None])
    n, m = len(ids), len(host_ids)
    flat, host_flat = labels.flatten(), host_labels.flatten()
    # each pixel's component index (n, m: none), counted by scatter-adds (no size read back to the host)
    part = torch.where(flat > 0, torch.searchsorted(ids, flat), n)
    own = torch.zeros(n + 1, dtype=torch.long, device=mask.device).index_add_(0, part, torch.ones_like(part))[:n]
    if not m:
        return parts, own.tolist(), [0] * n, host_parts
    host = torch.where(host_flat > 0, torch.searchsorted(host_ids, host_flat), m)
    ones = torch.ones_like(host)
    sizes = torch.zeros(m + 1, dtype=torch.long, device=mask.device).index_add_(0, host, ones)[:m]
    joint = torch.zeros((n + 1) * (m + 1), dtype=torch.long, device=mask.device)
    joint = joint.index_add_(0, part * (m + 1) + host, ones).view(n + 1, m + 1)[:n, :m]
    # the most overlap, then the largest size: as max() over (overlap, size) pairs
    best = sizes[(joint * (sizes.max() + 1) + sizes[None]).argmax(1)]
    return parts, own.tolist(), best.tolist(), host_parts


def mask_box(mask: torch.Tensor, margin: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the box of a non-empty h×w bool mask grown by `margin`, within it (one host round trip)."""
    h, w = mask.shape
    ys, xs = torch.arange(h, device=mask.device), torch.arange(w, device=mask.device)
    rows, cols = mask.any(1), mask.any(0)
    ends = [ys.where(rows, h).min(), ys.where(rows, -1).max(), xs.where(cols, w).min(), xs.where(cols, -1).max()]
    top, bottom, left, right = torch.stack(ends).tolist()
    if bottom < 0:
        raise ValueError("an empty mask has no box")
    return max(0, top - margin), min(h, bottom + 1 + margin), max(0, left - margin), min(w, right + 1 + margin)


def running_median(x: torch.Tensor, k: int) -> torch.Tensor:
    """(T−k+1)×…: the median of each `k` consecutive entries of `x` along its first axis (T×…), as
    `x[i : i + k].median(0).values` gives it (the lower middle value for an even `k`), for every i at once: an
    odd–even transposition sort of the `k` shifted views, elementwise min and max only."""
    n = x.shape[0] - k + 1
    if n < 1:
        raise ValueError(f"a running median of {k} needs at least {k} entries, got {x.shape[0]}")
    # the network's comparators, and which of their two outputs the middle wire depends on (found backwards)
    net = [(j, *_NONE) for r in range(k) for j in range(r % 2, k - 1, 2)]
    needed = {(k - 1) // 2}
    for c in range(len(net) - 1, -1, -1):
        j = net[c][0]
        low, high = j in needed, j + 1 in needed
        net[c] = (j, low, high)
        if low or high:
            needed |= {j, j + 1}
    v = [x[j : j + n] for j in range(k)]
    for j, low, high in net:
        a, b = v[j], v[j + 1]
        if low:
            v[j] = torch.minimum(a, b)
        if high:
            v[j + 1] = torch.maximum(a, b)
    return v[(k - 1) // 2]


_NONE = (False, False)
