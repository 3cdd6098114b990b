"""Ready-to-copy `trtexec` and `polygraphy convert` lines for each TensorRT generation this project targets.

    python -m lama_deploy.scripts.trtexec_commands --onnx big-lama.onnx --print                 # show them
    python -m lama_deploy.scripts.trtexec_commands --onnx big-lama.onnx --out-dir scripts/trtexec  # write .sh files

Flags per version (NVIDIA/TensorRT `samples/common/sampleOptions.cpp` at release/8.5, 8.6, 10.0, 10.3, 11.1;
shared notes tensorrt-onnx-facts.md section 4):
- `--memPoolSize=workspace:N` (MiB) everywhere; `--workspace`, `--explicitBatch` are gone from 10.0;
- build only: `--buildOnly` (8.5), `--skipInference` (8.6+; `--buildOnly` removed in 10.0);
- `--builderOptimizationLevel` from 8.6; several profiles (`--profile=i`) from 10.0;
- fp16 on 8.x/10.x (weak typing): `--fp16 --precisionConstraints=obey` with `--layerPrecisions` and
  `--layerOutputTypes`. 8.5 accepts '*' only as a whole name, meaning "every layer not listed", and the
  ONNX parser adds helper layers (`ONNXTRT_*`) that carry no scope, so the lists say `*:fp32` and name the
  generator's own conv/norm/activation layers (read from the ONNX) as fp16: the Fourier units, the DFT
  bases and every unnamed helper stay fp32. 10.x gets the same lists (its one-'*' wildcard cannot say
  "everything under /fu/ in every block" in one pattern, and would miss the helpers);
- 11.x is strongly typed: no precision flags at all (`--fp16` is removed, `--stronglyTyped` a no-op), so
  fp16 means the fp16 ONNX (`lama-deploy export --precision fp16`). 10.x builds that ONNX with `--stronglyTyped`;
- `--noTF32` everywhere: TF32 would round the fp32 DFT matmuls to a 10-bit mantissa.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run by path from a checkout: see lama_deploy/__init__.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lama_deploy import contract as C  # noqa: E402
from lama_deploy.errors import UserError, cli_entry, missing_dependency  # noqa: E402
from lama_deploy.export.polygraphy_hooks import HOOK_SCRIPT, polygraphy_no_tf32, polygraphy_pin_fp32  # noqa: E402
from lama_deploy.files import atomic_output  # noqa: E402
from lama_deploy.model_facts import read_model_facts  # noqa: E402
from lama_deploy.profiles import Profile  # noqa: E402
from lama_deploy.scripts.commands.arguments import add_profile_options, profiles_from  # noqa: E402

PROG = "python -m lama_deploy.scripts.trtexec_commands"
ONNX_VAR, ENGINE_VAR, CACHE_VAR = "${ONNX}", "${ENGINE}", "${TIMING_CACHE}"
DEFAULT_WORKSPACE_MIB = 4096


@dataclass(frozen=True)
class Target:
    key: str
    version: tuple[int, int]
    platform: str

    @property
    def label(self) -> str:
        return f"TensorRT {self.version[0]}.{self.version[1]}" if self.version[0] < 10 else f"TensorRT {self.version[0]}.x"

    @property
    def weak_typing(self) -> bool:
        return self.version < (11, 0)

    @property
    def profiles_flag(self) -> bool:
        return self.version >= (10, 0)

    @property
    def optimization_level(self) -> bool:
        return self.version >= (8, 6)

    @property
    def strongly_typed_flag(self) -> bool:
        return (10, 0) <= self.version < (11, 0)

    @property
    def build_only_flag(self) -> str:
        return "--buildOnly" if self.version < (8, 6) else "--skipInference"


TARGETS = {
    "trt85": Target("trt85", (8, 5), "JetPack 5.1.x (TensorRT 8.5.2)"),
    "trt86": Target("trt86", (8, 6), "JetPack 6.0 (TensorRT 8.6.2) and x86 TensorRT 8.6"),
    "trt10": Target("trt10", (10, 3), "JetPack 6.1/6.2 (TensorRT 10.3) and x86 TensorRT 10.x"),
    "trt11": Target("trt11", (11, 0), "x86/SBSA TensorRT 11.x and JetPack 7.2.2+ (TensorRT 11.4.1)"),
}
#: Flags a target's trtexec no longer parses (or that do nothing and mislead).
REMOVED_FLAGS = {
    "trt85": ("--workspace", "--explicitBatch", "--profile", "--stronglyTyped", "--builderOptimizationLevel"),
    "trt86": ("--workspace", "--explicitBatch", "--profile", "--stronglyTyped"),
    "trt10": ("--workspace", "--explicitBatch", "--buildOnly", "--minTiming"),
    "trt11": ("--workspace", "--explicitBatch", "--buildOnly", "--minTiming", "--fp16", "--bf16", "--best",
              "--precisionConstraints", "--layerPrecisions", "--layerOutputTypes", "--stronglyTyped"),
}


# --- what the ONNX says ---------------------------------------------------------------------------------

@dataclass
class OnnxFacts:
    precision: str
    fp16_layers: list[str]      # generator layers allowed to run in fp16 (weakly typed builds)
    config: str


def read_onnx_facts(onnx_path: str | Path) -> OnnxFacts:
    """Precision from the metadata and the names of the layers that may run in fp16 (float outputs only)."""
    metadata = read_model_facts(onnx_path).check().metadata   # the one reader and check; the graph is read below
    try:
        import onnx
    except ImportError:
        raise missing_dependency("onnx", "pip install onnx") from None
    model = onnx.load(str(onnx_path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    layers = [node.name for node in model.graph.node
              if C.runs_in_fp16(node.name) and node.op_type != "Constant" and any(elem.get(o) in floats for o in node.output)]
    return OnnxFacts(metadata.get(C.META_PRECISION, "fp32"), layers, metadata.get(C.META_CONFIG, "unknown"))


# --- command lines ----------------------------------------------------------------------------------------

def _check_target(target: Target, profiles: list[Profile], precision: str, facts: OnnxFacts | None) -> None:
    if len(profiles) > 1 and not target.profiles_flag:
        raise UserError(f"{target.label} trtexec builds one optimisation profile; give one --min/--opt/--max")
    if precision == "fp16" and facts is None:
        raise UserError("fp16 command lines need the ONNX (--onnx) to read its precision and layer names")
    problem = C.precision_problem(precision, target=target.key,  # the one judge of legal combinations
                                  onnx_precision=facts.precision if facts is not None else None)
    if problem:
        raise UserError(problem)


def _layer_flags(facts: OnnxFacts) -> list[str]:
    fp16 = ",".join(["*:fp32"] + [f"{name}:fp16" for name in facts.fp16_layers])
    return [f"--layerPrecisions={fp16}", f"--layerOutputTypes={fp16}"]


def trtexec_command(target: Target, profiles: list[Profile], precision: str = "fp32", onnx: str = ONNX_VAR,
                    engine: str = ENGINE_VAR, workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
                    timing_cache: str | None = CACHE_VAR, optimization_level: int | None = None,
                    facts: OnnxFacts | None = None) -> list[str]:
    """argv of one trtexec build for `target`."""
    _check_target(target, profiles, precision, facts)
    argv = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    for index, profile in enumerate(profiles):
        if target.profiles_flag and len(profiles) > 1:
            argv.append(f"--profile={index}")
        argv += [f"--minShapes={C.shape_spec(*profile.min)}", f"--optShapes={C.shape_spec(*profile.opt)}",
                 f"--maxShapes={C.shape_spec(*profile.max)}"]
    if workspace_mib:
        argv.append(f"--memPoolSize=workspace:{int(workspace_mib)}")
    if timing_cache:
        argv.append(f"--timingCacheFile={timing_cache}")
    if optimization_level is not None:
        if not target.optimization_level:
            raise UserError(f"{target.label} has no --builderOptimizationLevel (added in 8.6)")
        argv.append(f"--builderOptimizationLevel={int(optimization_level)}")
    argv.append("--noTF32")
    if precision == "fp16" and target.weak_typing:
        if facts.precision == "fp16" and target.strongly_typed_flag:
            argv.append("--stronglyTyped")      # the ONNX's casts decide; no layer lists needed
        else:
            argv += ["--fp16", "--precisionConstraints=obey", *_layer_flags(facts)]
    argv.append(target.build_only_flag)
    return argv


def polygraphy_command(target: Target | None, profiles: list[Profile], precision: str = "fp32", onnx: str = ONNX_VAR,
                       engine: str = ENGINE_VAR, workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
                       timing_cache: str | None = CACHE_VAR, optimization_level: int | None = None,
                       facts: OnnxFacts | None = None, compute_capability: str | None = None) -> list[str]:
    """argv of the equivalent `polygraphy convert`; target None = TensorRT-RTX (`compute_capability` for AOT)."""
    if target is not None:
        _check_target(target, profiles, precision, facts)
    elif precision == "fp16" and (facts is None or facts.precision != "fp16"):
        raise UserError("TensorRT-RTX is strongly typed: fp16 needs the fp16 ONNX (`lama-deploy export --precision fp16`)")
    argv = ["polygraphy", "convert", onnx, "-o", engine]
    for profile in profiles:
        for flag, which in (("--trt-min-shapes", "min"), ("--trt-opt-shapes", "opt"), ("--trt-max-shapes", "max")):
            argv.append(flag)
            argv += [f"{name}:[{','.join(str(d) for d in shape)}]" for name, shape in profile.input_shapes(which).items()]
    if workspace_mib:
        argv += ["--pool-limit", f"workspace:{int(workspace_mib)}M"]
    if timing_cache and target is not None:   # TensorRT-RTX timing caches are no-ops
        argv += ["--load-timing-cache", timing_cache, "--save-timing-cache", timing_cache]
    if optimization_level is not None and (target is None or target.optimization_level):
        argv += ["--builder-optimization-level", str(int(optimization_level))]
    if precision == "fp16" and target is not None and target.weak_typing:
        if facts.precision == "fp16" and target.strongly_typed_flag:
            argv.append("--strongly-typed")
        else:  # Polygraphy's --layer-precisions takes exact names only: pin with the builder's own policy
            argv += ["--fp16", "--precision-constraints", "obey",
                     "--trt-network-postprocess-script", f"{HOOK_SCRIPT}:{polygraphy_pin_fp32.__name__}"]
    argv += ["--trt-config-postprocess-script", f"{HOOK_SCRIPT}:{polygraphy_no_tf32.__name__}"]
    if target is None and compute_capability:
        argv += ["--compute-capabilities", compute_capability]
    return argv


def render(argv: list[str], env: dict[str, str] | None = None, wrap: bool = False) -> str:
    """Shell text; "${VAR}" placeholders stay expandable, everything else is quoted. `wrap`: one flag per line."""
    def quote(arg: str) -> str:
        if "${" in arg:
            return '"' + arg.replace('"', '\\"') + '"'
        return shlex.quote(arg)

    groups: list[list[str]] = []
    for index, arg in enumerate(argv):
        if not groups or (wrap and arg.startswith("-") and index > 0):
            groups.append([])
        groups[-1].append(quote(arg))
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    return prefix + " \\\n    ".join(" ".join(group) for group in groups)


# --- scripts ---------------------------------------------------------------------------------------------

def script_text(title: str, platform: str, command: str, default_onnx: str, default_engine: str,
                profiles: list[Profile], notes: list[str]) -> str:
    shapes = "; ".join(f"min {p.min} opt {p.opt} max {p.max}" for p in profiles)
    lines = ["#!/usr/bin/env bash", f"# {title}", f"# Target: {platform}",
             f"# Profiles (N, H, W): {shapes}. {C.SIZE_RULE}.",
             f"# Generated by `{PROG}`; regenerate rather than edit.", *[f"# {n}" for n in notes],
             f"# Usage: $0 [model.onnx] [model.engine] [timing.cache]", "set -euo pipefail",
             f'ONNX="${{1:-{default_onnx}}}"', f'ENGINE="${{2:-{default_engine}}}"',
             'TIMING_CACHE="${3:-${ENGINE%.*}.timing.cache}"', command, ""]
    return "\n".join(lines)


def choose_onnx(target: Target | None, precision: str, facts32: OnnxFacts | None,
                facts16: OnnxFacts | None) -> OnnxFacts | None | bool:
    """Which export a build uses: the fp32 ONNX (layer lists) on 8.x, the fp16 ONNX where strongly typed.

    Returns the facts of the chosen ONNX, None for an fp32 build without an ONNX at hand, False when the
    needed ONNX was not given.
    """
    if precision == "fp32":
        return facts32
    strongly = target is None or not target.weak_typing or (target.strongly_typed_flag and facts16 is not None)
    chosen = facts16 if strongly else facts32
    return chosen if chosen is not None else False


def generate_scripts(out_dir: str | Path, profiles: list[Profile], facts32: OnnxFacts | None,
                     facts16: OnnxFacts | None, workspace_mib: int | None = DEFAULT_WORKSPACE_MIB,
                     optimization_level: int | None = None, compute_capability: str = "8.9") -> list[Path]:
    """Write one executable .sh per (tool, target, precision); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for target in [*TARGETS.values(), None]:
        key = target.key if target else "rtx"
        for precision in C.PRECISIONS:
            facts = choose_onnx(target, precision, facts32, facts16)
            if facts is False:
                continue
            onnx_name = "big-lama-fp16.onnx" if facts is not None and facts.precision == "fp16" else "big-lama.onnx"
            engine_name = f"big-lama-{key}-{precision}.engine"
            level = optimization_level if target is None or target.optimization_level else None
            jobs = []
            if target is not None:
                argv = trtexec_command(target, profiles, precision, workspace_mib=workspace_mib,
                                       optimization_level=level, facts=facts)
                jobs.append(("trtexec", target.label, target.platform, render(argv, wrap=True)))
            # TensorRT-RTX fails the build when a tactic needs more than the pool limit (TensorRT skips the
            # tactic instead): its line has no limit. Measured: big-lama at 2x1024x1024 asked for 4.2 GiB.
            argv = polygraphy_command(target, profiles, precision, workspace_mib=workspace_mib if target else None,
                                      optimization_level=level, facts=facts, compute_capability=compute_capability)
            env = None if target else {"POLYGRAPHY_USE_TENSORRT_RTX": "1"}
            label = target.label if target else f"TensorRT-RTX, ahead of time for compute capability {compute_capability}"
            platform = target.platform if target else "TensorRT-RTX on RTX GPUs of that compute capability"
            jobs.append(("polygraphy", label, platform, render(argv, env=env, wrap=True)))
            for tool, label, platform, command in jobs:
                notes = ["The fp16 layer lists come from the big-lama graph: regenerate them for another --config."] \
                    if "--layerPrecisions" in command else []
                if tool == "polygraphy":
                    notes.append(f"Run from the lama-deploy checkout: the line uses {HOOK_SCRIPT} hooks "
                                 "(TF32 off, fp32 pinning).")
                path = out_dir / f"{tool}_{key}_{precision}.sh"
                with atomic_output(path) as tmp:
                    tmp.write_text(script_text(f"{tool}: {label}, {precision}", platform, command, onnx_name,
                                               engine_name, profiles, notes))
                    tmp.chmod(0o755)
                written.append(path)
    return written


