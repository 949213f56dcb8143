"""`vidpipe.models.graphs.Graphed`: a function's CUDA work replayed from one graph per input shape."""

from __future__ import annotations

import pytest
import torch

from vidpipe.models.graphs import Graphed


def test_inputs_off_cuda_run_the_function_directly():
    calls = []
    g = Graphed(lambda x: calls.append(x.shape) or x * 2)
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert torch.equal(g(x), x * 2) and torch.equal(g(x), x * 2)
    assert len(calls) == 2 and g.shapes() == []  # no graph on CPU: every call is a real one


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_replays_match_direct_calls_per_shape_and_outputs_stay_the_callers():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).to(dev)
    calls = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return torch.relu(conv(x)) * 2 + 1  # per frame: batches are replayed a frame at a time

    g = Graphed(fn, max_shapes=2)
    a1, a2 = torch.rand(1, 3, 20, 30, device=dev), torch.rand(1, 3, 20, 30, device=dev)
    b = torch.rand(2, 3, 10, 12, device=dev)
    with torch.inference_mode():
        out1 = g(a1)
        assert len(calls) == 2  # one warm-up run, one captured; replays run no Python
        out2 = g(a2)
        g(b)
        assert len(calls) == 4  # the two frames of `b` share one graph
        torch.testing.assert_close(out1, fn(a1))
        torch.testing.assert_close(out2, fn(a2))
        assert not torch.equal(out1, out2)  # the first output was copied out, not overwritten by the second
        torch.testing.assert_close(g(b), fn(b))
        assert g.shapes() == [(1, 3, 20, 30), (1, 3, 10, 12)]
        before = len(calls)
        g(torch.rand(1, 3, 8, 8, device=dev))  # a third shape: the least recently used one is dropped
        assert g.shapes() == [(1, 3, 10, 12), (1, 3, 8, 8)] and len(calls) == before + 2
        g.release()
        assert g.shapes() == []
        torch.testing.assert_close(g(b), fn(b))  # captured again
