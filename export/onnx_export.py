"""Export an InpaintingModel to dynamic-shape ONNX with DFT-as-matmul Fourier units.

The TorchScript-based exporter (`torch.onnx.export(dynamo=False)`) is used on purpose: it emits opset 17
natively and plain `Shape` + `Gather` for every size (the dynamo exporter emits `Shape(start, end)`, which
TensorRT 8.5/8.6 mis-parse, and builds at opset 18). Sizes are traced as graph values, so the DFT bases are
computed from the runtime H and W. After export the file is checked: symbolic N/H/W on every input and
output, `onnx.checker` (full), and the TensorRT rule checker (`lama_deploy.export.onnx_rules`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
import torch

from lama_deploy import contract as C
from lama_deploy.errors import UsageError
from lama_deploy.files import atomic_output, file_sha256
from lama_deploy.host import peak_rss_mb
from lama_deploy.model_facts import facts_from_proto
from lama_model import InpaintingModel, describe_random_weights, load_inpainting_model, random_model, set_fourier_mode
from lama_model.checkpoint import config_name
from lama_model.fourier import set_spectrum_align
from lama_model.precision import choose_fourier_scale, fold_fourier_scale

#: Size used to trace; any multiple of 8 works, the graph does not depend on it (dims are symbolic).
TRACE_SIZE = (64, 96)
EXPORTER = f"torch {torch.__version__} torch.onnx (TorchScript exporter)"


class ExportError(RuntimeError):
    """The exported graph broke a rule of the contract."""


def _example_inputs(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    h, w = TRACE_SIZE
    image = torch.rand(batch, 3, h, w, generator=generator)
    mask = (torch.rand(batch, 1, h, w, generator=generator) > 0.5).float()
    return image, mask


@contextlib.contextmanager
def _quiet_exporter():
    """The TorchScript exporter warns about its own deprecation and traced sizes; keep that off users' terminals."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield


def dynamic_axes(dynamic_batch: bool = True) -> dict[str, dict[int, str]]:
    axes = {name: dict(dims) for name, dims in C.DYNAMIC_AXES.items()}
    if not dynamic_batch:
        for dims in axes.values():
            dims.pop(0)
    return axes


def trace_to_onnx(model: InpaintingModel, path: Path, opset: int = C.DEFAULT_OPSET, dynamic_batch: bool = True,
                  batch: int = 1, keep_fourier: bool = False, fourier: str = "matmul", align: int = 1) -> onnx.ModelProto:
    """Raw export of `model` (its Fourier units switched to `fourier`, spectrum width padded to a multiple of
    `align`, unless `keep_fourier`); returns the ModelProto."""
    if opset < 13 or opset > C.MAX_TRT8_OPSET:
        raise UsageError(f"opset {opset} is not supported; use 13..{C.MAX_TRT8_OPSET} "
                         f"(TensorRT 8.5/8.6 on JetPack 5/6.0 import up to opset {C.MAX_TRT8_OPSET})")
    if not keep_fourier:
        set_spectrum_align(set_fourier_mode(model, fourier), align)
    model.eval()
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(
            model, _example_inputs(batch), str(path), dynamo=False, opset_version=opset,
            input_names=list(C.INPUT_NAMES), output_names=list(C.OUTPUT_NAMES),
            dynamic_axes=dynamic_axes(dynamic_batch), do_constant_folding=True,
        )
    return onnx.load(str(path))


def symbolic_dims(model: onnx.ModelProto) -> dict[str, list[str | int]]:
    """Dims of every graph input and output: names for symbolic dims, ints for fixed ones."""
    result = {}
    for value in list(model.graph.input) + list(model.graph.output):
        result[value.name] = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    return result


def assert_dynamic_io(model: onnx.ModelProto, dynamic_batch: bool = True) -> None:
    """The exporter can silently specialise a dim to a constant: check every I/O dim is as declared."""
    problem = C.io_problem(facts_from_proto(model, "the exported graph"))
    if problem:
        raise ExportError(problem)
    dims = symbolic_dims(model)
    for name, shape in dims.items():
        want: list[str | int] = [C.DIM_BATCH if dynamic_batch else shape[0], C.CHANNELS[name], C.DIM_HEIGHT, C.DIM_WIDTH]
        if shape != want:
            raise ExportError(f"{name} has dims {shape}, expected {want}: the export specialised a dynamic dim")


