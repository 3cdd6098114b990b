"""The restricted unpickler's policy: what harmless checkpoints hold loads (OmegaConf / Lightning shapes,
builtin containers at every protocol); what could run code never runs (fuzz corpus, audit-hook sentinel)."""

from __future__ import annotations

import argparse
import codecs
import collections
import contextlib
import dataclasses
import datetime
import enum
import pathlib
import pickle
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from hostile_checkpoints import (BUILD, EMPTY_DICT, MARK, NEWOBJ, PROTO2, PROTO4, REDUCE, STOP, call, get, glob,
                                 put, text, tuple_of)
from lama_model import CheckpointError, InpaintingModel, UnsafeCheckpointError, load_inpainting_model
from lama_model.checkpoint import read_checkpoint
from lama_model.checkpoint.unpickler import Placeholder, unpickle

# --- a sentinel that sees anything run: every audit event raised while armed is recorded ----------------------
_EVENTS: list[str] = []
_ARMED: list[Path] = []
_BENIGN = {"builtins.id"}  # the unpickler's own id() bookkeeping


def _audit(event: str, args: tuple) -> None:
    if not _ARMED or event in _BENIGN:
        return
    if event == "open" and args and str(args[0]) == str(_ARMED[0]):
        return  # reading the checkpoint itself
    _EVENTS.append(f"{event} {str(args)[:80]}")


sys.addaudithook(_audit)
for _codec in ("raw-unicode-escape", "latin1", "ascii", "utf-8"):  # Python's own codec lookups, done up front
    codecs.lookup(_codec)


@contextlib.contextmanager
def sentinel(reading: Path | None = None) -> Iterator[list[str]]:
    """Records audit events (os.system, exec, compile, import, open, subprocess.Popen, socket, ctypes, ...)
    other than opening the file being read."""
    _EVENTS.clear()
    _ARMED.append(reading or Path("/nonexistent"))
    try:
        yield _EVENTS
    finally:
        _ARMED.clear()


# --- fake libraries, present only while the checkpoint is written ---------------------------------------------
@contextlib.contextmanager
def fake_modules(**classes: type) -> Iterator[None]:
    """Register `classes` (keyed 'package.module:Name') as if the library were installed; remove it after."""
    added = []
    for qualified, cls in classes.items():
        module_name, name = qualified.split(":")
        parts = module_name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in sys.modules:
                sys.modules[prefix] = types.ModuleType(prefix)
                added.append(prefix)
        cls.__module__, cls.__qualname__, cls.__name__ = module_name, name, name
        setattr(sys.modules[module_name], name, cls)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


@dataclasses.dataclass
class Metadata:
    ref_type: Any
    object_type: Any
    optional: bool
    key: Any
    flags: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ContainerMetadata(Metadata):
    key_type: Any = None
    element_type: Any = None
    resolver_cache: dict = dataclasses.field(default_factory=lambda: collections.defaultdict(dict))


class AnyNode:
    def __init__(self, value: Any, key: Any, parent: Any) -> None:
        self.__dict__.update(_val=value, _parent=parent,
                             _metadata=Metadata(ref_type=typing.Any, object_type=None, optional=True, key=key))


class DictConfig:
    """OmegaConf's shape: state is a dict of _metadata / _parent / _content (2.1+ adds _flags_cache)."""

    def __init__(self, content: dict, version: str, parent: Any = None) -> None:
        meta = ContainerMetadata(ref_type=typing.Any, object_type=dict, optional=True, key=None,
                                 key_type=typing.Any, element_type=typing.Any)
        self.__dict__.update(_metadata=meta, _parent=parent, _content={})
        if version != "2.0":
            self.__dict__["_flags_cache"] = None
        for key, value in content.items():
            node = DictConfig(value, version, self) if isinstance(value, dict) else ListConfig(value, self) \
                if isinstance(value, list) else AnyNode(value, key, self)
            self._content[key] = node

    def __getstate__(self) -> dict:
        return dict(self.__dict__)


