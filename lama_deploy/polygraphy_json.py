"""Polygraphy's JSON files, read and written with numpy and json alone (the device has no Polygraphy).

`lama-deploy validate` saves its inputs as a Polygraphy list of feed dicts (`polygraphy run --load-inputs`)
and the PyTorch reference as a Polygraphy `RunResults` (`--load-outputs`). Their encoding: every object of
a Polygraphy class is a JSON dict tagged `"polygraphy_class": <name>`; an `ndarray` is `{"array": base64 of
the .npy bytes}`; a `LazyArray` wraps one as `{"values": ndarray}`; an `IterationResult` is `{"outputs":
{name: LazyArray}, "runtime", "runner_name"}`; a `RunResults` is `{"lst": [[runner, [IterationResult...]]]}`.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from .errors import UserError
from .files import atomic_output

TAG = "polygraphy_class"
LEGACY_TAG = "__polygraphy_encoded_"  # Polygraphy < 0.40 tagged with "__polygraphy_encoded_<class>": 1

Feed = Dict[str, np.ndarray]


def encode_array(array: np.ndarray) -> Dict[str, Any]:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return {"array": base64.b64encode(buffer.getvalue()).decode(), TAG: "ndarray"}


def _class_of(value: Dict[str, Any]) -> str:
    if TAG in value:
        return str(value[TAG])
    legacy = [key[len(LEGACY_TAG):] for key in value if key.startswith(LEGACY_TAG)]
    return legacy[0] if legacy else ""


def decode(value: Any) -> Any:
    """Arrays, iteration results and run results back to numpy / plain Python (recursively)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    kind = _class_of(value)
    if kind in ("ndarray", "NumpyArray"):
        data = base64.b64decode(value["array"].encode(), validate=True)
        return np.load(io.BytesIO(data), allow_pickle=False)
    if kind in ("LazyArray", "LazyNumpyArray"):
        return decode(value["values"])
    if kind == "IterationResult":
        return {name: decode(v) for name, v in value["outputs"].items()}
    if kind == "RunResults":
        return [(runner, decode(iterations)) for runner, iterations in value["lst"]]
    return {k: decode(v) for k, v in value.items() if k != TAG}


def _load(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror or exc}; make it with `lama-deploy validate "
                        f"--out-dir` on the host") from None
    except ValueError:
        raise UserError(f"{path} is not JSON; expected Polygraphy {what} from `lama-deploy validate`") from None


def read_feeds(path: str | Path) -> List[Feed]:
    """The feed dicts of a Polygraphy inputs file (`--save-inputs` / `lama-deploy validate`'s inputs.json)."""
    data = _load(Path(path), "inputs")
    feeds = decode(data)
    if not isinstance(feeds, list) or not all(isinstance(f, dict) for f in feeds):
        raise UserError(f"{path} is not a Polygraphy inputs file (a JSON list of feed dicts)")
    return feeds


def read_run_results(path: str | Path) -> List[Tuple[str, List[Feed]]]:
    """[(runner name, [outputs of each iteration])] of a Polygraphy RunResults file."""
    data = _load(Path(path), "run results")
    if not isinstance(data, dict) or _class_of(data) != "RunResults":
        raise UserError(f"{path} is not a Polygraphy RunResults file (polygraphy_class RunResults)")
    return decode(data)


def write_feeds(feeds: List[Feed], path: str | Path) -> None:
    payload = [{name: encode_array(array) for name, array in feed.items()} for feed in feeds]
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n")


def write_run_results(runner: str, outputs: List[Feed], path: str | Path, runtime: float = 0.0) -> None:
    iterations = [{"outputs": {n: {"values": encode_array(a), TAG: "LazyArray"} for n, a in out.items()},
                   "runtime": runtime, "runner_name": runner, TAG: "IterationResult"} for out in outputs]
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps({"lst": [[runner, iterations]], TAG: "RunResults"}, indent=1) + "\n")
