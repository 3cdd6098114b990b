"""The PyTorch backend's CUDA data path: pinned staging, one stream, and captured CUDA graphs.

Per (batch, height, width) the backend keeps a `Slot`: static device inputs, pinned host buffers for
the inputs and the output, and (with graphs on) one `torch.cuda.CUDAGraph` captured from the model on
those static inputs. A call copies the numpy inputs into the pinned buffers, uploads them with
non-blocking copies on the backend's own stream, replays the graph (or runs eager), downloads the
output non-blocking into pinned memory and synchronises that stream once. In the steady state nothing
is allocated on the device for a shape already seen, and the launch overhead of ~1000 kernels per
forward (which dominates eager big-lama at 512x512) is paid once at capture.

Slots live in a bounded least-recently-used cache; evicting one frees its graph's private memory pool.
One lock per executor serialises calls: a graph's static buffers belong to one call at a time (the
server's workers each own a backend, so they never wait on each other's lock).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from lama_deploy import contract as C

#: Untimed eager runs on a side stream before capture (the PyTorch docs' recipe; cuDNN/cuBLAS pick their
#: algorithms and allocate workspaces here, not inside the graph).
WARMUP_RUNS = 2


class Slot:
    """Static device inputs, pinned host staging and (optionally) a captured graph for one shape."""

    def __init__(self, torch: Any, shape: tuple[int, int, int], device: Any) -> None:
        batch, height, width = shape
        self.inputs = {name: torch.zeros((batch, C.CHANNELS[name], height, width), device=device)
                       for name in C.INPUT_NAMES}
        self.host_inputs = {name: torch.zeros(t.shape, pin_memory=True) for name, t in self.inputs.items()}
        self.host_output = torch.zeros((batch, C.CHANNELS[C.OUTPUT], height, width), pin_memory=True)
        self.graph: Any = None
        self.output: Any = None      # the graph's static output (graphs) or the last eager output


class CudaExecutor:
    """Runs `forward(image, mask)` on CUDA for numpy feeds, with or without CUDA graphs."""

    def __init__(self, torch: Any, forward: Callable[[Any, Any], Any], device: str, use_graphs: bool,
                 capacity: int = 8) -> None:
        self.torch = torch
        self.forward = forward
        self.device = torch.device(device)
        self.use_graphs = use_graphs
        self.capacity = capacity
        self.stream = torch.cuda.Stream(device=self.device)
        self.slots: OrderedDict[tuple[int, int, int], Slot] = OrderedDict()
        self.lock = threading.Lock()
        self.captures = 0
        self.evictions = 0

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        image = feed[C.IMAGE]
        shape = (image.shape[0], image.shape[2], image.shape[3])
        with self.lock:
            slot = self._slot(shape)
            torch = self.torch
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream), torch.inference_mode():
                for name in C.INPUT_NAMES:
                    slot.host_inputs[name].numpy()[...] = feed[name]
                    slot.inputs[name].copy_(slot.host_inputs[name], non_blocking=True)
                if slot.graph is not None:
                    slot.graph.replay()
                else:
                    slot.output = self.forward(slot.inputs[C.IMAGE], slot.inputs[C.MASK])
                slot.host_output.copy_(slot.output, non_blocking=True)
            self.stream.synchronize()
            return slot.host_output.numpy().copy()

    def _slot(self, shape: tuple[int, int, int]) -> Slot:
        slot = self.slots.get(shape)
        if slot is not None:
            self.slots.move_to_end(shape)
            return slot
        while len(self.slots) >= self.capacity:
            self._evict()
        slot = Slot(self.torch, shape, self.device)
        if self.use_graphs:
            self._capture(slot)
        self.slots[shape] = slot
        return slot

    def _capture(self, slot: Slot) -> None:
        """Warm up on a side stream, then capture one forward into a graph with its own memory pool."""
        torch = self.torch
        with torch.cuda.device(self.device), torch.inference_mode():
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    self.forward(slot.inputs[C.IMAGE], slot.inputs[C.MASK])
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=side):
                slot.output = self.forward(slot.inputs[C.IMAGE], slot.inputs[C.MASK])
            torch.cuda.synchronize(self.device)
        slot.graph = graph
        self.captures += 1

    def _evict(self) -> None:
        _, slot = self.slots.popitem(last=False)
        slot.graph = slot.output = None
        self.evictions += 1
        self.torch.cuda.empty_cache()  # return the evicted graph's pool to the driver

    def close(self) -> None:
        with self.lock:
            self.slots.clear()
        self.torch.cuda.empty_cache()

    def stats(self) -> dict[str, Any]:
        return {"graphs_cached": sum(s.graph is not None for s in self.slots.values()), "captures": self.captures,
                "evictions": self.evictions, "graph_cache_size": self.capacity}