class ListConfig:
    def __init__(self, content: list, parent: Any) -> None:
        meta = ContainerMetadata(ref_type=typing.List[typing.Any], object_type=list, optional=True, key=None)
        self.__dict__.update(_metadata=meta, _parent=parent,
                             _content=[AnyNode(v, i, self) for i, v in enumerate(content)])


class Stage(enum.Enum):
    TRAIN = "train"


class Precision(enum.IntEnum):
    FP16 = 16


@dataclasses.dataclass(frozen=True)
class RunInfo:
    stage: Stage
    precision: Precision
    started: datetime.datetime
    root: pathlib.PurePosixPath


class ModelCheckpoint:
    pass


class AttributeDict(dict):
    pass


FAKE_CLASSES = {"omegaconf.base:Metadata": Metadata, "omegaconf.base:ContainerMetadata": ContainerMetadata,
                "omegaconf.nodes:AnyNode": AnyNode, "omegaconf.dictconfig:DictConfig": DictConfig,
                "omegaconf.listconfig:ListConfig": ListConfig, "trainer.enums:Stage": Stage,
                "trainer.enums:Precision": Precision, "trainer.info:RunInfo": RunInfo,
                "pytorch_lightning.callbacks.model_checkpoint:ModelCheckpoint": ModelCheckpoint,
                "lightning.fabric.utilities.data:AttributeDict": AttributeDict}
TRAINING_CONFIG = {"generator": {"kind": "ffc_resnet", "ngf": 64, "n_blocks": 18, "ratio_gout": 0.75},
                   "optimizers": {"generator": {"kind": "adam", "lr": 0.001}}, "losses": {"l1": [10, 0]}}


def _lightning_checkpoint(model: InpaintingModel, lightning: str, omegaconf: str) -> dict:
    state = {f"generator.{k}": v for k, v in model.generator.state_dict().items()}
    state["discriminator.model0.0.weight"] = torch.zeros(4, 3, 4, 4)
    config = DictConfig(TRAINING_CONFIG, omegaconf)
    info = RunInfo(Stage.TRAIN, Precision.FP16, datetime.datetime(2021, 7, 1, 12, 30), pathlib.PurePosixPath("/x/y"))
    common = {"epoch": 40, "global_step": 1000, "state_dict": state, "run_info": info,
              "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
                                    "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}],
              "args": argparse.Namespace(config=pathlib.PurePosixPath("configs/big-lama.yaml"), gpus=4)}
    if lightning == "1.x":
        return {**common, "pytorch-lightning_version": "1.2.9", "hyper_parameters": config,
                "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "monitor": "val_ssim"}}}
    return {**common, "pytorch-lightning_version": "2.1.0", "hparams_name": "kwargs",
            "hyper_parameters": AttributeDict(config=config, typed=typing.Dict[str, typing.Any]),
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 41}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_ssim'}": {"best_model_score": torch.tensor(0.5)}}}


@pytest.mark.parametrize("lightning, omegaconf", [("1.x", "2.0"), ("2.x", "2.1")])
def test_lightning_omegaconf_checkpoints_load(tmp_path: Path, tiny_model: InpaintingModel, lightning: str,
                                              omegaconf: str) -> None:
    path = tmp_path / "best.ckpt"
    with fake_modules(**FAKE_CLASSES):
        torch.save(_lightning_checkpoint(tiny_model, lightning, omegaconf), path, pickle_protocol=2)
    assert "omegaconf" not in sys.modules and "pytorch_lightning" not in sys.modules
    with sentinel(path) as events:
        raw = read_checkpoint(path)
    assert events == [], f"reading ran {events}"
    loaded = load_inpainting_model(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tiny_model.state_dict().values()))
    assert "omegaconf" not in sys.modules  # nothing was imported to read it
    hp = raw["hyper_parameters"] if lightning == "1.x" else raw["hyper_parameters"]._items["config"]
    meta = hp._state["_metadata"]._state
    assert isinstance(hp, Placeholder) and meta["object_type"] is dict and meta["key_type"] is typing.Any
    assert type(meta["resolver_cache"]) is collections.defaultdict and meta["resolver_cache"].default_factory is dict
    assert hp._state["_content"]["generator"]._state["_content"]["ngf"]._state["_val"] == 64
    assert raw["args"] == argparse.Namespace(config=pathlib.PurePosixPath("configs/big-lama.yaml"), gpus=4)
    info = raw["run_info"]._state
    assert info["stage"]._args == ("train",) and info["precision"]._args == (16,)
    assert info["started"] == datetime.datetime(2021, 7, 1, 12, 30) and str(info["root"]) == "/x/y"


