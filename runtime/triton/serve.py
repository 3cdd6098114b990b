"""`lama-deploy triton-serve`: run a real Triton Inference Server on a repository, in the foreground.

    lama-deploy triton-serve --repository repo --http-port 8000 --grpc-port 8001 --metrics-port 8002

The `tritonserver` binary is found via `$LAMA_TRITONSERVER`, then `PATH`, then the one bundled in the
`nvidia-pytriton` wheel (`pip install 'lama-deploy[triton]'`). For that bundled server this command prepares
what Triton's python backend needs to run python-backend models (`--repo-kind python` repositories, the
ensemble's pre/post steps) from the *current* Python environment:

- a backend directory whose `python/` holds the wheel's `libtriton_python.so` and the stub built for this
  Python version (the wheel ships one stub per Python version; Triton looks for it next to the library);
- `LD_LIBRARY_PATH` with the wheel's libraries and this interpreter's `libpython` (the stub embeds Python);
- `PATH` starting with this interpreter's bin folder (the stub finds this environment's site-packages), and
  `LAMA_PYTHONPATH` = the folder holding the imported `lama_deploy` + `$PYTHONPATH`: the stub's interpreter
  ignores PYTHONPATH, the repository's `model.py` shims put these first on `sys.path`, so the stub imports
  the same `lama_deploy` as this process (a checkout included).

Before launching, each model's `config.pbtxt` (`backend:` or `platform:`) is matched against the backends the
server has: the bundled server has only the python backend, so an ONNX Runtime or TensorRT model (what the
ensemble's middle step runs) is refused in one line naming the two ways out, instead of Triton's log lines.

The server binds 127.0.0.1 unless `--host` says otherwise. SIGTERM/SIGINT are forwarded to the server,
which unloads its models and exits; the command waits for it (bounded) and returns its exit code.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lama_deploy.errors import UserError

from .model import PATH_ENV

PROG = "lama-deploy triton-serve"
ENV_BINARY = "LAMA_TRITONSERVER"
#: Triton `platform` values and the backend library each loads (an ensemble is scheduled by the server itself).
PLATFORM_BACKENDS = {
    "onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "pytorch_libtorch": "pytorch",
    "tensorflow_savedmodel": "tensorflow", "tensorflow_graphdef": "tensorflow", "ensemble": None,
}
#: The repository kind of `lama-deploy triton-repo` that runs everything in the python backend.
PYTHON_REPO_HINT = "`lama-deploy triton-repo --repo-kind python` (the python repository kind)"
NGC_IMAGE = "nvcr.io/nvidia/tritonserver"
#: How long the server may take to unload models after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30


@dataclass
class ServerLaunch:
    """Everything needed to start one tritonserver: argv, environment, and a folder to remove afterwards."""

    argv: list[str]
    env: dict[str, str]
    binary: Path
    bundled: bool
    scratch: Path | None = None
    notes: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def pytriton_root() -> Path | None:
    """The nvidia-pytriton wheel's `tritonserver` folder, without importing pytriton (it pulls in a lot)."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def find_tritonserver() -> tuple[Path, bool]:
    """(binary, is the nvidia-pytriton bundled one); one actionable line when there is none."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise UserError(f"${ENV_BINARY}={configured} is not an executable file; point it at a tritonserver binary")
        bundled = pytriton_root()
        return path, bundled is not None and path.resolve() == (bundled / "bin" / "tritonserver").resolve()
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), False
    root = pytriton_root()
    if root is not None:
        return root / "bin" / "tritonserver", True
    raise UserError(f"no tritonserver found (${ENV_BINARY}, PATH, nvidia-pytriton); install it with "
                    "`pip install 'lama-deploy[triton]'` or run the NGC Triton container (see docs/triton.md)")


def python_backend_dir(root: Path, scratch: Path) -> Path:
    """A backend directory for the bundled server whose python backend uses the stub of this Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        stubs = root / "python_backend_stubs"
        shipped = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
        raise UserError(f"the nvidia-pytriton wheel has no python backend stub for Python {version} (it has "
                        f"{', '.join(shipped) or 'none'}); run triton-serve from one of those Python versions")
    backends = scratch / "backends"
    for source in (root / "backends").iterdir():
        if source.name != "python":
            (backends / source.name).parent.mkdir(parents=True, exist_ok=True)
            (backends / source.name).symlink_to(source, target_is_directory=source.is_dir())
    python = backends / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(root / "backends" / "python" / name)
    shutil.copy2(stub, python / "triton_python_backend_stub")  # Triton execs the stub from this folder
    return backends


def stub_environment(base: dict[str, str], library_dirs: list[Path]) -> dict[str, str]:
    """The server's environment, which the python backend's stub processes inherit."""
    import lama_deploy

    env = dict(base)
    libs = [str(d) for d in library_dirs if d.is_dir()]
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and Path(libdir).is_dir():
        libs.append(libdir)  # this interpreter's libpython before the system one the stub was linked with
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [base.get("LD_LIBRARY_PATH", "")] if p])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")])
    package_parent = str(Path(lama_deploy.__file__).resolve().parent.parent)
    env[PATH_ENV] = os.pathsep.join([package_parent] + [p for p in [base.get("PYTHONPATH", "")] if p])
    env["PYTHONNOUSERSITE"] = base.get("PYTHONNOUSERSITE", "1")
    return env


