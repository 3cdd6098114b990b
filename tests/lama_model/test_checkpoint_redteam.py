"""The red-team reproductions of issue 18 (loader part): each crafted file of a few KB must end in one
checkpoint-error line, in a bounded time and memory, without a signal, a traceback or lasting damage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hostile_checkpoints import (BUILD, EMPTY_DICT, EMPTY_LIST, MARK, NEWTRUE, POP, PROTO2, SETITEM, STOP, TUPLE1,
                                 TUPLE2,
                                 add_zero_bomb, call, dict_of, get, glob, integer, patch_central_header, put,
                                 run_corpus, storage_ref, tensor, text, tuple_of, write_archive)
from lama_model import CheckpointError, InpaintingModel, UnsafeCheckpointError, load_inpainting_model

REPO = Path(__file__).resolve().parents[2]
ANCHOR = "model.1.ffc.convl2l.weight"


def _poison_defaults(tmp: Path) -> Path:
    """GLOBAL torch._utils._rebuild_tensor_v2, then BUILD {'__defaults__': ({'neg': True},)}."""
    state = EMPTY_DICT + text("__defaults__") + dict_of(neg=NEWTRUE) + TUPLE1 + SETITEM
    payload = PROTO2 + glob("torch._utils", "_rebuild_tensor_v2") + state + BUILD + STOP
    return write_archive(tmp / "poison.ckpt", payload)


def _deep_tuple_key(depth: int):
    def build(tmp: Path) -> Path:
        key = b")" + TUPLE1 * depth
        return write_archive(tmp / f"deep{depth}.ckpt", PROTO2 + EMPTY_DICT + key + integer(1) + SETITEM + STOP,
                             compress_pickle=True)
    return build


def _deep_dicts(tmp: Path) -> Path:
    """2x10^4 nested dicts built top-down through the memo (no nesting visible when each is created)."""
    body = [PROTO2, EMPTY_DICT, put(0), POP]
    for level in range(1, 20_001):
        body += [get(level - 1), text("a"), EMPTY_DICT, put(level), SETITEM, POP]
    return write_archive(tmp / "deepdicts.ckpt", b"".join(body) + get(0) + STOP, compress_pickle=True)


def _hash_bomb(tmp: Path) -> Path:
    """t = ("a",); 15 x t = (t, t) (32,768 leaves, 16 objects); then 10^5 dict keys (i, t): hashing them all
    would take 6.5e9 steps (a tuple hash is not cached)."""
    body = [PROTO2, text("a"), TUPLE1, put(0), POP]
    for level in range(1, 16):
        body += [get(level - 1), get(level - 1), TUPLE2, put(level), POP]
    body += [EMPTY_DICT] + [integer(i) + get(15) + TUPLE2 + integer(0) + SETITEM for i in range(100_000)]
    return write_archive(tmp / "hash.ckpt", b"".join(body) + STOP, compress_pickle=True)


def _shared_dag(tmp: Path) -> Path:
    """d = {'t': tensor}; 31 x d = {'a': d, 'b': d}: 2^31 paths, 32 objects."""
    body = PROTO2 + dict_of(t=tensor("0", 4, (4,), (1,))) + put(0) + POP
    for level in range(1, 32):
        body += dict_of(a=get(level - 1), b=get(level - 1)) + put(level) + POP
    return write_archive(tmp / "dag.ckpt", body + get(31) + STOP, {"0": bytes(16)})


def _many_blocks(tmp: Path) -> Path:
    """A real-looking anchor plus 2000 fake block keys, all views of one small record."""
    items = {ANCHOR: tensor("0", 4, (8, 4, 7, 7), (0, 0, 0, 0)),
             "model.0.weight": tensor("0", 4, (8, 4, 1, 1), (0, 0, 0, 0))}
    items.update({f"model.{i}.conv1.ffc.convl2l.weight": tensor("0", 4, (1,), (1,)) for i in range(5, 2005)})
    return write_archive(tmp / "blocks.ckpt", PROTO2 + dict_of(**items) + STOP, {"0": bytes(16)}, compress_pickle=True)


def _anchor_only(tmp: Path, name: str, anchor: bytes, record: bytes) -> Path:
    return write_archive(tmp / name, PROTO2 + dict_of(**{ANCHOR: anchor}) + STOP, {"0": record})


def _huge_stem(tmp: Path) -> Path:
    return _anchor_only(tmp, "stem.ckpt", tensor("0", 1, (3000, 3000, 7, 7), (0, 0, 0, 0)), bytes(4))


def _set_over_stride0(kind: str):
    def build(tmp: Path) -> Path:
        module, name = kind.split(".")
        view = tensor("0", 1, (10_000_000,), (0,))
        return write_archive(tmp / f"{name}.ckpt", PROTO2 + call(glob(module, name), view) + STOP, {"0": bytes(4)})
    return build


def _billion_laughs_in_message(tmp: Path) -> Path:
    """A list of 10 references to a list of 10 references ... (10^9 leaves) as a record key: any repr of it in
    an error message would take minutes and gigabytes."""
    body = [PROTO2, EMPTY_LIST, text("lol"), b"a", put(0), POP]
    for level in range(1, 10):
        body += [EMPTY_LIST, MARK] + [get(level - 1)] * 10 + [b"e", put(level), POP]
    ref = tuple_of(text("storage"), glob("torch", "FloatStorage"), get(9), text("cpu"), integer(1)) + b"Q"
    return write_archive(tmp / "laughs.ckpt", b"".join(body) + ref + STOP, {"0": bytes(4)})


def _unreferenced_zip_bomb(tmp: Path) -> Path:
    path = write_archive(tmp / "unref.ckpt", PROTO2 + dict_of(epoch=integer(1)) + STOP)
    add_zero_bomb(path, "archive/data/99", 64 << 20)
    return path


def _referenced_zip_bomb(tmp: Path) -> Path:
    numel = (64 << 20) // 4
    path = write_archive(tmp / "ref.ckpt", PROTO2 + dict_of(**{ANCHOR: tensor("0", numel, (numel,), (1,))}) + STOP)
    add_zero_bomb(path, "archive/data/0", 64 << 20)
    return path


def _tensor_allocation(tmp: Path) -> Path:
    return write_archive(tmp / "alloc.ckpt", PROTO2 + call(glob("torch", "Tensor"), integer(1 << 30)) + STOP)


def _tensor_beyond_record(tmp: Path) -> Path:
    return _anchor_only(tmp, "beyond.ckpt", tensor("0", 1, (8, 4, 7, 7), (196, 49, 7, 1)), bytes(4))


def _record_smaller_than_declared(tmp: Path) -> Path:
    return _anchor_only(tmp, "short.ckpt", tensor("0", 1568, (8, 4, 7, 7), (196, 49, 7, 1)), bytes(4))


def _legit_archive(tmp: Path, name: str) -> Path:
    path = tmp / name
    torch.save({ANCHOR: torch.ones(8, 4, 7, 7)}, path)
    return path


def _bad_crc(tmp: Path) -> Path:
    path = _legit_archive(tmp, "crc.ckpt")
    data = bytearray(path.read_bytes())
    offset = data.find(bytes(torch.ones(1).numpy().tobytes()))  # inside the stored record of ones
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _encrypted(tmp: Path) -> Path:
    path = _legit_archive(tmp, "encrypted.ckpt")
    patch_central_header(path, "data.pkl", flag_bits=0x1)
    return path


def _unknown_compression(tmp: Path) -> Path:
    path = _legit_archive(tmp, "method.ckpt")
    patch_central_header(path, "data.pkl", compression=99)
    return path


def _one_d_anchor(tmp: Path) -> Path:
    path = tmp / "anchor1d.ckpt"
    torch.save({ANCHOR: torch.ones(3)}, path)
    return path


# name -> (builder, what the one-line error must say)
HOSTILE = {
    "poison-defaults": (_poison_defaults, "BUILD on a"),
    "deep-tuple-1e6": (_deep_tuple_key(10**6), "nesting deeper than 100"),
    "deep-tuple-1e5": (_deep_tuple_key(10**5), "nesting deeper than 100"),
    "deep-dicts-2e4": (_deep_dicts, "deeper than 100 levels"),
    "hash-bomb": (_hash_bomb, "more than 5000000 objects"),
    "shared-dag-31": (_shared_dag, "no LaMa generator found"),
    "2000-blocks": (_many_blocks, "2000 blocks"),
    "3000x3000-stem": (_huge_stem, "441000000 elements"),
    "set-stride0": (_set_over_stride0("builtins.set"), "set of a Tensor"),
    "ordereddict-stride0": (_set_over_stride0("collections.OrderedDict"), "OrderedDict of a Tensor"),
    "billion-laughs-message": (_billion_laughs_in_message, "malformed tensor data reference"),
    "unreferenced-zip-bomb": (_unreferenced_zip_bomb, "no LaMa generator found"),
    "referenced-zip-bomb": (_referenced_zip_bomb, "expand more than 20x"),
    "torch-Tensor-n": (_tensor_allocation, "a call of a Tensor"),
    "tensor-beyond-record": (_tensor_beyond_record, "needs 1568 elements but its data record holds 1"),
    "record-smaller-than-declared": (_record_smaller_than_declared, "holds 4 bytes but its tensor storage needs 6272"),
    "bad-crc": (_bad_crc, "BadZipFile"),
    "encrypted": (_encrypted, "encrypted"),
    "unknown-compression": (_unknown_compression, "compression method 99"),
    "1d-anchor": (_one_d_anchor, "not a 4-D convolution weight"),
}

def test_hostile_checkpoints_end_in_one_line(tmp_path: Path) -> None:
    paths = {name: str(build(tmp_path)) for name, (build, _) in HOSTILE.items()}
    assert max(os.path.getsize(p) for p in paths.values()) < 1_200_000  # a few KB (the zip bombs: < 1.2 MB)
    results = run_corpus(list(paths.values()), REPO, timeout=400)
    for name, path in paths.items():
        result = results[path]
        message = result["stderr"]
        assert result["rc"] == 2, f"{name}: {result}"
        assert message.startswith("lama-deploy: error: ") and message.count("\n") == 1, f"{name}: {message!r}"
        assert "Traceback" not in message and len(message) < 500, f"{name}: {message!r}"
        assert HOSTILE[name][1] in message, f"{name}: {message!r}"
        assert result["seconds"] < 60, f"{name}: {result['seconds']:.1f} s"
    peak = max(r["maxrss_mb"] for r in results.values())
    assert peak < 2048, f"peak RSS {peak:.0f} MB"


def test_poisoning_build_changes_nothing_in_the_process(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    """After the poisoning file, a legitimate checkpoint (ours and torch.load weights_only) loads unchanged."""
    defaults = torch._utils._rebuild_tensor_v2.__defaults__
    with pytest.raises(UnsafeCheckpointError, match="BUILD on a"):
        load_inpainting_model(_poison_defaults(tmp_path))
    for target in (glob("__builtin__", "dict"), glob("collections", "OrderedDict"), glob("typing", "Any"),
                   glob("torch", "FloatStorage"), glob("omegaconf.dictconfig", "DictConfig"),
                   glob("copyreg", "_reconstructor")):
        path = write_archive(tmp_path / "p2.ckpt", PROTO2 + target + dict_of(__module__=text("x")) + BUILD + STOP)
        with pytest.raises(UnsafeCheckpointError, match="BUILD on a"):
            load_inpainting_model(path)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == defaults
    torch.save(tiny_model.generator.state_dict(), tmp_path / "gen.pth")
    loaded = load_inpainting_model(tmp_path / "gen.pth")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tiny_model.state_dict().values()))
    reference = torch.load(tmp_path / "gen.pth", weights_only=True)
    assert all(torch.equal(reference[k], v) for k, v in tiny_model.generator.state_dict().items())


def test_cli_refuses_a_poisoned_checkpoint_in_one_line(tmp_path: Path) -> None:
    """The real command line: exit 2, one line on stderr, nothing written."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    output = tmp_path / "out.onnx"
    proc = subprocess.run([sys.executable, "-m", "lama_deploy.scripts.cli", "export", "--checkpoint",
                           str(_poison_defaults(tmp_path)), "--output", str(output)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "refusing to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not output.exists()
