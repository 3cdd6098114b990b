"""`CudaExecutor`'s bookkeeping on CPU: staging, per-shape slots, LRU eviction (CUDA calls stubbed).

The CUDA-only parts (streams, pinned memory, graph capture) run for real in tests/gpu/; here torch's
CUDA entry points are replaced by CPU stand-ins so the data flow and the cache logic are checked in CI.
"""

from __future__ import annotations

import numpy as np

from cuda_stubs import stub_executor


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
    executor = stub_executor(forward, use_graphs=True, capacity=2, captured=captured)
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

    executor = stub_executor(forward, use_graphs=False)
    for seed in range(3):
        feed = _feed(1, 16, seed)
        assert np.array_equal(executor.run(feed), feed["image"] + feed["mask"])
    assert len(set(seen)) == 1 and executor.stats()["captures"] == 0
