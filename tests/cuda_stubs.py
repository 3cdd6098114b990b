"""CPU stand-ins for the CUDA entry points `CudaExecutor` uses, so its data flow runs in CI without a GPU."""

from __future__ import annotations

import contextlib
import types
from typing import Any, Callable

import torch

from lama_deploy.runtime.backends.pytorch.cuda import CudaExecutor


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


def stub_executor(forward: Callable, use_graphs: bool, capacity: int = 8, captured: list | None = None) -> Any:
    """A `CudaExecutor` on CPU stand-ins whose fake graphs replay the forward they captured."""
    captured = [] if captured is None else captured
    executor = CudaExecutor(fake_torch(captured), forward, "cpu", use_graphs=use_graphs, capacity=capacity)
    original = executor._capture

    def capture(slot):
        original(slot)
        slot.graph.forward, slot.graph.inputs = forward, (slot.inputs["image"], slot.inputs["mask"])
        slot.graph.output = slot.output

    executor._capture = capture
    return executor
