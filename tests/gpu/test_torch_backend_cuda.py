"""The PyTorch backend on CUDA in every precision / graph mode (marker `gpu`; skipped without CUDA)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lama_deploy.runtime.backends.pytorch.backend import TorchBackend
from lama_deploy.runtime.backends.pytorch.precision import fp16_policies
from lama_deploy.runtime.inpainter import Inpainter
from lama_deploy.scripts.bench.gpu import hole_error
from lama_model.synthetic import sample_batch
from model_cache import cached_random_model

pytestmark = pytest.mark.gpu
MODES = [(p, g) for p in ("fp32", "fp16", "bf16") for g in (True, False)]


def _pair(h, w, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 5: w // 2] = 255
    return rgb, mask


def _feed(batch, size, seed=0):
    image, mask = sample_batch(batch, size, size, seed=seed)
    return {"image": np.ascontiguousarray(image, np.float32), "mask": np.ascontiguousarray(mask, np.float32)}


@pytest.mark.parametrize("precision, graphs", MODES)
def test_every_mode_keeps_outside_pixels_and_stays_close(precision, graphs):
    rgb, mask = _pair(90, 130)
    with Inpainter.from_random_weights("tiny", device="cuda", cuda_graphs="off") as reference:
        expected = np.asarray(reference.inpaint(rgb, mask).image).astype(int)
    with Inpainter.from_random_weights("tiny", device="cuda", precision=precision,
                                       cuda_graphs="on" if graphs else "off") as inpainter:
        first = np.asarray(inpainter.inpaint(rgb, mask).image)
        again = np.asarray(inpainter.inpaint(rgb, mask).image)
        facts = inpainter.backend.describe()
    assert facts["precision"] == precision and facts["cuda_graphs"] is graphs
    assert facts.get("captures", 0) == (1 if graphs else 0)
    outside = mask == 0
    assert np.array_equal(first[outside], rgb[outside]) and np.array_equal(first, again)
    limit = {"fp32": 0.05, "fp16": 1.0, "bf16": 4.0}[precision]  # levels of 255; fp32: graph == eager
    assert np.abs(first.astype(int) - expected)[~outside].mean() <= limit


def test_graph_replay_equals_eager_fp32():
    model = cached_random_model("tiny", seed=0)
    feeds = [_feed(1, 64), _feed(2, 96, seed=1), _feed(1, 64, seed=2)]
    with TorchBackend(model, device="cuda", cuda_graphs=False) as eager:
        expected = [eager.infer(f)["inpainted"] for f in feeds]
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", cuda_graphs=True) as graphs:
        got = [graphs.infer(f)["inpainted"] for f in feeds]
        assert graphs.describe()["captures"] == 2  # one graph per (batch, H, W), reused for the third call
    assert max(np.abs(a - b).max() for a, b in zip(got, expected)) <= 1e-6


def test_graph_cache_evicts_least_recent_and_recaptures():
    feeds = {size: _feed(1, size, seed=size) for size in (48, 64, 80)}
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", graph_cache=2) as backend:
        first = {size: backend.infer(f)["inpainted"] for size, f in feeds.items()}
        again = backend.infer(feeds[48])["inpainted"]
        stats = backend.describe()
    assert stats["evictions"] == 2 and stats["captures"] == 4 and stats["graphs_cached"] == 2
    assert np.abs(again - first[48]).max() <= 1e-6


def test_steady_state_allocates_nothing_on_the_device():
    feed = _feed(2, 64)
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", cuda_graphs=True) as backend:
        backend.infer(feed)
        before = torch.cuda.memory_stats()["allocation.all.allocated"]
        for _ in range(3):
            backend.infer(feed)
        after = torch.cuda.memory_stats()["allocation.all.allocated"]
    assert after == before


def test_concurrent_calls_on_one_backend_are_serialised_correctly():
    feeds = [_feed(1, 64, seed=s) for s in range(3)] + [_feed(2, 48, seed=9)]
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", precision="fp16") as backend:
        expected = [backend.infer(f)["inpainted"] for f in feeds]
        errors: list[float] = []

        def worker(offset):
            for i in range(8):
                k = (i + offset) % len(feeds)
                errors.append(float(np.abs(backend.infer(feeds[k])["inpainted"] - expected[k]).max()))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert len(errors) == 32 and max(errors) == 0.0


@pytest.fixture(scope="module")
def hot_big_lama():
    return cached_random_model("big-lama", seed=0, trained_like=True)


@pytest.mark.parametrize("size", [512, 768, 1024, 2048])
def test_hot_weights_fp16_policies_finite_and_within_one_level(hot_big_lama, size):
    """Trained-like activations: plain fp16 overflows; the fp16 policies must stay finite and <= 1/255."""
    import copy

    feed = _feed(1, size, seed=3)
    with TorchBackend(copy.deepcopy(hot_big_lama), device="cuda", cuda_graphs=False) as fp32:
        reference = fp32.infer(feed)["inpainted"]
    # The backend runs torch.fft (cuFFT), which refuses `fourier-scaled` (tested on CPU); the scaled policy's
    # GPU numbers come from the DFT-as-matmul rows of the benchmark.
    for policy in [p for p in fp16_policies() if p != "fourier-scaled"]:
        with TorchBackend(copy.deepcopy(hot_big_lama), device="cuda", precision="fp16", fp16_policy=policy,
                          cuda_graphs=size <= 1024) as fp16:
            output = fp16.infer(feed)["inpainted"]
        error = hole_error(output, reference, feed["mask"])
        outside = np.broadcast_to(feed["mask"] == 0, output.shape)
        assert error["non_finite"] == 0.0, (policy, error)
        assert error["hole_mean_255"] <= 1.0, (policy, error)
        assert np.array_equal(output[outside], feed["image"][outside]), policy


def test_cudnn_autotuner_candidate_gives_the_same_answer():
    """The unmeasured fix candidate for the fp32 batch anomaly: cuDNN's autotuner around each forward. Same
    output (fp32, TF32 off) and the process-wide flag restored after each call."""
    feed = _feed(4, 64)
    saved = torch.backends.cudnn.benchmark
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda") as plain:
        expected = plain.infer(feed)["inpainted"]
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", cudnn_benchmark=not saved) as tuned:
        got = tuned.infer(feed)["inpainted"]
        assert tuned.describe()["cudnn_benchmark"] is (not saved)
    assert torch.backends.cudnn.benchmark is saved
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("graphs", [True, False])
def test_compiled_backend_matches_eager_with_and_without_cuda_graphs(graphs):
    """torch.compile (inductor default) inside the backend, alone and captured in its CUDA graphs: fp32 output
    within 1e-4 of eager, the compile counted in the first call of the shape."""
    torch._dynamo.reset()
    feed = _feed(1, 64)
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", cuda_graphs=False) as eager:
        expected = eager.infer(feed)["inpainted"]
    with TorchBackend(cached_random_model("tiny", seed=0), device="cuda", cuda_graphs=graphs, compile="default") as backend:
        got = backend.infer(feed)["inpainted"]
        again = backend.infer(feed)["inpainted"]
        facts = backend.describe()
    assert facts["compile"] == "default" and facts["first_call_s"]["1x3x64x64"] > 0
    assert facts.get("captures", 0) == (1 if graphs else 0)
    assert np.abs(got - expected).max() <= 1e-4 and np.array_equal(got, again)
