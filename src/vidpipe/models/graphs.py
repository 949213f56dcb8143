"""Replay a network's GPU work from CUDA graphs, one per input shape.

Why: the fused RRDBNet (x4plus) launches ~560 kernels a frame from Python. Launching them costs ~84 ms of CPU a
540p frame on the H100 machine, more than the GPU needs to run them, so the GPU idles between kernels. A CUDA
graph captured once per input shape replays all of them with one launch.

Batches are replayed a frame at a time through a graph captured for one frame: batching adds nothing to these
convolution-bound nets (GPU-NOTES), and a graph per batch size would be captured again for every size the
scheduler and the clip's last batch produce. A captured graph owns its input, output and intermediate buffers (a
private memory pool), so each shape kept costs the memory of one forward pass; `max_shapes` bounds that (tiling
makes a few shapes: full tiles and edge pieces). Outputs are copied out of the graph's buffer, so a caller may
keep them across calls.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

Key = tuple[tuple[int, ...], tuple[int, ...], torch.dtype, torch.device]


@dataclass(slots=True)
class _Captured:
    graph: torch.cuda.CUDAGraph
    input: torch.Tensor
    output: torch.Tensor


class Graphed:
    """`fn` (a tensor → tensor function doing only CUDA work, e.g. a fused network) replayed from CUDA graphs.

    The first call with a new input shape runs `fn` once outside any graph (Triton compiles and autotunes there,
    which a capture cannot hold), then captures a second run; later calls copy the input in, replay, and copy the
    output out. Inputs off CUDA, and calls while another capture is under way, run `fn` directly."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, max_shapes: int = 4) -> None:
        self.fn = fn
        self.max_shapes = max_shapes
        self._graphs: OrderedDict[Key, _Captured] = OrderedDict()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda or torch.cuda.is_current_stream_capturing():
            return self.fn(x)
        out: torch.Tensor | None = None
        for i in range(x.shape[0]):
            cap = self._graph_for(x[i : i + 1])
            cap.input.copy_(x[i : i + 1])
            cap.graph.replay()
            if out is None:
                o = cap.output  # the batch keeps the layout of the net's output (planar or channels-last)
                planar = o.is_contiguous() or not o.is_contiguous(memory_format=torch.channels_last)
                fmt = torch.contiguous_format if planar else torch.channels_last
                out = torch.empty((x.shape[0], *o.shape[1:]), dtype=o.dtype, device=x.device, memory_format=fmt)
            out[i : i + 1].copy_(cap.output)
        assert out is not None, "an empty batch"
        return out

    def _graph_for(self, x: torch.Tensor) -> _Captured:
        key: Key = (tuple(x.shape), tuple(x.stride()), x.dtype, x.device)
        cap = self._graphs.get(key)
        if cap is None:
            cap = self._capture(x)
            self._graphs[key] = cap
            while len(self._graphs) > self.max_shapes:  # the least recently used shape gives its memory back
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return cap

    def _capture(self, x: torch.Tensor) -> _Captured:
        # the graph's own input buffer: the caller copies each frame into it before a replay (the first one too)
        static = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        # warm up on a side stream, as capture requires: compiles, autotunes, settles the allocator (on
        # whatever the buffer holds: only the captured launches matter, not this run's output)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            self.fn(static)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(static)
        log.debug("captured a CUDA graph for input %s", tuple(x.shape))
        return _Captured(graph, static, out)

    def release(self) -> None:
        """Drop every captured graph and its memory (the upscale stage does this when its tile changes)."""
        self._graphs.clear()

    def shapes(self) -> list[tuple[int, ...]]:
        """The input shapes with a captured graph, least recently used first."""
        return [k[0] for k in self._graphs]


class GraphedCall:
    """`fn(*tensors) → tensor` (CUDA work only) replayed from a CUDA graph per tuple of input shapes, whole
    batches at a time: for networks that gain from batching (RIFE's pairs), unlike `Graphed`'s frame-by-frame
    replay. The output is copied out of the graph's buffer, so callers may keep it across calls."""

    def __init__(self, fn: Callable[..., torch.Tensor], *, max_shapes: int = 2) -> None:
        self.fn = fn
        self.max_shapes = max_shapes
        self._graphs: OrderedDict[tuple[Key, ...], tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]]
        self._graphs = OrderedDict()

    def __call__(self, *xs: torch.Tensor) -> torch.Tensor:
        if not all(x.is_cuda for x in xs) or torch.cuda.is_current_stream_capturing():
            return self.fn(*xs)
        key = tuple((tuple(x.shape), tuple(x.stride()), x.dtype, x.device) for x in xs)
        cap = self._graphs.get(key)
        if cap is None:
            cap = self._capture(xs)
            self._graphs[key] = cap
            while len(self._graphs) > self.max_shapes:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        graph, inputs, out = cap
        for buf, x in zip(inputs, xs, strict=True):
            buf.copy_(x)
        graph.replay()
        return out.clone(memory_format=torch.preserve_format)

    def _capture(
        self, xs: tuple[torch.Tensor, ...]
    ) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]:
        inputs = tuple(torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device) for x in xs)
        for buf, x in zip(inputs, xs, strict=True):
            buf.copy_(x)  # real frames for the warm-up: Triton autotunes on them
        device = xs[0].device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self.fn(*inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.fn(*inputs)
        log.debug("captured a CUDA graph for inputs %s", [tuple(x.shape) for x in xs])
        return graph, inputs, out

    def release(self) -> None:
        """Drop every captured graph and its memory."""
        self._graphs.clear()