def name_output_dims(model: onnx.ModelProto, dynamic_batch: bool = True) -> None:
    """Give the outputs the contract's dim names where the exporter left generated ones.

    Shape inference through custom ops (the DFT symbolic) cannot always tell the channel count or that
    the output's H/W equal the input's; a fixed value that differs from the contract is left alone so
    that `assert_dynamic_io` reports it.
    """
    for value in model.graph.output:
        want = [C.DIM_BATCH if dynamic_batch else None, C.CHANNELS[value.name], C.DIM_HEIGHT, C.DIM_WIDTH]
        for dim, expected in zip(value.type.tensor_type.shape.dim, want):
            if expected is None or dim.HasField("dim_value"):
                continue
            if isinstance(expected, int):
                dim.dim_value = expected
            else:
                dim.dim_param = expected


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for key, value in entries.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            model.metadata_props.add(key=key, value=str(value))


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save, with weights in a side file only when the protobuf would pass 2 GB."""
    if model.ByteSize() < 2_000_000_000:
        onnx.save(model, str(path))
    else:  # pragma: no cover - no released LaMa comes near this
        onnx.save(model, str(path), save_as_external_data=True, location=os.path.basename(path) + ".data")


# --- the whole export job ---------------------------------------------------------------------------------


@dataclass
class ExportResult:
    path: str
    config: str
    fourier: str
    precision: str
    opset: int
    weights: str
    checkpoint_sha256: str
    seconds: float
    peak_rss_mb: float
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def load_model(checkpoint: str | None, config: str | None, seed: int = 0,
               trained_like: bool = False) -> tuple[InpaintingModel, str, str, str]:
    """(model, config name, weights description, checkpoint sha256 or '')."""
    if checkpoint:
        model = load_inpainting_model(checkpoint, config=config)
        return model, config or config_name(model.generator.config), f"checkpoint {Path(checkpoint).name}", \
            file_sha256(checkpoint)
    name = config or "big-lama"
    return random_model(name, seed=seed, trained_like=trained_like), name, describe_random_weights(seed, trained_like), ""


def describe_model_object(model: InpaintingModel, checkpoint: str | None) -> tuple[str, str, dict[str, str]]:
    """(weights label, checkpoint sha256, random-weights metadata) of a model handed in as an object."""
    recipe = getattr(model, "random_weights_recipe", None)
    if checkpoint:
        return f"checkpoint {Path(checkpoint).name}", file_sha256(checkpoint), {}
    if recipe is not None:
        seed, trained_like = recipe
        return describe_random_weights(seed, trained_like), "", {
            C.META_RANDOM_SEED: str(seed), C.META_TRAINED_LIKE: str(bool(trained_like)).lower()}
    return "in-memory model (weights unknown to the exporter)", "", {}


def _rewritten_for_export(model: InpaintingModel, speedups: bool, precision: str) -> tuple[InpaintingModel, list[str]]:
    """(a copy of `model` to trace, names of the rewrites applied); the caller's model is left as it was.

    fp16 keeps its BatchNorms as fp32 ScaleShift nodes (`fp16.fold_batchnorm`) instead of folding them
    into fp16 convolution weights: with trained weights running variances reach about 1e6, so folded
    per-channel scales would reach down to about 1e-3 inside fp16 kernels.
    """
    from .speedups import SPEEDUPS, apply_speedups

    if not speedups:
        return copy.deepcopy(model).eval(), []
    chosen = {name: not (name == "fold_batchnorm" and precision == "fp16") for name in SPEEDUPS}
    return apply_speedups(model, **chosen), [name for name in SPEEDUPS if chosen[name]]


@dataclass(frozen=True)
class ExportOptions:
    """How to export (what to export is the checkpoint, config or model handed next to it).

    `precision`/`fp16_policy`/`fourier` are judged by `contract.precision_problem` (target "onnx"); `fp16_policy`
    None means the default for fp16. `fourier_scale` (fourier-scaled only) defaults to `choose_fourier_scale()`.
    `speedups` applies the exact graph rewrites of `lama_deploy.export.speedups`.
    """

    precision: str = "fp32"
    fp16_policy: str | None = None
    fourier: str = C.DEFAULT_FOURIER
    fourier_scale: float | None = None
    opset: int = C.DEFAULT_OPSET
    batch: int | None = None        # None: dynamic N; else N fixed to this size in the graph
    speedups: bool = True
    fourier_align: int | None = None  # spectrum width padding; None: `contract.fourier_align` (8 for fp16 units)

    @property
    def dynamic_batch(self) -> bool:
        return self.batch is None

    @property
    def policy(self) -> str | None:
        """The fp16 policy in force: None for fp32, the default when fp16 names none."""
        return None if self.precision == "fp32" else self.fp16_policy or C.DEFAULT_FP16_POLICY

    @property
    def align(self) -> int:
        """The DFT-as-matmul spectrum padding in force (metadata `lama.fourier_align`)."""
        return C.fourier_align(self.precision, self.policy) if self.fourier_align is None else int(self.fourier_align)

    def check(self) -> "ExportOptions":
        """Refuse an illegal combination with the contract's one line (UsageError, exit 2)."""
        problem = C.precision_problem(self.precision, self.fp16_policy, self.fourier, "onnx")
        if problem:
            raise UsageError(problem)
        if self.batch is not None and self.batch < 1:
            raise UsageError(f"--batch must be 'dynamic' or a positive integer, not {self.batch}")
        if self.align < 1:
            raise UsageError(f"the Fourier spectrum alignment must be a positive integer, not {self.fourier_align}")
        if self.fourier_scale is not None and self.policy != "fourier-scaled":
            raise UsageError("--fourier-scale applies to --fp16-policy fourier-scaled only; add "
                             "--precision fp16 --fp16-policy fourier-scaled or drop it")
        return self


