"""TensorRT backend: engine checks and errors, and its data path on CPU fakes; real inference needs a GPU."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from lama_deploy import contract as C
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.backends import BackendError
from lama_deploy.runtime.backends import trt_backend as tb
from lama_deploy.runtime.backends.cuda_memory import DeviceBuffer, load_cuda_runtime
from lama_deploy.runtime.trt_import import TensorRTUnavailable, import_tensorrt, make_logger

import fake_tensorrt as fake  # helper module beside these tests (pytest puts this folder on sys.path)

GPU_REASON = "needs an NVIDIA GPU and TensorRT runtime"


def _importable(name: str) -> bool:
    try:
        import_tensorrt(name)
        return True
    except TensorRTUnavailable:
        return False


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0


def _has_cudart() -> bool:
    try:
        load_cuda_runtime()
        return True
    except Exception:
        return False


HAS_TRT = _importable("tensorrt") or _importable("tensorrt_rtx")
CAN_RUN_TRT = HAS_TRT and _has_gpu() and _has_cudart()


class Stats:
    """Reads the stand-in libcudart's counters."""

    def __init__(self, path) -> None:
        self.path = path

    def __getattr__(self, name):
        return fake.cuda_stats(self.path)[name]


@pytest.fixture
def fake_gpu(monkeypatch, fake_cudart_path):
    """The backend on a fake TensorRT (10.x API unless said) and the stand-in libcudart; returns a setter for
    the engine that gives the library's counters."""
    monkeypatch.setenv("LAMA_CUDART", str(fake_cudart_path))

    def use(engine, generation="10"):
        monkeypatch.setattr("lama_deploy.runtime.trt_import.import_tensorrt",
                            lambda flavour=None: fake.make_trt(engine, generation))
        return Stats(fake_cudart_path)

    return use


@pytest.mark.parametrize("generation", sorted(fake.GENERATIONS))
def test_data_path_through_device_buffers(fake_gpu, tmp_path, generation):
    """TensorRT 8.5 (JetPack 5), 10.x and 11.x API surfaces; libcudart through ctypes, no cuda-python."""
    engine = fake.ENGINES[generation](fake.Spec(generation=generation))
    cuda = fake_gpu(engine, generation)
    before = fake.cuda_stats(cuda.path)
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized")
    backend = tb.TensorRTBackend(path, device="cuda:1")
    with backend:
        assert cuda.device == 1
        profile = backend.profile
        assert (profile.min_height, profile.max_height, profile.max_width, profile.max_batch) == (16, 64, 96, 4)
        assert (profile.opt_height, profile.opt_width) == (64, 64)
        assert backend.describe()["device_memory_bytes"] == 3 << 20
        rng = np.random.default_rng(0)
        for shape in [(1, 16, 16), (2, 32, 48), (1, 16, 24)]:
            n, h, w = shape
            image = rng.random((n, 3, h, w), dtype=np.float32)
            mask = (rng.random((n, 1, h, w)) > 0.5).astype(np.float32)
            out = backend.infer({C.IMAGE: image, C.MASK: mask})[C.OUTPUT]
            np.testing.assert_array_equal(out, image * (1 - mask) + 0.25 * mask)
        # 3 tensors allocated for the first shape, grown once for the larger, reused for the smaller after it
        assert cuda.mallocs - before["mallocs"] == 6 and cuda.last_malloc_bytes == 2 * 3 * 32 * 48 * 4
        assert cuda.copies - before["copies"] == 3 * 3  # two uploads and one download per call
        with pytest.raises(BackendError, match="outside the engine's profile"):
            backend.infer({C.IMAGE: np.zeros((1, 3, 128, 128), np.float32), C.MASK: np.zeros((1, 1, 128, 128), np.float32)})
    assert (cuda.live, cuda.host_live, cuda.streams) == (0, 0, 0)  # everything freed on deactivate


