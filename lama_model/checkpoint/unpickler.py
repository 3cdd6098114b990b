"""A restricted, bounded unpickler for checkpoints: nothing in the file can run code, poison the process or
exhaust the machine.

Built on the pure-Python `pickle._Unpickler` so that every opcode that creates, calls or mutates goes through
the checks here:
- names are resolved by pickle_policy without importing anything; unknown ones become inert `Placeholder`
  classes, names that can run code are refused;
- only allowlisted constructors are called (REDUCE / NEWOBJ / INST / OBJ), with checked arguments;
- BUILD, SETITEM, APPEND and ADDITEMS only touch objects this unpickler just created (never a function, class
  or module reached through GLOBAL, so a file cannot rewrite `torch._utils` for the whole process);
- hashable containers (tuples, frozensets) are bounded in depth and expanded size when created, before Python
  hashes or compares them; the objects and elements created are bounded in number;
- tensors are rebuilt only over records that hold every byte they need (no uninitialised memory).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from typing import Any, Callable

import torch

from . import policy
from .records import (DEFAULT_LIMITS, STORAGE_DTYPES, CheckpointError, Limits, RecordLoader, RefusedCall,
                                 StorageType, UnsafeCheckpointError, describe_error, rebuild_tensor, short)


class Placeholder:
    """Inert stand-in for an object of a class the loader does not know (a config class of a library that is
    not installed, an enum member, a TorchScript module). It keeps what the pickle gave it and runs nothing."""

    _placeholder = True

    def __init__(self, args: tuple = (), kwargs: dict | None = None) -> None:
        self._args, self._kwargs = args, dict(kwargs or {})
        self._state: Any = None
        self._items: dict = {}
        self._list: list = []

    def __repr__(self) -> str:
        return f"<placeholder {type(self).__module__[len('placeholder.'):]}.{type(self).__name__}>"


class _PlaceholderMeta(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> Any:  # a defaultdict factory, say: still inert
        return type.__call__(cls, args, kwargs)


_PLACEHOLDER_CLASSES: dict[tuple[str, str], type] = {}


def placeholder_class(module: str, name: str) -> type:
    key = (module[:200], name[:200])
    if key not in _PLACEHOLDER_CLASSES and len(_PLACEHOLDER_CLASSES) < 10_000:  # a process-wide cache
        _PLACEHOLDER_CLASSES[key] = _PlaceholderMeta(short(name, 100) or "unnamed", (Placeholder,),
                                                     {"__module__": f"placeholder.{short(module, 100)}"})
    return _PLACEHOLDER_CLASSES.get(key) or _PlaceholderMeta("unnamed", (Placeholder,), {})


class _Callable:
    """What GLOBAL pushes for an allowlisted function (never the real function object)."""

    __slots__ = ("name", "build")

    def __init__(self, name: str, build: Callable[..., Any]) -> None:
        self.name, self.build = name, build


_CONSTRUCTOR_OF_VALUE = {id(policy.VALUES[key]): build for key, build in policy.CONSTRUCTORS.items()
                         if key in policy.VALUES}
_TYPING_VALUES = {id(value) for (module, _), value in policy.VALUES.items() if module == "typing"}


class RestrictedUnpickler(pickle._Unpickler):
    """Reads one pickle under the policy and the limits; `load()` raises only CheckpointError."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes, source: str, records: RecordLoader | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")
        self._source, self._records, self.limits = source, records, limits
        self._fresh: dict[int, Any] = {}  # objects made here: the only targets of BUILD/SETITEM/APPEND
        self._shape: dict[int, tuple[int, int]] = {}  # tuples/frozensets: (depth, expanded size)
        self._budget = limits.max_objects

    # --- bookkeeping -------------------------------------------------------------------------------------
    def _spend(self, count: int) -> None:
        self._budget -= count
        if self._budget < 0:
            raise RefusedCall(f"more than {self.limits.max_objects} objects")

    def _hashing(self, keys: Any) -> Any:
        """Charge the cost of hashing `keys` (tuple hashes are not cached: a shared wide tuple used as many
        keys would otherwise cost its expanded size every time)."""
        self._spend(sum(self._shape.get(id(key), (0, 1))[1] for key in keys))
        return keys

    def _made(self, obj: Any, size: int = 1) -> Any:
        self._spend(size)
        self._fresh[id(obj)] = obj
        if type(obj) in (tuple, frozenset):
            depth, total = 1, 1
            for child in obj:
                child_depth, child_total = self._shape.get(id(child), (0, 1))
                depth, total = max(depth, child_depth + 1), total + child_total
            if depth > self.limits.max_depth or total > self.limits.max_tuple_size:
                raise RefusedCall(f"nesting deeper than {self.limits.max_depth} or wider than "
                                  f"{self.limits.max_tuple_size} elements")
            self._shape[id(obj)] = (depth, total)
        return obj

    def _target(self, kinds: tuple[type, ...], opcode: str) -> Any:
        obj = self.stack[-1]
        if id(obj) not in self._fresh or not isinstance(obj, kinds + (Placeholder,)):
            raise RefusedCall(f"{opcode} on a {type(obj).__name__} it did not create")
        return obj

    # --- names and calls ---------------------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in policy.VALUES:
            return policy.VALUES[key]
        if key in policy.CONSTRUCTORS or key in _SPECIAL_CALLS:
            return _Callable(f"{module}.{name}", policy.CONSTRUCTORS.get(key) or _SPECIAL_CALLS[key])
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if module.split(".")[0] in policy.DENIED_MODULES:
            raise policy.RefusedName(f"{module}.{name}")
        return placeholder_class(module, name)

    def _call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        kwargs = {} if kwargs is None else kwargs
        if type(args) not in (tuple, list) or type(kwargs) is not dict:
            raise RefusedCall("a call whose arguments are not a tuple")
        args = tuple(args)
        for arg in args:  # constructors (set, dict, OrderedDict, ...) may hash the elements of an iterable
            if type(arg) in (list, tuple, set, frozenset, dict) and len(arg) <= self.limits.max_tuple_size:
                self._hashing(arg)
        if isinstance(func, _Callable):
            special = func.build in _SPECIAL_FUNCTIONS  # these need the unpickler itself
            return self._made(func.build(self, args, kwargs) if special
                              else func.build(self.limits.max_tuple_size, args, kwargs))
        if id(func) in _CONSTRUCTOR_OF_VALUE:
            return self._made(_CONSTRUCTOR_OF_VALUE[id(func)](self.limits.max_tuple_size, args, kwargs))
        if isinstance(func, type) and issubclass(func, Placeholder):
            return self._made(func(*args, **kwargs))
        raise RefusedCall(f"a call of a {short(getattr(func, '__name__', type(func).__name__))}, "
                          "which is not a constructor the loader allows")

    def _new(self, cls: Any, args: Any, kwargs: Any = None) -> Any:
        if isinstance(cls, type) and issubclass(cls, Placeholder):
            return self._call(cls, args, kwargs)
        if any(cls is kind for kind in policy.NEWOBJ_TYPES) and not args and not kwargs:
            return self._made(cls.__new__(cls))
        raise RefusedCall(f"creating a {short(getattr(cls, '__name__', type(cls).__name__))} object")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args)

    def load_newobj_ex(self) -> None:
        kwargs, args = self.stack.pop(), self.stack.pop()
        self.stack[-1] = self._new(self.stack[-1], args, kwargs)

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ
        value = self._call(klass, tuple(args))
        self.append(value)

    def load_ext(self) -> None:
        raise RefusedCall("an extension code (copyreg registry), which checkpoints never use")

    def load_buffer(self) -> None:
        raise RefusedCall("an out-of-band buffer, which checkpoints never use")

    def persistent_load(self, pid: Any) -> Any:
        if self._records is None:
            raise CheckpointError(f"{self._source}: names tensor data records but is not inside a zip archive")
        return self._made(self._records(pid))

    # --- containers ----------------------------------------------------------------------------------------
    def load_build(self) -> None:
        state = self.stack.pop()
        obj = self._target(policy.BUILDABLE_TYPES, "BUILD")
        if isinstance(obj, Placeholder):
            obj._state = state
            return
        if type(state) is not dict or any(type(k) is not str for k in state):
            raise RefusedCall(f"BUILD of a {type(obj).__name__} with a state that is not a dict of names")
        obj.__dict__.update(state)

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set_items(self._target((dict,), "SETITEM"), [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self._target((dict,), "SETITEMS"), items)

    def _set_items(self, target: Any, items: list) -> None:
        self._hashing(items[0::2])
        store = target._items if isinstance(target, Placeholder) else target
        for i in range(0, len(items) - 1, 2):
            store[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        self._append(self._target((list, _deque_type), "APPEND"), [value])

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._append(self._target((list, _deque_type), "APPENDS"), items)

    def _append(self, target: Any, items: list) -> None:
        self._spend(len(items))
        (target._list if isinstance(target, Placeholder) else target).extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        self._hashing(items)
        (target._items.update(dict.fromkeys(items)) if isinstance(target, Placeholder) else target.update(items))

    def load_tuple(self) -> None:
        value = self._made(tuple(self.pop_mark()))
        self.append(value)

    def load_tuple1(self) -> None:
        self.stack[-1] = self._made((self.stack[-1],))

    def load_tuple2(self) -> None:
        self.stack[-2:] = [self._made((self.stack[-2], self.stack[-1]))]

    def load_tuple3(self) -> None:
        self.stack[-3:] = [self._made((self.stack[-3], self.stack[-2], self.stack[-1]))]

    def load_empty_tuple(self) -> None:
        self.append(self._made(()))

    def load_frozenset(self) -> None:
        value = self._made(frozenset(self._hashing(self.pop_mark())))
        self.append(value)

    def load_list(self) -> None:
        value = self._made(self.pop_mark())
        self.append(value)

    def load_empty(self, kind: type) -> None:
        self.append(self._made(kind()))

    def load_dict(self) -> None:
        items = self.pop_mark()  # (pop_mark rebinds self.append: call it after)
        self._hashing(items[0::2])
        value = self._made({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})
        self.append(value)



# --- the special calls: they need the unpickler (placeholders, fresh objects, limits) -------------------------

def _reconstructor(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> Any:
    """copyreg._reconstructor(cls, base, state), protocol 0/1 objects."""
    if kwargs or len(args) != 3:
        raise RefusedCall("copyreg._reconstructor with unexpected arguments")
    cls, base, state = args
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        obj = cls()
        obj._state = state
        return obj
    if base is object and state is None:
        return u._new(cls, ())
    raise RefusedCall("copyreg._reconstructor of a builtin base")


def _newobj(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> Any:
    if kwargs or not args:
        raise RefusedCall("copyreg.__newobj__ without a class")
    return u._new(args[0], args[1:])


def _newobj_ex(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> Any:
    if kwargs or len(args) != 3:
        raise RefusedCall("copyreg.__newobj_ex__ with unexpected arguments")
    return u._new(args[0], args[1], args[2])


def _typing_alias(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> Any:
    """`operator.getitem(typing.Dict, (str, Any))` is how typing aliases pickle; kept as an inert record."""
    if kwargs or len(args) != 2 or not (id(args[0]) in _TYPING_VALUES or isinstance(args[0], Placeholder)):
        raise RefusedCall("operator.getitem other than on a typing form")
    return placeholder_class("typing", "alias")(*args)


def _enum_member(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> Any:
    """`getattr(EnumClass, 'NAME')`: allowed only on a placeholder class, where it names a member."""
    if kwargs or len(args) != 2 or type(args[1]) is not str or not (
            isinstance(args[0], type) and issubclass(args[0], Placeholder)):
        raise policy.RefusedName("builtins.getattr")
    return args[0](args[1])


def _tensor_v2(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> torch.Tensor:
    # (storage, offset, size, stride, requires_grad, backward_hooks[, metadata]): hooks and metadata are dropped
    if kwargs or not 4 <= len(args) <= 7:
        raise RefusedCall("_rebuild_tensor_v2 with unexpected arguments")
    return rebuild_tensor(u.limits, *args[:4])


def _parameter(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> torch.Tensor:
    # (data, requires_grad, backward_hooks[, state]): the loader only needs the data
    if kwargs or not 1 <= len(args) <= 4 or not isinstance(args[0], torch.Tensor):
        raise RefusedCall("_rebuild_parameter of something that is not a tensor")
    return args[0]


def _from_type_v2(u: RestrictedUnpickler, args: tuple, kwargs: dict) -> torch.Tensor:
    # (func, new_type, args, state): func must itself be a tensor rebuild helper; type and state are dropped
    if kwargs or len(args) != 4 or not isinstance(args[0], _Callable) or args[0].build not in (
            _tensor_v2, _parameter, _from_type_v2):
        raise RefusedCall("_rebuild_from_type_v2 of something that is not a tensor rebuild")
    return u._call(args[0], args[2])


_SPECIAL_CALLS: dict[tuple[str, str], Callable[..., Any]] = {
    ("copyreg", "_reconstructor"): _reconstructor, ("copyreg", "__newobj__"): _newobj,
    ("copyreg", "__newobj_ex__"): _newobj_ex, ("operator", "getitem"): _typing_alias,
    ("_operator", "getitem"): _typing_alias, ("builtins", "getattr"): _enum_member,
    ("torch._utils", "_rebuild_tensor_v2"): _tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _from_type_v2,
}
_SPECIAL_FUNCTIONS = frozenset(_SPECIAL_CALLS.values())
_deque_type = collections.deque


def unpickle(data: bytes, source: str, records: RecordLoader | None = None,
             limits: Limits = DEFAULT_LIMITS) -> Any:
    """The object pickled in `data`, built under the policy; any problem is one CheckpointError line."""
    if len(data) > limits.max_pickle_bytes:
        raise CheckpointError(f"{source}: its pickle is {len(data)} bytes (limit {limits.max_pickle_bytes})")
    try:
        return RestrictedUnpickler(data, source, records, limits).load()
    except CheckpointError:
        raise
    except policy.RefusedName as exc:
        raise UnsafeCheckpointError(
            f"refusing to load {source}: its pickle calls {short(str(exc.args[0]), 80)}, which could execute code; "
            "only load checkpoints from sources you trust, or re-save the weights as a plain state_dict") from None
    except RefusedCall as exc:
        raise UnsafeCheckpointError(f"refusing to load {source}: its pickle asks for {exc.args[0]}; "
                                    "the file is damaged or crafted") from None
    except (MemoryError, RecursionError) as exc:
        raise UnsafeCheckpointError(f"refusing to load {source}: {type(exc).__name__} while reading its pickle; "
                                    "the file is damaged or crafted") from None
    except Exception as exc:  # malformed pickle: report one line, not a stack trace
        raise CheckpointError(f"cannot read {source}: {describe_error(exc)}") from None

for _opcode, _method in {
    pickle.REDUCE: RestrictedUnpickler.load_reduce, pickle.NEWOBJ: RestrictedUnpickler.load_newobj,
    pickle.NEWOBJ_EX: RestrictedUnpickler.load_newobj_ex, pickle.BUILD: RestrictedUnpickler.load_build,
    pickle.EXT1: RestrictedUnpickler.load_ext, pickle.EXT2: RestrictedUnpickler.load_ext,
    pickle.EXT4: RestrictedUnpickler.load_ext, pickle.NEXT_BUFFER: RestrictedUnpickler.load_buffer,
    pickle.READONLY_BUFFER: RestrictedUnpickler.load_buffer, pickle.SETITEM: RestrictedUnpickler.load_setitem,
    pickle.SETITEMS: RestrictedUnpickler.load_setitems, pickle.APPEND: RestrictedUnpickler.load_append,
    pickle.APPENDS: RestrictedUnpickler.load_appends, pickle.ADDITEMS: RestrictedUnpickler.load_additems,
    pickle.TUPLE: RestrictedUnpickler.load_tuple, pickle.TUPLE1: RestrictedUnpickler.load_tuple1,
    pickle.TUPLE2: RestrictedUnpickler.load_tuple2, pickle.TUPLE3: RestrictedUnpickler.load_tuple3,
    pickle.EMPTY_TUPLE: RestrictedUnpickler.load_empty_tuple, pickle.FROZENSET: RestrictedUnpickler.load_frozenset,
    pickle.LIST: RestrictedUnpickler.load_list, pickle.DICT: RestrictedUnpickler.load_dict,
    pickle.EMPTY_LIST: lambda self: self.load_empty(list), pickle.EMPTY_DICT: lambda self: self.load_empty(dict),
    pickle.EMPTY_SET: lambda self: self.load_empty(set),
}.items():
    RestrictedUnpickler.dispatch[_opcode[0]] = _method