def server_argv(binary: Path, repository: Path, host: str, http_port: int, grpc_port: int, metrics_port: int,
                backend_dir: Path | None, extra: list[str]) -> list[str]:
    argv = [str(binary), f"--model-repository={repository}", f"--http-address={host}", f"--http-port={http_port}",
            f"--grpc-address={host}", f"--grpc-port={grpc_port}", f"--metrics-address={host}",
            f"--metrics-port={metrics_port}", f"--exit-timeout-secs={STOP_TIMEOUT_S // 2}"]
    if backend_dir is not None:
        argv.append(f"--backend-directory={backend_dir}")
    return argv + extra


def _top_level_field(text: str, key: str) -> str | None:
    """`key: "value"` at the top level of a config.pbtxt (indentation 0), quotes removed."""
    match = re.search(rf'^{key}\s*:\s*"?([A-Za-z0-9_.-]+)"?', text, re.MULTILINE)
    return match.group(1) if match else None


def needed_backends(repository: Path) -> dict[str, str]:
    """{model name: backend library it needs}, read from each model's config.pbtxt (ensembles need none)."""
    needed = {}
    for config in sorted(repository.glob("*/config.pbtxt")):
        text = config.read_text(errors="replace")
        backend = _top_level_field(text, "backend")
        if backend is None:
            platform = _top_level_field(text, "platform")
            backend = PLATFORM_BACKENDS.get(platform, platform) if platform else None
        if backend:
            needed[config.parent.name] = backend
    return needed


def installed_backends(backend_dir: Path | None) -> set[str] | None:
    """Backend libraries the server can load (folder names under its backend directory); None when unknown."""
    if backend_dir is None or not backend_dir.is_dir():
        return None
    return {child.name for child in backend_dir.iterdir()}


def backend_problem(needed: dict[str, str], installed: set[str] | None, binary: str) -> str | None:
    """One line when a model needs a backend this server lacks: which model, which backend, the two ways out."""
    if installed is None:
        return None
    missing = {model: backend for model, backend in needed.items() if backend not in installed}
    if not missing:
        return None
    model, backend = next(iter(missing.items()))
    return (f"{binary} has no '{backend}' backend (it has {', '.join(sorted(installed)) or 'none'}), which model "
            f"'{model}' needs; write the repository with {PYTHON_REPO_HINT}, or serve this one with the NGC "
            f"container {NGC_IMAGE}")


def _check_port(port: int, flag: str) -> None:
    if not 0 < port < 65536:
        raise UserError(f"{flag} {port} is not a TCP port; use 1..65535")


def prepare_launch(repository: str | Path, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                   metrics_port: int = 8002, extra: list[str] | None = None) -> ServerLaunch:
    """Find the binary and build its argv and environment (a scratch folder for the bundled server)."""
    repository = Path(repository).resolve()
    if not repository.is_dir():
        raise UserError(f"--repository {repository} is not a folder; write one with `lama-deploy triton-repo`")
    if not any((child / "config.pbtxt").is_file() for child in repository.iterdir()):
        raise UserError(f"{repository} holds no model (no */config.pbtxt); write one with `lama-deploy triton-repo`")
    for port, flag in ((http_port, "--http-port"), (grpc_port, "--grpc-port"), (metrics_port, "--metrics-port")):
        _check_port(port, flag)
    if len({http_port, grpc_port, metrics_port}) != 3:
        raise UserError("--http-port, --grpc-port and --metrics-port must differ")
    binary, bundled = find_tritonserver()
    root = binary.resolve().parent.parent
    scratch, backend_dir, library_dirs = None, None, [root / "lib"]
    if bundled:
        scratch = Path(tempfile.mkdtemp(prefix="lama-triton-"))
        backend_dir = python_backend_dir(root, scratch)
        library_dirs.insert(0, root.parent.parent / "nvidia_pytriton.libs")
    elif (root / "backends").is_dir():
        backend_dir = root / "backends"
    described = f"{binary} (nvidia-pytriton)" if bundled else str(binary)
    problem = backend_problem(needed_backends(repository), installed_backends(root / "backends"), described)
    if problem:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise UserError(problem)
    env = stub_environment(dict(os.environ), library_dirs)
    argv = server_argv(binary, repository, host, http_port, grpc_port, metrics_port, backend_dir, list(extra or []))
    return ServerLaunch(argv, env, binary, bundled, scratch)


def run_foreground(launch: ServerLaunch) -> int:
    """Start the server, forward SIGTERM/SIGINT to it, wait (bounded) and return its exit code."""
    process = subprocess.Popen(launch.argv, env=launch.env)
    stopping = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if process.poll() is None:
            process.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                code = process.wait(timeout=STOP_TIMEOUT_S if stopping else None)
                break
            except subprocess.TimeoutExpired:  # asked to stop and still not gone: do not hang forever
                process.kill()
                stopping.clear()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if process.poll() is None:
            process.kill()
            process.wait()
        launch.cleanup()
    # a server stopped by our forwarded signal has done what was asked
    return 0 if stopping and code in (0, -signal.SIGTERM, -signal.SIGINT) else code
