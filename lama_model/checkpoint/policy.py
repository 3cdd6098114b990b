"""What a checkpoint's pickle may name and call: the allow/deny policy of the restricted unpickler.

Deny by default for calls: only the constructors below are ever *called*, each with its arguments checked
(types and sizes) so that it cannot run code, import, touch the system or allocate more than the file holds.
Names are resolved without importing anything: a name of a module that can execute code or import is refused
(`RefusedName`); an unknown name becomes an inert placeholder class (see safe_pickle.Placeholder).
docs/security.md describes the policy for users; tests/lama_model/test_checkpoint_policy.py pins it.
"""

from __future__ import annotations

import argparse
import builtins as _builtins
import collections
import datetime
import pathlib
import typing
from typing import Any, Callable

import torch

from .records import RefusedCall

# Module roots whose names are refused outright: their callables run code, import, or touch the system.
DENIED_MODULES = frozenset({
    "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess", "sys", "builtins",
    "importlib", "imp", "zipimport", "pkgutil", "runpy", "site", "sysconfig", "pickle", "_pickle", "copyreg",
    "marshal", "shelve", "dill", "cloudpickle", "joblib", "shutil", "socket", "ssl", "select", "ctypes", "_ctypes",
    "cffi", "code", "codeop", "pty", "tty", "webbrowser", "functools", "operator", "_operator", "types",
    "inspect", "gc", "io", "_io", "codecs", "_codecs", "platform", "multiprocessing", "concurrent", "asyncio",
    "threading", "_thread", "signal", "tempfile", "glob", "fileinput", "urllib", "http", "ftplib", "smtplib",
    "requests", "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "atexit", "resource", "mmap", "fcntl",
    "torch", "typing", "collections", "datetime", "pathlib", "argparse", "setuptools", "pip", "distutils",
    "ensurepip", "venv", "weakref", "_weakref", "contextlib", "logging", "lama_model",
})
# Some of these roots (builtins, typing, collections, torch, ...) are also home to harmless constructors and
# values: those are listed exactly in VALUES / CONSTRUCTORS and win over the root's refusal.


class RefusedName(Exception):
    """The pickle names a callable that can execute code or import; carries 'module.name'."""


def _sized(value: Any, what: str, limit: int) -> Any:
    """An iterable argument must already be a container from the file, of bounded size (never a tensor, a range
    or a string: `list(text)` would make one object per character)."""
    if type(value) not in _ITERABLE_ARGUMENTS:
        raise RefusedCall(f"{what} of a {type(value).__name__} (only lists, tuples, dicts and sets)")
    if len(value) > limit:
        raise RefusedCall(f"{what} of {len(value)} elements (limit {limit})")
    return value


_ITERABLE_ARGUMENTS = (list, tuple, dict, set, frozenset, collections.OrderedDict, collections.defaultdict,
                       collections.Counter, collections.deque)
MAX_SCALAR_INT_BITS = 64  # ints given to slice, range, datetime, ... (big ones cost time when hashed or compared)
MAX_SCALAR_TEXT = 4096  # strings given to pathlib, datetime, torch.device, ... (a path is parsed into its parts)
MAX_TEXT_INT_BITS = 14_000  # ~4,200 decimal digits: str(int) and int(str) are quadratic beyond


def _scalar(value: Any, what: str) -> Any:
    if type(value) not in (int, float, bool, str, bytes, complex, type(None)):
        raise RefusedCall(f"{what} of a {type(value).__name__}")
    return value


def _no_kwargs(kwargs: dict, what: str) -> None:
    if kwargs:
        raise RefusedCall(f"{what} with keyword arguments")


def _container(kind: type) -> Callable[..., Any]:
    def build(limit: int, args: tuple, kwargs: dict) -> Any:
        _no_kwargs(kwargs, kind.__name__)
        if len(args) > 1:
            raise RefusedCall(f"{kind.__name__}() with {len(args)} arguments")
        return kind(_sized(args[0], kind.__name__, limit)) if args else kind()
    return build