def test_no_cuda_python_is_imported(fake_gpu, tmp_path, monkeypatch):
    """The data path never touches cuda-python: with `cuda` unimportable it still runs."""
    import builtins

    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        if name == "cuda" or name.startswith("cuda."):
            raise ImportError("cuda-python is blocked in this test")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    fake_gpu(fake.Engine11(fake.Spec(generation="11")), "11")
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized")
    image = np.full((1, 3, 16, 16), 0.5, np.float32)
    mask = np.ones((1, 1, 16, 16), np.float32)
    with tb.TensorRTBackend(path) as backend:
        out = backend.infer({C.IMAGE: image, C.MASK: mask})[C.OUTPUT]
    assert float(out.max()) == 0.25 and float(out.min()) == 0.25


def test_fp16_io_engine_is_fed_in_half_precision(fake_gpu, tmp_path):
    spec = fake.Spec(generation="11", dtypes={C.IMAGE: "HALF", C.MASK: "HALF", C.OUTPUT: "HALF"})
    cuda = fake_gpu(fake.Engine11(spec), "11")
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized")
    image = np.full((1, 3, 16, 16), 0.5, np.float32)
    mask = np.zeros((1, 1, 16, 16), np.float32)
    with tb.TensorRTBackend(path) as backend:
        out = backend.infer({C.IMAGE: image, C.MASK: mask})[C.OUTPUT]
    assert out.dtype == np.float32 and float(out.mean()) == 0.5
    assert cuda.last_malloc_bytes == 3 * 16 * 16 * 2  # half-precision output buffer


def test_cuda_errors_are_one_line(fake_gpu, tmp_path):
    cuda = fake_gpu(fake.Engine10(fake.Spec()), "10")
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized")
    with tb.TensorRTBackend(path) as backend:
        fake.fail_next_malloc(cuda.path)
        with pytest.raises(RuntimeError) as excinfo:
            backend.infer({C.IMAGE: np.zeros((1, 3, 16, 16), np.float32), C.MASK: np.zeros((1, 1, 16, 16), np.float32)})
    assert str(excinfo.value) == "CUDA error during cudaMalloc(3072): cudaErrorMemoryAllocation (2)"


def test_missing_libcudart_is_one_line(monkeypatch, tmp_path):
    from lama_deploy.runtime.backends import cuda_memory

    monkeypatch.setenv("LAMA_CUDART", str(tmp_path / "nowhere" / "libcudart.so"))
    with pytest.raises(cuda_memory.CudaUnavailable) as excinfo:
        load_cuda_runtime()
    message = str(excinfo.value)
    assert "\n" not in message and "libcudart" in message and "nvidia-cuda-runtime-cu12" in message


def test_engine_older_than_8_5_is_refused_in_one_line(fake_gpu, tmp_path):
    class Bindings84:  # what TensorRT 8.4 had: the bindings API only
        num_bindings = 3
        get_binding_name = binding_is_input = create_execution_context = None

    fake_gpu(Bindings84(), "8.5")
    path = tmp_path / "old.engine"
    path.write_bytes(b"serialized")
    with pytest.raises(BackendError, match="needs TensorRT 8.5 or newer") as excinfo:
        tb.TensorRTBackend(path).load_engine()
    assert "\n" not in str(excinfo.value)


def test_real_tensorrt_rtx_has_every_call_the_backend_makes():
    """The installed TensorRT-RTX module (no GPU needed): the classes have the methods/properties used."""
    try:
        trt = import_tensorrt("tensorrt_rtx")
    except TensorRTUnavailable as exc:
        pytest.skip(f"tensorrt_rtx not importable: {exc}")
    engine_missing = [c for c in tb.ENGINE_CALLS if not hasattr(trt.ICudaEngine, c)]
    context_missing = [c for c in tb.CONTEXT_CALLS if not hasattr(trt.IExecutionContext, c)]
    assert engine_missing == [] and context_missing == []
    assert hasattr(trt.ICudaEngine, "device_memory_size_v2") or hasattr(trt.ICudaEngine, "device_memory_size")
    assert tb.numpy_dtype(trt.DataType.HALF) is np.float16 and tb.numpy_dtype(trt.DataType.FLOAT) is np.float32
    assert trt.TensorIOMode.INPUT != trt.TensorIOMode.OUTPUT