def _fp16_policy_settings(options: ExportOptions) -> tuple[float, dict[str, str]]:
    """(scale folded into the Fourier units, metadata entries) of an export's precision policy."""
    policy = options.policy
    if policy is None:
        return 1.0, {}
    if policy == "fourier-fp32":
        return 1.0, {C.META_FP16_POLICY: policy, C.META_FOURIER_SCALE: "1"}
    scale = float(options.fourier_scale) if options.fourier_scale is not None else choose_fourier_scale()
    return scale, {C.META_FP16_POLICY: policy, C.META_FOURIER_SCALE: f"{scale:g}"}


def export_inpainting_onnx(output: str | Path, checkpoint: str | None = None, config: str | None = None,
                           options: ExportOptions | None = None, *, model: InpaintingModel | None = None,
                           seed: int = 0, trained_like: bool = False) -> ExportResult:
    """Export, check and atomically write the inpainting ONNX model; the one function behind every caller.

    What: `model` skips loading (tests pass a model they already built; it is never modified);
    `checkpoint=None` exports seeded random weights (`seed`, `trained_like`) and says so in the metadata.
    How: `options` (precision, fp16 policy, Fourier form, opset, speedups; see `ExportOptions`).
    """
    from .dft_ops import onnx_dft_units
    from .fp16 import convert_to_mixed_fp16, fold_batchnorm
    from .onnx_rules import check_tensorrt_compatible

    options = (options or ExportOptions()).check()
    precision, fourier, opset, dynamic_batch = options.precision, options.fourier, options.opset, options.dynamic_batch
    start = time.perf_counter()
    random_weights: dict[str, str] = {}
    if model is None:
        model, config, weights, sha = load_model(checkpoint, config, seed, trained_like)
        if not checkpoint:
            random_weights = {C.META_RANDOM_SEED: str(seed), C.META_TRAINED_LIKE: str(bool(trained_like)).lower()}
    else:
        config = config or config_name(model.generator.config)
        weights, sha, random_weights = describe_model_object(model, checkpoint)
    model, applied = _rewritten_for_export(model, options.speedups, precision)
    scale, precision_meta = _fp16_policy_settings(options)
    if scale != 1.0:
        model = fold_fourier_scale(model, scale)
    notes: list[str] = []
    output = Path(output)
    with atomic_output(output) as tmp:
        if precision == "fp16":
            fold_batchnorm(model)
        if fourier == "dft":
            with onnx_dft_units(model):
                onnx_model = trace_to_onnx(model, tmp, opset=opset, dynamic_batch=dynamic_batch,
                                           batch=options.batch or 1, keep_fourier=True)
            notes.append("graph uses ONNX DFT ops: ONNX Runtime runs it; TensorRT before 11.2 cannot parse it")
        else:
            onnx_model = trace_to_onnx(model, tmp, opset=opset, dynamic_batch=dynamic_batch, batch=options.batch or 1,
                                       fourier=fourier, align=options.align)
        name_output_dims(onnx_model, dynamic_batch)
        assert_dynamic_io(onnx_model, dynamic_batch)
        if precision == "fp16":
            onnx_model = convert_to_mixed_fp16(onnx_model, options.policy)
        set_metadata(onnx_model, {
            C.META_CONFIG: config, C.META_FOURIER: fourier, C.META_PRECISION: precision, C.META_OPSET: str(opset),
            C.META_CHECKPOINT_SHA256: sha, C.META_WEIGHTS: weights, C.META_EXPORTER: EXPORTER,
            C.META_SIZE_RULE: C.SIZE_RULE, C.META_SIZE_MULTIPLE: str(C.SIZE_MULTIPLE), C.META_MIN_SIDE: str(C.MIN_SIDE),
            C.META_IO: "image [N,3,H,W] float32 0..1; mask [N,1,H,W] float32 (>0 = hole); inpainted [N,3,H,W] float32 0..1",
            C.META_SPEEDUPS: ",".join(applied) or "none", **random_weights, **precision_meta,
            **({} if fourier == "dft" else {C.META_FOURIER_ALIGN: str(options.align)}),
        })
        onnx.checker.check_model(onnx_model, full_check=True)
        if fourier != "dft":
            check_tensorrt_compatible(onnx_model)
        save_model(onnx_model, tmp)
    return ExportResult(str(output), config, fourier, precision, opset, weights, sha,
                        round(time.perf_counter() - start, 2), round(peak_rss_mb(), 1), notes)
