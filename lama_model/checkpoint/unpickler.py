"""A restricted, budgeted unpickler for checkpoints: nothing in the file can run code, poison the process or
exhaust the machine.

Built on the pure-Python `pickle._Unpickler` so that every opcode goes through the checks here:
- names are resolved by `policy` without importing anything; unknown ones become inert `Placeholder` classes
  (made for this read only, at most `max_classes`), names that can run code are refused;
- only allowlisted constructors are called (REDUCE / NEWOBJ / INST / OBJ), with checked arguments;
- BUILD, SETITEM, APPEND and ADDITEMS only touch objects this unpickler just created (never a function, class
  or module reached through GLOBAL, so a file cannot rewrite `torch._utils` for the whole process), and BUILD
  never hides an attribute of the object's type (`items`, say) from code that later reads the object;
- everything is charged to one `Budget` as it happens: each opcode (count, a stack slot, the clock), each
  object and element created or copied by its real size (`sys.getsizeof`; estimates for placeholders, tensors,
  MARKs, memo entries and classes), and the work of hashing keys;
- hashing stays cheap: tuples/frozensets are bounded in depth and hashing cost when created, int keys are
  refused above KEY_INT_BITS (below it no two ints share a hash), and no dict or set may hold more than
  MAX_SAME_HASH keys with one hash value (crafted collisions);
- tensors are rebuilt only over records that hold every byte they need (no uninitialised memory).
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import io
import pickle
import struct
import sys
from typing import Any, BinaryIO, Callable, Iterable

import torch

from . import policy
from .budget import Budget
from .records import (DEFAULT_LIMITS, DOWNLOAD_AGAIN, STORAGE_DTYPES, CheckpointError, DamagedCheckpointError,
                      Limits, RecordLoader, RefusedCall, StorageType, UnsafeCheckpointError, describe_error,
                      rebuild_tensor, short)

# Bytes charged where sys.getsizeof cannot see (CPython 3.8-3.13, 64-bit, rounded up).
_BOOKKEEPING_BYTES = 128  # one entry in this unpickler's own tables (fresh objects, tuple shapes, key hashes)
_MARK_BYTES = 72  # the list a MARK opens, and its metastack slot
_MEMO_BYTES = 112  # one memo entry (its dict slot, index and key int)
_CLASS_BYTES = 4096  # a placeholder class (type object, its dict, MRO and name)
_OPAQUE_BYTES = 1024  # a placeholder instance (its dicts and list) or a tensor (Python object and TensorImpl)

KEY_INT_BITS = 60  # ints below CPython's hash modulus 2**61 - 1 hash to themselves: no two keys collide
MAX_SAME_HASH = 64  # keys of one dict or set sharing a hash value (each insertion compares against the others)
MAX_TEXT_INT_DIGITS = 4300  # decimal ints in the pickle (text to int is quadratic; CPython's own limit since 3.11)
_INT_HASH_BITS = 600  # hashing an int reads all its digits: one unit of hashing work per this many bits


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


class _Callable:
    """What GLOBAL pushes for an allowlisted function (never the real function object)."""

    __slots__ = ("key", "build")

    def __init__(self, key: tuple[str, str], build: Callable[..., Any]) -> None:
        self.key, self.build = key, build


_CONSTRUCTOR_OF_VALUE = {id(policy.VALUES[key]): key for key in policy.CONSTRUCTORS if key in policy.VALUES}
_TYPING_VALUES = {id(value) for (module, _), value in policy.VALUES.items() if module == "typing"}
_MUTABLE = (dict, list, set, collections.deque, argparse.Namespace, Placeholder)  # targets of BUILD/SETITEM/...
_SIZED = (list, tuple, dict, set, frozenset, collections.deque)  # their elements are charged by len()
_COLLISION_FREE = (str, bytes, int, bool, type(None))  # str/bytes hashes are randomised; int keys are bounded


def _size(obj: Any) -> int:
    if isinstance(obj, (Placeholder, torch.Tensor)):
        return _OPAQUE_BYTES
    try:
        return sys.getsizeof(obj)
    except TypeError:
        return _OPAQUE_BYTES


class RestrictedUnpickler(pickle._Unpickler):
    """Reads one pickle under the policy and the budget; see `unpickle` for the errors it ends in."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, source: str, records: RecordLoader | None = None,
                 limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None) -> None:
        super().__init__(file, encoding="latin1")
        self._source, self._records, self.limits = source, records, limits
        self.budget = budget if budget is not None else Budget(limits)
        self._fresh: dict[int, Any] = {}  # mutable objects made here: the only targets of BUILD/SETITEM/APPEND
        self._shape: dict[int, tuple[int, int]] = {}  # tuples/frozensets: (depth, hashing cost)
        self._key_hashes: dict[int, dict[int, int]] = {}  # dict/set id -> hash value -> keys with that hash
        self._classes: dict[tuple[str, str], type] = {}  # this read's placeholder classes

    def load(self) -> Any:
        """pickle._Unpickler.load, with every opcode counted and the clock checked (every 1024 opcodes)."""
        self._unframer = pickle._Unframer(self._file_read, self._file_readline)
        self.read, self.readinto, self.readline = self._unframer.read, self._unframer.readinto, \
            self._unframer.readline
        self.metastack, self.stack = [], []
        self.append = self.stack.append
        self.proto = 0
        read, dispatch, budget, count = self.read, self.dispatch, self.budget, 0
        try:
            while True:
                key = read(1)
                if not key:
                    raise EOFError
                handler = dispatch.get(key[0])
                if handler is None:
                    raise pickle.UnpicklingError(f"unknown pickle opcode 0x{key[0]:02x}")
                handler(self)
                count += 1
                if count == 1024:
                    budget.run(count)
                    count = 0
        except pickle._Stop as stop:
            budget.run(count + 1)  # STOP itself
            return stop.value

    def forget(self) -> None:
        """Drop everything this read holds, so a refused file leaves nothing alive (not even via a traceback)."""
        for table in (self.memo, self._fresh, self._shape, self._key_hashes, self._classes):
            table.clear()
        self.stack, self.metastack = [], []

    # --- charging ------------------------------------------------------------------------------------------
    def _made(self, obj: Any) -> Any:
        """Charge a new object by its size and elements; register it as a target or a hashable shape."""
        memory = _size(obj)
        if type(obj) is tuple or type(obj) is frozenset:
            self._register_shape(obj)
            memory += _BOOKKEEPING_BYTES
        elif isinstance(obj, _MUTABLE):
            self._fresh[id(obj)] = obj
            memory += _BOOKKEEPING_BYTES
        self.budget.spend(1 + (len(obj) if isinstance(obj, _SIZED) else 0), memory)
        return obj

    def _register_shape(self, obj: Any) -> None:
        """Depth and hashing cost of a tuple/frozenset, from its children's (a tuple's hash is not cached: a
        shared wide tuple used as many keys would otherwise cost its expanded size every time)."""
        depth, cost = 1, 1
        for child in obj:
            kind = type(child)
            if kind is tuple or kind is frozenset:
                child_depth, child_cost = self._shape.get(id(child), (0, 1))
            else:
                child_depth, child_cost = 0, 1 + (child.bit_length() // _INT_HASH_BITS if kind is int else 0)
            depth, cost = max(depth, child_depth + 1), cost + child_cost
        if depth > self.limits.max_depth or cost > self.limits.max_tuple_size:
            raise RefusedCall(f"nesting deeper than {self.limits.max_depth} or wider than "
                              f"{self.limits.max_tuple_size} elements")
        self._shape[id(obj)] = (depth, cost)

    def _hash_keys(self, keys: Iterable[Any], owner: int | None = None) -> None:
        """Charge hashing `keys` into one dict or set (`owner`: its id, when keys arrive over several opcodes)
        and refuse what would make hashing unbounded: an int key beyond KEY_INT_BITS, or more than
        MAX_SAME_HASH keys sharing a hash value (crafted collisions make each insertion probe all the others)."""
        cost, memory, table = 0, 0, None
        for key in keys:
            kind = type(key)
            if kind is int and key.bit_length() > KEY_INT_BITS:
                raise RefusedCall(f"a dict or set key that is an integer of {key.bit_length()} bits "
                                  f"(keys may have up to {KEY_INT_BITS})")
            if kind in _COLLISION_FREE or isinstance(key, (Placeholder, type)):
                cost += 1
                continue
            # Charged before hashing: Python's hash, ours, and an equality test on a collision.
            self.budget.spend(3 * (self._shape.get(id(key), (0, 1))[1] if kind in (tuple, frozenset) else 1))
            try:
                value = hash(key)
            except TypeError:
                continue  # unhashable: inserting it fails on its own
            if table is None:
                table = {} if owner is None else self._key_hashes.setdefault(owner, {})
            count = table.get(value, 0) + 1
            table[value] = count
            memory += _BOOKKEEPING_BYTES if count == 1 else 0
            if count > MAX_SAME_HASH:
                raise RefusedCall(f"more than {MAX_SAME_HASH} keys of one dict or set with the same hash "
                                  "(crafted hash collisions)")
        self.budget.spend(cost, memory)

    def _grown(self, store: Any, before: int) -> None:
        """Charge what a container grew by (its items were charged when they were made)."""
        self.budget.spend(0, max(0, sys.getsizeof(store) - before))

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
            return _Callable(key, policy.CONSTRUCTORS.get(key) or _SPECIAL_CALLS[key])
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if module.split(".")[0] in policy.DENIED_MODULES:
            raise policy.RefusedName(f"{module}.{name}")
        return self.placeholder_class(module, name)

    def placeholder_class(self, module: str, name: str) -> type:
        """The inert class standing for `module.name` in this read (one per name, at most max_classes)."""
        key = (module[:200], name[:200])
        cls = self._classes.get(key)
        if cls is None:
            if len(self._classes) >= self.limits.max_classes:
                raise RefusedCall(f"more than {self.limits.max_classes} different unknown classes")
            self.budget.spend(1, _CLASS_BYTES)
            cls = _PlaceholderMeta(short(name, 100) or "unnamed", (Placeholder,),
                                   {"__module__": f"placeholder.{short(module, 100)}"})
            self._classes[key] = cls
        return cls

    def _call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        kwargs = {} if kwargs is None else kwargs
        if type(args) not in (tuple, list) or type(kwargs) is not dict:
            raise RefusedCall("a call whose arguments are not a tuple")
        args = tuple(args)
        self.budget.spend(len(args) + len(kwargs) + sum(len(a) for a in args if isinstance(a, _SIZED)))
        if isinstance(func, _Callable):
            key, build = func.key, func.build
        elif id(func) in _CONSTRUCTOR_OF_VALUE:
            key = _CONSTRUCTOR_OF_VALUE[id(func)]
            build = policy.CONSTRUCTORS[key]
        elif isinstance(func, type) and issubclass(func, Placeholder):
            return self._made(func(*args, **kwargs))
        else:
            raise RefusedCall(f"a call of a {short(getattr(func, '__name__', type(func).__name__))}, "
                              "which is not a constructor the loader allows")
        self._charge_hashed_argument(key, args)
        if build in _SPECIAL_FUNCTIONS:  # these need the unpickler itself
            return self._made(build(self, args, kwargs))
        return self._made(build(self.limits.max_tuple_size, args, kwargs))

    def _charge_hashed_argument(self, key: tuple[str, str], args: tuple) -> None:
        """set(x), dict(pairs), Counter(x), ... hash the keys of their iterable argument: charge that."""
        hashed = policy.HASHED_ARGUMENTS.get(key)
        if hashed is None or len(args) <= hashed[0]:
            return
        arg, how = args[hashed[0]], hashed[1]
        if isinstance(arg, dict):
            self._hash_keys(dict.keys(arg))
        elif how == "pairs" and type(arg) in (list, tuple):
            self._hash_keys(item[0] for item in arg if type(item) in (list, tuple) and len(item) == 2)
        elif type(arg) in (list, tuple, set, frozenset):
            self._hash_keys(arg)

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
        hidden = [k for k in state if hasattr(type(obj), k)]
        if hidden:  # an instance attribute `items` would hide the method from whoever reads the object later
            raise RefusedCall(f"BUILD of a {type(obj).__name__} that hides its attribute {short(hidden[0], 40)}")
        attributes = vars(obj)
        before = sys.getsizeof(attributes)
        attributes.update(state)
        self._grown(attributes, before)

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        self._set_items(self._target((dict,), "SETITEM"), [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self._target((dict,), "SETITEMS"), items)

    def _set_items(self, target: Any, items: list) -> None:
        store = target._items if isinstance(target, Placeholder) else target
        self._hash_keys(items[0::2], id(store))
        before = sys.getsizeof(store)
        for i in range(0, len(items) - 1, 2):
            store[items[i]] = items[i + 1]
        self._grown(store, before)

    def load_append(self) -> None:
        value = self.stack.pop()
        self._append(self._target((list, collections.deque), "APPEND"), [value])

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._append(self._target((list, collections.deque), "APPENDS"), items)

    def _append(self, target: Any, items: list) -> None:
        store = target._list if isinstance(target, Placeholder) else target
        self.budget.spend(len(items))
        before = sys.getsizeof(store)
        store.extend(items)
        self._grown(store, before)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        store = target._items if isinstance(target, Placeholder) else target
        self._hash_keys(items, id(store))
        before = sys.getsizeof(store)
        store.update(dict.fromkeys(items)) if isinstance(target, Placeholder) else store.update(items)
        self._grown(store, before)

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
        items = self.pop_mark()
        self._hash_keys(items)
        value = self._made(frozenset(items))
        self.append(value)

    def load_list(self) -> None:
        value = self._made(self.pop_mark())
        self.append(value)

    def load_empty(self, kind: type) -> None:
        self.append(self._made(kind()))

    def load_dict(self) -> None:
        items = self.pop_mark()  # (pop_mark rebinds self.append: call it after)
        self._hash_keys(items[0::2])
        value = self._made({items[i]: items[i + 1] for i in range(0, len(items) - 1, 2)})
        self.append(value)

    # --- opcodes that allocate without calling anything ----------------------------------------------------
    def load_mark(self) -> None:
        self.budget.spend(0, _MARK_BYTES)
        super().load_mark()

    def load_frame(self) -> None:
        size = struct.unpack("<Q", self.read(8))[0]
        self.budget.spend(0, size)  # the frame is copied out of the pickle before it is read
        self._unframer.load_frame(size)

    def load_bytearray8(self) -> None:
        size = struct.unpack("<Q", self.read(8))[0]
        self.budget.spend(0, size)  # allocated before its bytes are read
        value = bytearray(size)
        if self.readinto(value) != size:
            raise EOFError
        self.append(value)

    def load_int(self) -> None:
        text = self._decimal(self.readline())
        self.append(False if text == b"00" else True if text == b"01" else int(text, 0))
        self._charge_top()

    def load_long(self) -> None:
        text = self._decimal(self.readline())
        self.append(int(text[:-1] if text.endswith(b"L") else text, 0))
        self._charge_top()

    def load_put(self) -> None:
        self._memoize(int(self._decimal(self.readline(), 10)))

    def load_binput(self) -> None:
        self._memoize(self.read(1)[0])

    def load_long_binput(self) -> None:
        self._memoize(struct.unpack("<I", self.read(4))[0])

    def load_memoize(self) -> None:
        self._memoize(len(self.memo))

    def load_get(self) -> None:
        index = int(self._decimal(self.readline(), 10))
        if index not in self.memo:
            raise pickle.UnpicklingError(f"memo value not found at index {index}")
        self.append(self.memo[index])

    def _memoize(self, index: int) -> None:
        if index not in self.memo:
            self.budget.spend(0, _MEMO_BYTES)
        self.memo[index] = self.stack[-1]

    def _decimal(self, line: bytes, digits: int = MAX_TEXT_INT_DIGITS) -> bytes:
        text = line[:-1]
        if len(text) > digits + 2:
            raise RefusedCall(f"a decimal number of more than {digits} digits")
        return text

    def _charge_top(self) -> None:
        self.budget.spend(0, _size(self.stack[-1]))


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
    return u.placeholder_class("typing", "alias")(*args)


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


def unpickle(data: bytes, source: str, records: RecordLoader | None = None, limits: Limits = DEFAULT_LIMITS,
             budget: Budget | None = None) -> Any:
    """The object pickled in `data`, built under the policy and the budget; any problem is one CheckpointError
    line (UnsafeCheckpointError for what a crafted file asks, DamagedCheckpointError for a broken one)."""
    if len(data) > limits.max_pickle_bytes:
        raise UnsafeCheckpointError(f"{source}: its pickle is {len(data)} bytes (limit {limits.max_pickle_bytes})")
    return unpickle_stream(io.BytesIO(data), source, records, limits, budget)


def unpickle_stream(stream: BinaryIO, source: str, records: RecordLoader | None = None,
                    limits: Limits = DEFAULT_LIMITS, budget: Budget | None = None) -> Any:
    """The next object pickled in `stream` (an in-memory file), which is left just after it."""
    unpickler = RestrictedUnpickler(stream, source, records, limits, budget)
    try:
        return unpickler.load()
    except Exception as exc:  # MemoryError and RecursionError included; KeyboardInterrupt is not
        error = refusal(exc, source)
    finally:
        unpickler.forget()
    raise error  # outside the handler: the error keeps no reference to the failed read


def refusal(exc: Exception, source: str) -> CheckpointError:
    """The one-line error for an exception raised while reading the pickle of `source`."""
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, policy.RefusedName):
        return UnsafeCheckpointError(
            f"refusing to load {source}: its pickle calls {short(str(exc.args[0]), 80)}, which could execute code; "
            "only load checkpoints from sources you trust, or re-save the weights as a plain state_dict")
    if isinstance(exc, RefusedCall):
        return UnsafeCheckpointError(f"refusing to load {source}: its pickle asks for {exc.args[0]}; "
                                     "the file is damaged or crafted")
    if isinstance(exc, (MemoryError, RecursionError)):
        return UnsafeCheckpointError(f"refusing to load {source}: {type(exc).__name__} while reading its pickle; "
                                     "the file is damaged or crafted")
    if isinstance(exc, EOFError) or "truncated" in str(exc) or "exhausted" in str(exc):
        return DamagedCheckpointError(f"cannot read {source}: its pickle ends before it is complete (the file is "
                                      "truncated: an interrupted download?); download it again")
    return DamagedCheckpointError(f"cannot read {source}: {describe_error(exc)}; {DOWNLOAD_AGAIN}")


def _charged(load: Callable[[Any], None]) -> Callable[[Any], None]:
    """A base-class opcode that pushes a value read from the pickle, charged by the value's size."""
    def run(self: RestrictedUnpickler) -> None:
        load(self)
        self._charge_top()
    return run


for _opcode in (pickle.BININT, pickle.BININT1, pickle.BININT2, pickle.LONG1, pickle.LONG4, pickle.FLOAT,
                pickle.BINFLOAT, pickle.STRING, pickle.BINSTRING, pickle.SHORT_BINSTRING, pickle.BINBYTES,
                pickle.SHORT_BINBYTES, pickle.BINBYTES8, pickle.UNICODE, pickle.BINUNICODE, pickle.SHORT_BINUNICODE,
                pickle.BINUNICODE8):
    RestrictedUnpickler.dispatch[_opcode[0]] = _charged(pickle._Unpickler.dispatch[_opcode[0]])

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
    pickle.EMPTY_SET: lambda self: self.load_empty(set), pickle.MARK: RestrictedUnpickler.load_mark,
    pickle.FRAME: RestrictedUnpickler.load_frame, pickle.BYTEARRAY8: RestrictedUnpickler.load_bytearray8,
    pickle.INT: RestrictedUnpickler.load_int, pickle.LONG: RestrictedUnpickler.load_long,
    pickle.PUT: RestrictedUnpickler.load_put, pickle.BINPUT: RestrictedUnpickler.load_binput,
    pickle.LONG_BINPUT: RestrictedUnpickler.load_long_binput, pickle.MEMOIZE: RestrictedUnpickler.load_memoize,
    pickle.GET: RestrictedUnpickler.load_get,
}.items():
    RestrictedUnpickler.dispatch[_opcode[0]] = _method