def test_engine_profile_drives_the_inpainter_strategy(fake_gpu, tmp_path):
    fake_gpu(fake.TensorEngine())
    path = tmp_path / "m.engine"
    path.write_bytes(b"serialized")
    (tmp_path / "m.engine.json").write_text(json.dumps({"lama": {"lama.weights": "random weights (seed 0)"}, "precision": "fp16"}))
    rgb = np.random.default_rng(1).integers(0, 256, (100, 150, 3), dtype=np.uint8)
    mask = np.zeros((100, 150), np.uint8)
    mask[40:50, 60:80] = 255
    with Inpainter.from_path(path) as inpainter:
        info = inpainter.info()
        assert info["backend"] == "tensorrt" and info["random_weights"] and info["precision"] == "fp16"
        assert info["profile"]["max"] == {"N": 4, "H": 64, "W": 96} and info["api"].startswith("tensors")
        result = inpainter.inpaint(rgb, mask)
        small = inpainter.inpaint(rgb[:8, :8], mask[:8, :8] | 1)
    assert result.strategy == "window" and small.strategy == "pad"
    out = np.asarray(result.image)
    np.testing.assert_array_equal(out[mask == 0], rgb[mask == 0])
    assert (out[mask > 0] == 63).all()  # the fake engine writes 0.25 into the hole: 63.75 truncated


def test_engine_that_is_not_this_model_is_refused(fake_gpu, tmp_path):
    fake_gpu(fake.TensorEngine(names=("input", "output")))
    path = tmp_path / "other.plan"
    path.write_bytes(b"serialized")
    with pytest.raises(BackendError) as excinfo:
        Inpainter.from_path(path)
    assert "is not a lama-deploy inpainting model" in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_failed_deserialization_is_explained(fake_gpu, tmp_path):
    fake_gpu(None)
    path = tmp_path / "bad.engine"
    path.write_bytes(b"garbage")
    with pytest.raises(BackendError, match="not a TensorRT engine"):
        Inpainter.from_path(path)
    path.write_bytes(b"")
    with pytest.raises(BackendError, match="is empty"):
        Inpainter.from_path(path)


def test_without_tensorrt_the_error_says_how_to_install(monkeypatch, tmp_path):
    def unavailable(flavour=None):
        raise TensorRTUnavailable("TensorRT is not available; install it with `pip install tensorrt`")

    monkeypatch.setattr("lama_deploy.runtime.trt_import.import_tensorrt", unavailable)
    path = tmp_path / "m.engine"
    path.write_bytes(b"x")
    with pytest.raises(BackendError, match="pip install tensorrt"):
        Inpainter.from_path(path)


@pytest.mark.parametrize("messages, expected", [
    (["IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion header.magicTag failed)"],
     "not a TensorRT engine"),
    (["Error Code 1: Cuda Runtime (cudaError 35: CUDA driver version is insufficient for CUDA runtime version)"],
     "no usable NVIDIA GPU"),
    (["The engine plan file is generated on an incompatible device, expecting compute capability 8.9"], "another GPU"),
    ([], "TensorRT gave no reason"),
])
def test_explain_load_failure(messages, expected):
    assert expected in tb.explain_load_failure(messages)


def test_sidecar_weights_label_is_read_as_the_builder_writes_it(tmp_path):
    engine = tmp_path / "m.engine"
    assert tb.read_sidecar(engine) == {}
    (tmp_path / "m.engine.json").write_text('{"lama": {"lama.weights": "checkpoint big-lama.ckpt"}}')
    assert tb.sidecar_weights(tb.read_sidecar(engine)) == "checkpoint big-lama.ckpt"
    (tmp_path / "m.engine.json").write_text("{not json")
    assert tb.read_sidecar(engine) == {}  # a broken sidecar is ignored, not fatal


