"""How much graph a Fourier unit costs in each exported form: nodes, layout ops and FLOPs per unit.

    lama-deploy fourier-report big-lama-matmul.onnx big-lama-dense.onnx [--side 64]   (scripts/commands/fourier_report.py)

On a GPU a Fourier unit's time at 512x512 is mostly kernel launches and layout copies, not arithmetic
(docs/benchmarks.md, "Fourier forms"), so the graph is counted per unit: every node in a unit's scope
(`/fu/`), split into size arithmetic (runtime-size ops building the DFT bases and reshape targets: computed
once, tiny), data-path ops (those touching the activations), and among the latter the layout ops that move
activations without arithmetic (Transpose, Concat, Slice, Split, Gather; Reshape listed apart as it is a
view unless its input was just transposed). FLOPs are counted on one PyTorch Fourier unit with
`torch.utils.flop_counter.FlopCounterMode` at the bottleneck size.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx

LAYOUT_OPS = ("Transpose", "Concat", "Slice", "Split", "Gather")
FU_SCOPE = "/fu/"


def unit_scopes(model: onnx.ModelProto) -> list[str]:
    """Scope prefixes of the Fourier units, in graph order ('/generator/.../fu/')."""
    scopes: dict[str, None] = {}
    for node in model.graph.node:
        if FU_SCOPE in node.name:
            scopes[node.name[: node.name.index(FU_SCOPE) + len(FU_SCOPE)]] = None
    return list(scopes)


def _unit_counts(nodes: list[onnx.NodeProto], size_nodes: set[str]) -> dict[str, int]:
    data = [n for n in nodes if n.name not in size_nodes and n.op_type != "Constant"]
    ops = Counter(n.op_type for n in data)
    return {
        "nodes": sum(n.op_type != "Constant" for n in nodes),
        "size_arithmetic": sum(n.name in size_nodes and n.op_type != "Constant" for n in nodes),
        "data_ops": len(data),
        "matmuls": ops["MatMul"],
        "layout_ops": sum(ops[op] for op in LAYOUT_OPS),
        "reshapes": ops["Reshape"],
    }


def fourier_graph_counts(model: onnx.ModelProto) -> dict[str, object]:
    """Per-unit counts of a typical unit (the last one) and what the first unit adds (shared bases)."""
    from .fp16 import size_arithmetic_nodes

    size_nodes = set(size_arithmetic_nodes(model))
    scopes = unit_scopes(model)
    if not scopes:
        raise ValueError("no Fourier-unit nodes ('/fu/' in the node names) in this graph")
    by_scope = {s: [n for n in model.graph.node if n.name.startswith(s)] for s in scopes}
    typical = _unit_counts(by_scope[scopes[-1]], size_nodes)
    first = _unit_counts(by_scope[scopes[0]], size_nodes)
    return {"units": len(scopes), **typical, "shared_once": first["nodes"] - typical["nodes"],
            "graph_nodes": sum(n.op_type != "Constant" for n in model.graph.node)}


def fourier_unit_gflop(fourier: str, channels: int = 192, height: int = 64, width: int = 64) -> float:
    """GFLOP of one Fourier unit (big-lama: 192 channels, 64x64 bottleneck at 512x512), batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lama_model.ffc import FourierUnit

    unit = FourierUnit(channels, fourier).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        unit(torch.zeros(1, channels, height, width))
    return counter.get_total_flops() / 1e9


def report_rows(paths: list[Path]) -> list[dict[str, object]]:
    return [{"onnx": path.name, **fourier_graph_counts(onnx.load(str(path), load_external_data=False))}
            for path in paths]


def unit_gflop_lines(side: int) -> list[str]:
    """One line per Fourier form: GFLOP of one unit at a side x side bottleneck."""
    return [f"{form}: {fourier_unit_gflop(form, height=side, width=side):.2f} GFLOP per unit at {side}x{side}"
            for form in ("matmul", "matmul-dense", "torch")]


def markdown(rows: list[dict[str, object]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)