def _scalar_type(kind: type) -> Callable[..., Any]:
    """int, float, complex, bool, str, bytes, bytearray of scalars; bytes/bytearray also of a list of ints."""
    def build(limit: int, args: tuple, kwargs: dict) -> Any:
        _no_kwargs(kwargs, kind.__name__)
        if len(args) > 2 or (kind in (bytes, bytearray) and args and type(args[0]) is int):
            raise RefusedCall(f"{kind.__name__}() with these arguments")  # bytes(n) would allocate n bytes
        if kind in (bytes, bytearray) and args and type(args[0]) in (list, tuple):
            return kind(_sized(args[0], kind.__name__, limit))  # one byte per element
        for arg in args:  # never a container: str() of a shared nested list expands without bound
            _scalar(arg, f"{kind.__name__}()")
            if type(arg) is int and arg.bit_length() > MAX_TEXT_INT_BITS:
                raise RefusedCall(f"{kind.__name__}() of an integer of {arg.bit_length()} bits")
        if kind is int and args and type(args[0]) in (str, bytes) and len(args[0]) > 4300:
            raise RefusedCall("int() of a very long string")
        if kind in (str, bytes, bytearray) and len(args) == 2 and args[1] not in TEXT_ENCODINGS:
            raise RefusedCall(f"{kind.__name__}() with an encoding other than {', '.join(TEXT_ENCODINGS)}")
        return kind(*args)
    return build


def _defaultdict(limit: int, args: tuple, kwargs: dict) -> Any:
    _no_kwargs(kwargs, "defaultdict")
    factory = args[0] if args else None
    placeholder_class = isinstance(factory, type) and getattr(factory, "_placeholder", False)
    if factory is not None and not any(factory is kind for kind in SAFE_FACTORIES) and not placeholder_class:
        raise RefusedCall("defaultdict with a default factory that is not a plain container type")
    return collections.defaultdict(factory, *(_sized(a, "defaultdict", limit) for a in args[1:2]))


def _deque(limit: int, args: tuple, kwargs: dict) -> Any:
    _no_kwargs(kwargs, "deque")
    maxlen = args[1] if len(args) > 1 else None
    if maxlen is not None and type(maxlen) is not int:
        raise RefusedCall("deque() with a non-integer maxlen")
    return collections.deque(_sized(args[0], "deque", limit) if args else (), maxlen)


def _noarg_type(limit: int, args: tuple, kwargs: dict) -> Any:
    """`type(None)` is how protocol 2 spells NoneType; nothing else may be asked of `type`."""
    if kwargs or len(args) != 1 or args[0] not in (None, Ellipsis, NotImplemented):
        raise RefusedCall("type() other than type(None)")
    return type(args[0])


def _latin1_encode(limit: int, args: tuple, kwargs: dict) -> bytes:
    """Protocol 2 spells bytes as `_codecs.encode(text, 'latin1')`."""
    if kwargs or len(args) != 2 or type(args[0]) is not str or args[1] not in ("latin1", "latin-1"):
        raise RefusedCall("_codecs.encode other than (str, 'latin1')")
    return args[0].encode("latin1")


def _scalars_only(kind: Callable[..., Any], name: str) -> Callable[..., Any]:
    """datetime / pathlib / torch.Size / torch.device: C constructors of plain values."""
    def build(limit: int, args: tuple, kwargs: dict) -> Any:
        _no_kwargs(kwargs, name)
        if len(args) > 8:
            raise RefusedCall(f"{name}() with {len(args)} arguments")
        allowed = (int, float, bool, str, bytes, type(None), datetime.timezone, datetime.timedelta)
        for arg in args:
            if type(arg) is tuple and name == "torch.Size":
                _sized(arg, name, 64)
                if any(type(a) is not int for a in arg):
                    raise RefusedCall("torch.Size of non-integers")
            elif type(arg) not in allowed:
                raise RefusedCall(f"{name}() of a {type(arg).__name__}")
            elif type(arg) is int and arg.bit_length() > MAX_SCALAR_INT_BITS:
                raise RefusedCall(f"{name}() of an integer of {arg.bit_length()} bits")
            elif type(arg) in (str, bytes) and len(arg) > MAX_SCALAR_TEXT:  # a path splits into one str per part
                raise RefusedCall(f"{name}() of a text of {len(arg)} characters (limit {MAX_SCALAR_TEXT})")
        return kind(*args)
    return build


# Encodings str()/bytes() may name: looking up any other could import a codec module.
TEXT_ENCODINGS = ("latin1", "latin-1", "utf-8", "utf8", "ascii")