def test_device_buffer_grows_only_for_larger_tensors(fake_cudart_path, monkeypatch):
    monkeypatch.setenv("LAMA_CUDART", str(fake_cudart_path))
    before = fake.cuda_stats(fake_cudart_path)
    buffer = DeviceBuffer(load_cuda_runtime())
    first = buffer.ensure(100)
    assert buffer.ensure(60) == first and buffer.ensure(100) == first
    buffer.ensure(400)
    after = fake.cuda_stats(fake_cudart_path)
    assert after["mallocs"] - before["mallocs"] == 2 and after["last_malloc_bytes"] == 400
    buffer.free()
    assert fake.cuda_stats(fake_cudart_path)["live"] == before["live"] and buffer.nbytes == 0


@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT or TensorRT-RTX importable (pip install tensorrt-rtx-cu13)")
def test_real_tensorrt_refuses_a_corrupt_engine_in_one_line(tmp_path):
    path = tmp_path / "corrupt.engine"
    path.write_bytes(b"not an engine at all" * 64)
    with pytest.raises(BackendError) as excinfo:
        tb.TensorRTBackend(path).load_engine()
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"cannot load TensorRT engine {path}")
    assert "not a TensorRT engine" in message or "no usable NVIDIA GPU" in message


def _build_engine(trt, onnx_path, engine_path):
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), logger.errors
    config = builder.create_builder_config()
    if not CAN_RUN_TRT and hasattr(trt, "ComputeCapability"):  # TensorRT-RTX builds ahead of time without a GPU
        config.num_compute_capabilities = 1
        config.set_compute_capability(trt.ComputeCapability.SM89, 0)
    profile = builder.create_optimization_profile()
    for name, channels in ((C.IMAGE, 3), (C.MASK, 1)):
        profile.set_shape(name, (1, channels, 16, 16), (1, channels, 64, 64), (2, channels, 128, 128))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    assert serialized is not None, logger.errors
    engine_path.write_bytes(bytes(serialized))


@pytest.mark.skipif(CAN_RUN_TRT or not _importable("tensorrt_rtx"),
                    reason="checks the no-GPU message; needs TensorRT-RTX (ahead-of-time build) and no NVIDIA GPU")
def test_real_engine_without_a_gpu_says_so(tmp_path, tiny_onnx):
    trt = import_tensorrt("tensorrt_rtx")
    engine_path = tmp_path / "tiny.engine"
    _build_engine(trt, tiny_onnx, engine_path)
    with pytest.raises(BackendError, match="no usable NVIDIA GPU") as excinfo:
        tb.TensorRTBackend(engine_path, flavour="tensorrt_rtx").load_engine()
    assert "\n" not in str(excinfo.value)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not CAN_RUN_TRT, reason=GPU_REASON)
def test_tensorrt_matches_onnxruntime_on_a_gpu(tmp_path, tiny_onnx):
    trt = import_tensorrt()
    engine_path = tmp_path / "tiny.engine"
    _build_engine(trt, tiny_onnx, engine_path)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    mask = np.zeros((50, 70), np.uint8)
    mask[10:30, 20:50] = 255
    with Inpainter.from_path(engine_path) as trt_inpainter, Inpainter.from_path(tiny_onnx, device="cpu") as ort_inpainter:
        a = np.asarray(trt_inpainter.inpaint(rgb, mask).image).astype(int)
        b = np.asarray(ort_inpainter.inpaint(rgb, mask).image).astype(int)
        batch = trt_inpainter.inpaint_batch([rgb, rgb], [mask, mask])
        big = trt_inpainter.inpaint(np.tile(rgb, (4, 4, 1)), np.tile(mask, (4, 4)))
    assert np.abs(a - b).max() <= 2  # TF32 / kernel choice may move a level
    assert all((np.asarray(r.image).astype(int) == a).mean() > 0.99 for r in batch)
    assert big.strategy in ("window", "resize")
