"""Triton for real: `lama-deploy triton-serve` runs the nvidia-pytriton tritonserver on our repositories.

- `--repo-kind python` repository of the tiny model: 16 concurrent requests of several sizes (HTTP and gRPC,
  strategies direct/pad, crop, resize, empty-mask) answer byte-identical to `lama-deploy inpaint`; bad
  requests get error responses and the server keeps serving; SIGTERM to the command's pid stops it and its
  tritonserver.
- `--repo-kind ensemble`: the bundled server loads both python steps and refuses the model step for want of
  the onnxruntime / tensorrt backend (asserted by name); with the model step replaced by a python stand-in
  that runs the same ONNX through the project's backend, the whole ensemble answers byte-identical too.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from lama_deploy.errors import UserError
from lama_deploy.runtime import Inpainter
from lama_deploy.runtime.triton import image_repos as triton_repo, serve as triton_serve
from lama_deploy.runtime.options import InpaintOptions
from lama_deploy.scripts.commands import triton_serve as triton_serve_command

try:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException
except ImportError:  # the [triton] extra is part of [dev]; without it these tests cannot run
    httpclient = grpcclient = None


def _has_server() -> bool:
    try:
        triton_serve.find_tritonserver()
    except UserError:
        return False
    return True


needs_triton = pytest.mark.skipif(httpclient is None or not _has_server(),
                                  reason="needs tritonclient and a tritonserver: pip install 'lama-deploy[triton]'")

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
MAX_SIDE = 64  # small model range, so that crop and resize run too
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 60
#: (height, width, mask kind): direct, pad to the multiple, crop, resize, empty mask
CASES = [(37, 61, "box"), (24, 16, "box"), (48, 120, "small"), (100, 90, "large"), (30, 30, "empty"), (64, 64, "box")]


def _case(height: int, width: int, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    if kind == "box":
        mask[height // 4: height // 2, width // 3: width - 3] = 255
    elif kind == "small":
        mask[10:20, 90:100] = 200
    elif kind == "large":
        mask[5:95, 5:85] = rng.integers(1, 256, (90, 80), dtype=np.uint8)
    return image, mask


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "lama_deploy.scripts.cli", *args]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@contextmanager
def serving(repository: Path, log: Path, model: str = "lama") -> Iterator[tuple[str, str]]:
    """`lama-deploy triton-serve` on free loopback ports; yields (HTTP url, gRPC url) once `model` is ready,
    stops it with SIGTERM to its pid and checks that it and its tritonserver exited."""
    http_port, grpc_port, metrics_port = _free_ports(3)
    argv = _cli("triton-serve", "--repository", str(repository), "--http-port", str(http_port),
                "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port))
    with log.open("w") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert process.poll() is None, f"triton-serve exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            try:
                if client.is_model_ready(model):
                    break
            except Exception:  # not listening yet
                pass
            assert time.monotonic() < deadline, f"{model} not ready in {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        client.close()
        servers = _children(process.pid)
        assert len(servers) == 1, f"expected one tritonserver child, got {servers}"
        yield f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, f"triton-serve exited {code} after SIGTERM:\n{log.read_text()[-3000:]}"
    for pid in servers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _infer(protocol: str, url: str, image: np.ndarray, mask: np.ndarray, model: str = "lama",
           mask_type: str = "UINT8") -> np.ndarray:
    client_module = httpclient if protocol == "http" else grpcclient
    client = client_module.InferenceServerClient(url)  # one per call: the clients are not shared across threads
    inputs = [client_module.InferInput("image", list(image.shape), "UINT8"),
              client_module.InferInput("mask", list(mask.shape), mask_type)]
    inputs[0].set_data_from_numpy(image)
    inputs[1].set_data_from_numpy(mask)
    try:
        return client.infer(model, inputs).as_numpy("inpainted")
    finally:
        client.close()  # an open keep-alive connection would hold the server's shutdown to its exit timeout


def _check_concurrent(urls: tuple[str, str], reference: Inpainter, requests: int = 16) -> None:
    jobs = [(("http", "grpc")[i % 2], *_case(*CASES[i % len(CASES)], seed=i)) for i in range(requests)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda job: _infer(job[0], urls[job[0] == "grpc"], job[1], job[2]), jobs))
    for (protocol, image, mask), answer in zip(jobs, answers):
        expected = reference.inpaint(image, mask).array
        assert answer.dtype == np.uint8 and answer.shape == image.shape, protocol
        assert np.array_equal(answer, expected), f"{protocol} {image.shape}: {(answer != expected).sum()} bytes differ"


@pytest.fixture(scope="module")
def reference(tiny_onnx: Path) -> Iterator[Inpainter]:
    """The Inpainter `lama-deploy inpaint --model tiny.onnx --max-side 64` builds."""
    with Inpainter.from_path(tiny_onnx, max_side=MAX_SIDE) as inpainter:
        yield inpainter


@needs_triton
def test_python_repository_served_by_tritonserver(tiny_onnx: Path, tmp_path: Path, reference: Inpainter) -> None:
    repo = tmp_path / "repo"
    assert triton_repo_cli(tiny_onnx, repo, "python", "--instances", "2") == 0
    image, mask = _case(48, 120, "small", seed=99)  # the crop strategy
    Image.fromarray(image).save(tmp_path / "image.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    subprocess.run(_cli("inpaint", str(tmp_path / "image.png"), str(tmp_path / "mask.png"), "-o",
                        str(tmp_path / "cli.png"), "--model", str(tiny_onnx), "--max-side", str(MAX_SIDE)),
                   check=True, capture_output=True, timeout=120)
    with serving(repo, tmp_path / "server.log") as urls:
        for protocol, url in zip(("http", "grpc"), urls):  # literally the CLI's file
            assert np.array_equal(_infer(protocol, url, image, mask), np.asarray(Image.open(tmp_path / "cli.png")))
            client = [sys.executable, str(SCRIPTS / "triton_client.py"), str(tmp_path / "image.png"),
                      str(tmp_path / "mask.png"), "-o", str(tmp_path / f"{protocol}.png"), "--protocol", protocol,
                      "--url", url]
            subprocess.run(client, check=True, capture_output=True, timeout=60)
            assert (tmp_path / f"{protocol}.png").read_bytes() == (tmp_path / "cli.png").read_bytes()
        _check_concurrent(urls, reference)
        with pytest.raises(InferenceServerException, match="mask is 16x10 but the image is 61x37"):
            _infer("http", urls[0], _case(37, 61, "box", 0)[0], np.zeros((10, 16), np.uint8))
        with pytest.raises(InferenceServerException, match="mask.*FP32.*expects.*UINT8"):
            _infer("grpc", urls[1], *_case(37, 61, "box", 0)[:1], np.zeros((37, 61), np.float32), mask_type="FP32")
        with pytest.raises(InferenceServerException, match="unexpected shape for input 'image'"):  # Triton's own check
            _infer("http", urls[0], np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8))
        image, mask = _case(37, 61, "box", 5)  # still serving
        assert np.array_equal(_infer("grpc", urls[1], image, mask), reference.inpaint(image, mask).array)


def triton_repo_cli(model: Path, repo: Path, backend: str, *extra: str) -> int:
    from lama_deploy.scripts.commands import triton_repo as triton

    return triton.main(["--model", str(model), "--output", str(repo), "--repo-kind", backend, "--max-side",
                        str(MAX_SIDE), *extra])


# --- the ensemble ------------------------------------------------------------------------------------------

def _fake_engine(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from test_triton import _fake_engine as fake
    finally:
        sys.path.pop(0)
    return fake(folder)


@needs_triton
@pytest.mark.parametrize("kind", ["onnx", "engine"])
def test_bundled_server_refuses_the_ensemble_in_one_line(kind: str, tiny_onnx: Path, tmp_path: Path) -> None:
    """The bundled server has only the python backend: triton-serve reads the ensemble's configs and refuses
    before launching (exit 2, one line naming the missing backend and both ways out), not Triton's log lines."""
    model = tiny_onnx if kind == "onnx" else _fake_engine(tmp_path)
    repo = tmp_path / "repo"
    triton_repo.write_ensemble_repo(model, repo, options=InpaintOptions(max_side=MAX_SIDE))
    http_port, grpc_port, metrics_port = _free_ports(3)
    run = subprocess.run(_cli("triton-serve", "--repository", str(repo), "--http-port", str(http_port),
                              "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)),
                         capture_output=True, text=True, timeout=180)
    backend = {"onnx": "onnxruntime", "engine": "tensorrt"}[kind]
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and run.stdout == "", run.stderr[-2000:]
    assert lines[0].startswith("lama-deploy triton-serve: error: ") and f"no '{backend}' backend" in lines[0]
    assert "'lama_model'" in lines[0] and "--repo-kind python" in lines[0] and "nvcr.io/nvidia/tritonserver" in lines[0]


STAND_IN = '''"""Test stand-in for the model step: the raw ONNX through the project's ONNX Runtime backend."""
import os
import sys

sys.path[:0] = [p for p in os.environ.get("LAMA_PYTHONPATH", "").split(os.pathsep) if p]
import numpy as np
import triton_python_backend_utils as pb

from lama_deploy.runtime.backends import create_backend
from lama_deploy.runtime.triton.model import input_array, output_tensor


class TritonPythonModel:
    def initialize(self, args):
        self.backend = create_backend(os.path.join(args["model_repository"], args["model_version"], "model.onnx"))
        self.backend.activate()

    def execute(self, requests):
        answers = []
        for request in requests:
            feed = {n: input_array(pb.get_input_tensor_by_name(request, n)) for n in ("image", "mask")}
            out = self.backend.infer(feed)["inpainted"]
            answers.append(pb.InferenceResponse(output_tensors=[output_tensor(pb, "inpainted", out)]))
        return answers
'''


@needs_triton
@pytest.mark.slow
def test_ensemble_answers_byte_identical(tiny_onnx: Path, tmp_path: Path, reference: Inpainter) -> None:
    """The pre and post steps around a python stand-in for the ONNX Runtime step (absent from the bundled
    server): Triton's ensemble scheduler, the configs as written, and the steps' bytes."""
    repo = tmp_path / "repo"
    triton_repo.write_ensemble_repo(tiny_onnx, repo, kind="cpu", max_batch=4, options=InpaintOptions(max_side=MAX_SIDE))
    config = repo / "lama_model" / "config.pbtxt"
    config.write_text(config.read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    (repo / "lama_model" / "1" / "model.py").write_text(STAND_IN)
    with serving(repo, tmp_path / "server.log") as urls:
        _check_concurrent(urls, reference, requests=12)
        with pytest.raises(InferenceServerException, match="mask is 16x10 but the image is 61x37"):
            _infer("http", urls[0], _case(37, 61, "box", 0)[0], np.zeros((10, 16), np.uint8))
        image, mask = _case(100, 90, "large", 3)
        assert np.array_equal(_infer("http", urls[0], image, mask), reference.inpaint(image, mask).array)


def test_no_tritonserver_is_one_line(monkeypatch, tmp_path: Path, capsys) -> None:
    (tmp_path / "repo" / "lama").mkdir(parents=True)
    (tmp_path / "repo" / "lama" / "config.pbtxt").write_text('name: "lama"\n')
    monkeypatch.delenv(triton_serve.ENV_BINARY, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(triton_serve, "pytriton_root", lambda: None)
    assert triton_serve_command.main(["--repository", str(tmp_path / "repo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lama-deploy triton-serve: error: no tritonserver found") and len(err.splitlines()) == 1
    monkeypatch.setenv(triton_serve.ENV_BINARY, str(tmp_path / "absent"))
    assert triton_serve_command.main(["--repository", str(tmp_path / "repo")]) == 2
    assert "is not an executable file" in capsys.readouterr().err