# Plain types a defaultdict may use as its factory (calling them makes an empty container or zero).
SAFE_FACTORIES = (dict, list, set, frozenset, tuple, int, float, complex, bool, str, bytes,
                  collections.OrderedDict)

_BUILTIN_CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "dict": _container(dict), "list": _container(list), "set": _container(set),
    "frozenset": _container(frozenset), "tuple": _container(tuple),
    "int": _scalar_type(int), "float": _scalar_type(float), "complex": _scalar_type(complex),
    "bool": _scalar_type(bool), "str": _scalar_type(str), "bytes": _scalar_type(bytes),
    "bytearray": _scalar_type(bytearray), "slice": _scalars_only(slice, "slice"),
    "range": _scalars_only(range, "range"), "object": lambda limit, args, kwargs: object(), "type": _noarg_type,
}

# (module, name) -> constructor(limit, args, kwargs). Tensor rebuild helpers are added by safe_pickle, which
# owns the storages they need.
CONSTRUCTORS: dict[tuple[str, str], Callable[..., Any]] = {
    **{("builtins", name): build for name, build in _BUILTIN_CONSTRUCTORS.items()},
    ("collections", "OrderedDict"): _container(collections.OrderedDict),
    ("collections", "defaultdict"): _defaultdict,
    ("collections", "deque"): _deque,
    ("collections", "Counter"): _container(collections.Counter),
    ("_codecs", "encode"): _latin1_encode,
    ("torch", "Size"): _scalars_only(torch.Size, "torch.Size"),
    ("torch", "device"): _scalars_only(torch.device, "torch.device"),
    # Concrete paths are re-created as pure paths: nothing on this machine is looked at.
    **{("pathlib", name): _scalars_only(kind, f"pathlib.{name}") for name, kind in (
        ("PurePosixPath", pathlib.PurePosixPath), ("PosixPath", pathlib.PurePosixPath),
        ("PureWindowsPath", pathlib.PureWindowsPath), ("WindowsPath", pathlib.PureWindowsPath),
        ("PurePath", pathlib.PurePosixPath), ("Path", pathlib.PurePosixPath))},
    **{("datetime", name): _scalars_only(getattr(datetime, name), f"datetime.{name}")
       for name in ("datetime", "date", "time", "timedelta", "timezone")},
}

# Constructors that hash the keys of one argument: (its index, "elements" or "pairs" (key, value)); a dict
# argument gives its keys. The unpickler charges that hashing and checks the keys before the call.
HASHED_ARGUMENTS = {
    ("builtins", "set"): (0, "elements"), ("builtins", "frozenset"): (0, "elements"),
    ("collections", "Counter"): (0, "elements"), ("builtins", "dict"): (0, "pairs"),
    ("collections", "OrderedDict"): (0, "pairs"), ("collections", "defaultdict"): (1, "pairs"),
}

# Data classes that NEWOBJ / copyreg may create empty and BUILD may fill (their __dict__, never setattr).
BUILDABLE_TYPES = (argparse.Namespace, collections.OrderedDict)
NEWOBJ_TYPES = (dict, list, set, object, argparse.Namespace, collections.OrderedDict, collections.Counter)

_TYPING_FORMS = ("Any", "Union", "Optional", "List", "Dict", "Tuple", "Set", "FrozenSet", "Callable", "Type",
                 "ClassVar", "Sequence", "Mapping", "MutableMapping", "MutableSequence", "Iterable", "Literal",
                 "Final", "Generic", "NoneType")

# (module, name) -> a value the pickle may reference (as data, e.g. OmegaConf's `object_type=dict`).
VALUES = {
    **{("builtins", name): getattr(_builtins, name) for name in
       ("dict", "list", "set", "frozenset", "tuple", "int", "float", "complex", "bool", "str", "bytes",
        "bytearray", "slice", "range", "object", "type", "Ellipsis", "NotImplemented")},
    **{("typing", name): getattr(typing, name) for name in _TYPING_FORMS if hasattr(typing, name)},
    ("collections", "OrderedDict"): collections.OrderedDict, ("collections", "defaultdict"): collections.defaultdict,
    ("collections", "deque"): collections.deque, ("collections", "Counter"): collections.Counter,
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch", "Tensor"): torch.Tensor, ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
    **{("torch", name): getattr(torch, name) for name in
       ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool",
        "complex64", "complex128", "strided", "contiguous_format", "channels_last", "preserve_format")},
}
