"""`CudaExecutor`'s bookkeeping on CPU: staging, per-shape slots, LRU eviction (CUDA calls stubbed).

The CUDA-only parts (streams, pinned memory, graph capture) run for real in tests/gpu/; here torch's
CUDA entry points are replaced by CPU stand-ins so the data flow and the cache logic are checked in CI.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np
import torch

from lama_deploy.runtime.backends.torch_cuda import CudaExecutor


class FakeGraph:
    """Replays the forward captured last (CPU stand-in for torch.cuda.CUDAGraph)."""

    def __init__(self) -> None:
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        self.output.copy_(self.forward(*self.inputs))


def fake_torch(captured: list) -> types.SimpleNamespace:
    def zeros(*shape, pin_memory=False, device=None):
        return torch.zeros(*shape)

    def graph(g, stream=None):
        captured.append(g)
        return contextlib.nullcontext()

    cuda = types.SimpleNamespace(
        Stream=lambda device=None: types.SimpleNamespace(wait_stream=lambda other: None, synchronize=lambda: None),
        stream=lambda s: contextlib.nullcontext(), device=lambda d: contextlib.nullcontext(),
        current_stream=lambda d=None: types.SimpleNamespace(wait_stream=lambda other: None),
        CUDAGraph=FakeGraph, graph=graph, synchronize=lambda d=None: None, empty_cache=lambda: None)
    return types.SimpleNamespace(zeros=zeros, device=torch.device, inference_mode=torch.inference_mode, cuda=cuda)


def _feed(batch, size, seed):
    rng = np.random.default_rng(seed)
    return {"image": rng.random((batch, 3, size, size), dtype=np.float32),
            "mask": (rng.random((batch, 1, size, size)) > 0.5).astype(np.float32)}


def test_slots_staging_and_lru_eviction_on_cpu_stand_ins():
    calls = []

    def forward(image, mask):
        calls.append(tuple(image.shape))
        return image * (1 - mask) + 0.5 * mask

    captured: list = []
    executor = CudaExecutor(fake_torch(captured), forward, "cpu", use_graphs=True, capacity=2)
    # Wire the fake graphs to the forward they captured (the real CUDAGraph records kernels instead).
    original = executor._capture

    def capture(slot):
        original(slot)
        slot.graph.forward, slot.graph.inputs, slot.graph.output = forward, (slot.inputs["image"], slot.inputs["mask"]), slot.output

    executor._capture = capture
    feeds = [_feed(1, 16, 0), _feed(2, 24, 1), _feed(1, 16, 2), _feed(1, 32, 3), _feed(2, 24, 4)]
    for feed in feeds:
        out = executor.run(feed)
        assert np.array_equal(out, feed["image"] * (1 - feed["mask"]) + 0.5 * feed["mask"])
    stats = executor.stats()
    # shapes: A, B, A (hit), C (evicts B), B (evicts A) -> 4 captures, 2 evictions, 2 cached
    assert (stats["captures"], stats["evictions"], stats["graphs_cached"]) == (4, 2, 2)
    assert list(executor.slots) == [(1, 32, 32), (2, 24, 24)]
    assert len(captured) == 4 and sum(g.replays for g in captured) == 5


def test_eager_mode_reuses_the_static_inputs():
    seen = []

    def forward(image, mask):
        seen.append(image.data_ptr())
        return image + mask

    executor = CudaExecutor(fake_torch([]), forward, "cpu", use_graphs=False)
    for seed in range(3):
        feed = _feed(1, 16, seed)
        assert np.array_equal(executor.run(feed), feed["image"] + feed["mask"])
    assert len(set(seen)) == 1 and executor.stats()["captures"] == 0