HARMLESS = {
    "containers": [{}, [], (), set(), frozenset({1}), {"a": [1, (2, 3)]}], "scalars": [1, -2**70, 2.5, 1 + 2j, True,
                                                                                   None, "é", b"\x00\xff"],
    "bytearray": bytearray(b"ab"), "ordered": collections.OrderedDict(a=1, b=2),
    "default": collections.defaultdict(list, {"a": [1]}), "deque": collections.deque([1, 2]),
    "counter": collections.Counter("aab"), "slice": slice(1, 9, 2), "range": range(1, 9, 2),
    "namespace": argparse.Namespace(a=1, b="x"), "datetime": datetime.datetime(2024, 2, 29, 1, 2, 3, 4),
    "date": datetime.date(2020, 1, 1), "time": datetime.time(3, 4), "delta": datetime.timedelta(days=2),
    "tz": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    "path": pathlib.PurePosixPath("a/b"), "winpath": pathlib.PureWindowsPath("c:/x"), "any": typing.Any,
    "nonetype": type(None), "ellipsis": ..., "dtype": torch.float16, "size": torch.Size([2, 3]),
    "device": torch.device("cpu"),
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_harmless_values_load_at_every_protocol(protocol: int) -> None:
    with sentinel() as events:
        loaded = unpickle(pickle.dumps(HARMLESS, protocol), "values.pkl")
    assert events == []
    assert loaded == HARMLESS
    alias = unpickle(pickle.dumps(typing.Dict[str, typing.Any], protocol), "alias.pkl")
    assert isinstance(alias, Placeholder) and alias._args[0] is typing.Dict


# --- the fuzz corpus ------------------------------------------------------------------------------------------
REFUSED = [
    "os.system", "os.popen", "os.execv", "os.remove", "os.path.join", "posix.system", "nt.system", "subprocess.Popen",
    "subprocess.check_output", "subprocess.run", "sys.exit", "builtins.eval", "builtins.exec", "builtins.compile",
    "builtins.open", "builtins.__import__", "builtins.setattr", "builtins.delattr", "builtins.globals",
    "builtins.locals", "builtins.vars", "builtins.input", "builtins.breakpoint", "builtins.print",
    "builtins.memoryview", "builtins.super", "builtins.classmethod", "builtins.map", "__builtin__.eval",
    "__builtin__.execfile", "__builtin__.apply", "importlib.import_module", "importlib.reload", "pickle.loads",
    "_pickle.loads", "marshal.loads", "runpy.run_path", "runpy.run_module", "shutil.rmtree", "socket.socket",
    "ctypes.CDLL", "code.InteractiveInterpreter", "pty.spawn", "webbrowser.open", "functools.partial",
    "functools.reduce", "operator.attrgetter", "operator.methodcaller", "_operator.itemgetter", "types.FunctionType",
    "types.CodeType", "copyreg.add_extension", "copy_reg.constructor", "torch.load", "torch.hub.load",
    "torch.jit.load", "torch.serialization.load", "torch._utils._rebuild_qtensor", "torch.from_numpy",
    "torch.Storage", "typing.get_type_hints", "typing.NamedTuple", "collections.namedtuple", "codecs.open",
    "_codecs.lookup", "io.open", "tempfile.mkstemp", "pdb.set_trace", "timeit.timeit", "multiprocessing.Process",
    "asyncio.create_subprocess_shell", "threading.Thread", "signal.signal", "platform.popen", "pkgutil.resolve_name",
    "inspect.getsource", "gc.get_objects", "argparse.ArgumentParser", "datetime.datetime.strptime",
    "pathlib.Path.write_text", "logging.config.listen", "lama_model.checkpoint.read_checkpoint",
]


def _variants(module: str, name: str, marker: Path) -> dict[str, bytes]:
    """The refused callable reached every way a pickle can call or smuggle it."""
    evil = glob(module, name)
    args = {"os": f"touch {marker}", "posix": f"touch {marker}", "subprocess": f"touch {marker}"}.get(
        module.split(".")[0], f"open({str(marker)!r}, 'w').close()" if name in ("eval", "exec", "compile")
        else str(marker))
    reduce = call(evil, text(args))
    placeholder = glob("omegaconf.dictconfig", "DictConfig")
    return {
        "reduce": PROTO2 + reduce + STOP,
        "nested-in-args": PROTO2 + call(glob("__builtin__", "list"), tuple_of(text("a"), reduce)) + STOP,
        "in-build-state": PROTO2 + placeholder + tuple_of() + NEWOBJ + EMPTY_DICT + text("x") + reduce + b"s"
        + BUILD + STOP,
        "reconstructor": PROTO2 + call(glob("copyreg", "_reconstructor"), evil, glob("__builtin__", "object"),
                                       b"N") + STOP,
        "newobj-helper": PROTO2 + call(glob("copyreg", "__newobj__"), evil, text(args)) + STOP,
        "newobj": PROTO2 + evil + tuple_of(text(args)) + NEWOBJ + STOP,
        "defaultdict-factory": PROTO2 + call(glob("collections", "defaultdict"), evil) + STOP,
        "rebuild-from-type": PROTO2 + call(glob("torch._tensor", "_rebuild_from_type_v2"), evil,
                                           glob("torch", "Tensor"), tuple_of(text(args)), EMPTY_DICT) + STOP,
        "inst": b"(" + text(args) + f"i{module}\n{name}\n".encode() + STOP,
        "obj": MARK + evil + text(args) + b"o" + STOP,
        "stack-global": PROTO4 + b"\x8c" + bytes([len(module)]) + module.encode() + b"\x8c" + bytes([len(name)])
        + name.encode() + b"\x93" + tuple_of(text(args)) + REDUCE + STOP,
        # names computed at load time: str(_codecs.encode(...), 'latin1') from the memo
        "computed-name": PROTO4 + call(glob("__builtin__", "str"), call(glob("_codecs", "encode"), text(module),
                                                                       text("latin1")), text("latin1")) + put(0)
        + call(glob("__builtin__", "str"), call(glob("_codecs", "encode"), text(name), text("latin1")),
               text("latin1")) + put(1) + b"0" + b"0" + get(0) + get(1) + b"\x93" + tuple_of(text(args)) + REDUCE
        + STOP,
    }


def test_fuzz_corpus_never_runs_anything(tmp_path: Path) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    failures = []
    count = 0
    for dotted in REFUSED:
        module, name = dotted.rsplit(".", 1) if not dotted.startswith(("datetime.datetime", "pathlib.Path")) \
            else dotted.split(".", 1)
        for variant, payload in _variants(module, name, marker).items():
            count += 1
            with sentinel() as events:
                try:
                    result = unpickle(payload, f"{variant}.pkl")
                    failures.append(f"{dotted} {variant}: loaded {type(result).__name__}")
                except UnsafeCheckpointError as exc:
                    if "\n" in str(exc) or "refusing to load" not in str(exc):
                        failures.append(f"{dotted} {variant}: message {str(exc)[:200]!r}")
            if events or marker.exists():
                failures.append(f"{dotted} {variant}: RAN {events[:5]}")
    assert count == len(REFUSED) * 12 and not failures, "\n".join(failures[:20])


def test_unknown_callables_become_inert_placeholders(tmp_path: Path) -> None:
    """A module the policy does not know is never imported and its callables never called."""
    marker = tmp_path / "RAN"
    sentinel_module = types.ModuleType("sentinel_lib")
    sentinel_module.run = lambda *a: marker.write_text("ran")
    sys.modules["sentinel_lib"] = sentinel_module
    try:
        payload = PROTO2 + call(glob("sentinel_lib", "run"), text("x")) + STOP
        payload2 = PROTO2 + call(glob("numpy.core.multiarray", "_reconstruct"), text("x")) + STOP
        with sentinel() as events:
            results = [unpickle(payload, "a.pkl"), unpickle(payload2, "b.pkl")]
    finally:
        del sys.modules["sentinel_lib"]
    assert events == [] and not marker.exists()
    assert all(isinstance(r, Placeholder) and r._args == ("x",) for r in results)
    assert type(results[0]).__name__ == "run" and type(results[0]).__module__ == "placeholder.sentinel_lib"


def test_numpy_values_become_placeholders() -> None:
    """numpy scalars and arrays in hyper-parameters (Lightning metrics) load as inert records."""
    numpy = pytest.importorskip("numpy")
    payload = pickle.dumps({"score": numpy.float64(0.5), "array": numpy.arange(3)}, 2)
    with sentinel() as events:
        loaded = unpickle(payload, "numpy.pkl")
    assert events == [] and all(isinstance(v, Placeholder) for v in loaded.values())
    assert type(loaded["score"]).__name__ == "scalar" and type(loaded["array"]).__name__ == "_reconstruct"


@pytest.mark.parametrize("payload, expected", [
    (PROTO2 + b"\x82\x01" + STOP, "extension code"),
    (PROTO2 + glob("__builtin__", "getattr") + tuple_of(glob("__builtin__", "dict"), text("fromkeys")) + REDUCE
     + STOP, "builtins.getattr"),
    (PROTO2 + glob("__builtin__", "dict") + text("k") + text("v") + b"s" + STOP, "SETITEM on a type"),
    (PROTO2 + call(glob("__builtin__", "bytearray"), b"J" + (1 << 30).to_bytes(4, "little")) + STOP,
     "bytearray() with these arguments"),
    (PROTO2 + call(glob("__builtin__", "set"), call(glob("__builtin__", "xrange"), b"J\x00\x00\x00\x40")) + STOP,
     "set of a range"),
    (PROTO2 + call(glob("__builtin__", "type"), text("X"), tuple_of(), EMPTY_DICT) + STOP, "type() other than"),
    (PROTO2 + call(glob("__builtin__", "str"), call(glob("_codecs", "encode"), text("x"), text("latin1")),
                   text("idna")) + STOP, "encoding other than"),
    (PROTO2 + call(glob("torch._utils", "_rebuild_tensor_v2"), text("s"), b"K\x00", tuple_of(), tuple_of(),
                   b"\x89", b"N") + STOP, "not a data record"),
])
def test_allowed_callables_refuse_harmful_arguments(payload: bytes, expected: str) -> None:
    with sentinel() as events, pytest.raises(UnsafeCheckpointError) as info:
        unpickle(payload, "x.pkl")
    assert expected in str(info.value) and events == []


def test_enum_member_by_name_on_a_placeholder() -> None:
    payload = PROTO2 + call(glob("__builtin__", "getattr"), glob("trainer.enums", "Stage"), text("TRAIN")) + STOP
    member = unpickle(payload, "enum.pkl")
    assert isinstance(member, Placeholder) and member._args == ("TRAIN",)
    with pytest.raises(CheckpointError):
        unpickle(payload[:-1], "truncated.pkl")


@pytest.mark.parametrize("protocol", [0, 1, 2, 5])
def test_dataclass_of_an_absent_library_keeps_its_fields(protocol: int) -> None:
    info = RunInfo(Stage.TRAIN, Precision.FP16, datetime.datetime(2021, 7, 1), pathlib.PurePosixPath("/x"))
    with fake_modules(**FAKE_CLASSES):
        payload = pickle.dumps({"info": info}, protocol)
    with sentinel() as events:
        loaded = unpickle(payload, "info.pkl")["info"]
    assert events == [] and isinstance(loaded, Placeholder) and type(loaded).__name__ == "RunInfo"
    state = loaded._state
    assert state["stage"]._args == ("train",) and state["started"] == datetime.datetime(2021, 7, 1)