# --- CLI ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", help="fp32 ONNX (layer names for fp16 lines on TensorRT 8.x/10.x)")
    parser.add_argument("--onnx-fp16", help="fp16 ONNX (strongly typed fp16 builds)")
    add_profile_options(parser)
    parser.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MIB, metavar="MiB")
    parser.add_argument("--optimization-level", type=int, choices=range(0, 6), metavar="0-5")
    parser.add_argument("--compute-capability", default="8.9", help="TensorRT-RTX target (polygraphy line)")
    parser.add_argument("--target", choices=sorted(TARGETS), help="--print: only this target")
    parser.add_argument("--precision", choices=C.PRECISIONS, default="fp32", help="--print: precision")
    parser.add_argument("--print", action="store_true", help="print the command lines instead of writing scripts")
    parser.add_argument("--out-dir", default="scripts/trtexec", help="where the .sh files go")
    return parser


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    profiles = profiles_from(args)
    facts32 = read_onnx_facts(args.onnx) if args.onnx else None
    facts16 = read_onnx_facts(args.onnx_fp16) if args.onnx_fp16 else None
    if args.print:
        for target in [TARGETS[args.target]] if args.target else TARGETS.values():
            facts = choose_onnx(target, args.precision, facts32, facts16)
            if facts is False:
                print(f"# {target.label}: {args.precision} needs --onnx{'-fp16' if not target.weak_typing else ''}")
                continue
            onnx = args.onnx_fp16 if facts is not None and facts is facts16 else (args.onnx or "model.onnx")
            level = args.optimization_level if target.optimization_level else None
            common = dict(onnx=onnx, engine=f"model-{target.key}-{args.precision}.engine", facts=facts,
                          workspace_mib=args.workspace, timing_cache="timing.cache", optimization_level=level)
            print(f"# {target.label}: {target.platform}")
            print(render(trtexec_command(target, profiles, args.precision, **common)))
            print(render(polygraphy_command(target, profiles, args.precision, **common)))
        return 0
    for path in generate_scripts(args.out_dir, profiles, facts32, facts16, args.workspace, args.optimization_level,
                                 args.compute_capability):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
