"""The inpainting options, declared once: every entry point reads them from here.

`InpaintOptions` is one frozen object that carries every choice of the pipeline (mask threshold, EXIF,
size strategy, limits, memory budget) and of the backend (which runtime, device, precision, CUDA graphs,
ONNX Runtime providers). `OPTIONS` declares each field once: its name, how its text is parsed, its default,
its help. From that one table:

- the CLI flags (`--crop-trigger` for `crop_trigger`), built by the shared argument groups of
  `lama_deploy.scripts.commands.arguments` for `inpaint`, `serve` and `triton-repo`;
- the HTTP form fields of `POST /inpaint` and the Triton request/config parameters: the per-request
  options (`REQUEST_OPTIONS`) under the same names, taking the same text (`with_text`);
- the options table in docs/options.md (a test keeps it equal to `markdown_table()`).

Defaults that depend on the input are decided in one function each: the mask threshold `auto` is
`images.mask_threshold` (0 for lossless masks, 127 for JPEG/WebP, read from the file itself).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from lama_deploy import contract as C
from lama_deploy.errors import UsageError

from .images import DEFAULT_EXIF, DEFAULT_MAX_PIXELS, EXIF_MODES, THRESHOLD_PRESETS, check_threshold
from .memory import parse_budget_text
from .strategy import (ALIASES, DEFAULT_CONTEXT_MARGIN, DEFAULT_CROP_TRIGGER, DEFAULT_RESIZE_LIMIT, STRATEGIES,
                       strategy_name)

#: Runtime backends (`--backend`): `auto` picks by the model file's suffix.
BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "torch")
CUDA_GRAPH_CHOICES = ("auto", "on", "off")
COMPILE_CHOICES = C.TORCH_COMPILE_MODES


class OptionError(UsageError):
    """An option value that cannot be used; the message is one line naming the option and what it takes."""


# -- parsers: text -> value (each raises OptionError with one line) ---------------------------------------------
def _threshold(text: str) -> Union[str, float]:
    key = str(text).strip().lower()
    if key == "auto":
        return "auto"
    if key in THRESHOLD_PRESETS:
        return float(THRESHOLD_PRESETS[key])
    try:
        value = float(key)
    except ValueError:
        raise OptionError(f"threshold {text!r} is neither a number nor a preset; use 0..254, auto, "
                          f"{', '.join(THRESHOLD_PRESETS)}") from None
    try:
        check_threshold(value)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    return value


def _choice(name: str, choices: Tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        key = str(text).strip().lower()
        if key not in choices:
            raise OptionError(f"{name} {text!r} is not one of {', '.join(choices)}")
        return key
    return parse


def _strategy(text: str) -> str:
    try:
        return strategy_name(text)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _integer(name: str, low: int, none_ok: bool = False) -> Callable[[str], Optional[int]]:
    def parse(text: str) -> Optional[int]:
        key = str(text).strip().lower()
        if none_ok and key in ("", "none", "auto"):
            return None
        try:
            value = int(key)
        except ValueError:
            raise OptionError(f"{name} {text!r} is not a whole number{' (or none)' if none_ok else ''}") from None
        if value < low:
            raise OptionError(f"{name} {value} is too small; use at least {low}")
        return value
    return parse


def _memory(text: str) -> str:
    key = str(text).strip().lower()
    try:
        parse_budget_text(key)
    except ValueError as exc:
        raise OptionError(str(exc).splitlines()[0]) from None
    return key


def _device(text: str) -> Optional[str]:
    key = str(text).strip().lower()
    if key in ("", "auto"):
        return None
    if key != "cpu" and not (key == "cuda" or (key.startswith("cuda:") and key[5:].isdigit())):
        raise OptionError(f"device {text!r} is not cpu, cuda or cuda:N")
    return key


def _precision(text: str) -> Optional[str]:
    key = str(text).strip().lower()
    if key in ("", "auto"):
        return None
    if key not in C.TORCH_PRECISIONS:
        raise OptionError(f"precision {text!r} is not one of auto, {', '.join(C.TORCH_PRECISIONS)}")
    return key


def _providers(text: str) -> Optional[Tuple[str, ...]]:
    key = str(text).strip()
    if key.lower() in ("", "auto"):
        return None
    names = tuple(part.strip() for part in key.split(",") if part.strip())
    if not names:
        raise OptionError(f"providers {text!r} names no provider; use e.g. CUDA,CPU")
    return names


@dataclass(frozen=True)
class OptionSpec:
    """One option: its field name (= HTTP form field = Triton parameter), parser, default and help."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: Optional[str] = None
    choices: Optional[Tuple[str, ...]] = None
    per_request: bool = False  # also an HTTP form field of POST /inpaint and a Triton request parameter

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def default_text(self) -> str:
        return to_text(self.default)


def to_text(value: Any) -> str:
    """An option value as the text its parser reads back (`None` -> auto/none as the option spells it)."""
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_PRESETS = ", ".join(f"{name} = {value}" for name, value in THRESHOLD_PRESETS.items())

OPTIONS: Tuple[OptionSpec, ...] = (
    OptionSpec("threshold", _threshold, "auto", per_request=True, metavar="T",
               help=f"mask > T (0..254) is a hole; presets: {_PRESETS}; auto (default): 0 for lossless masks "
                    f"(PNG, BMP, TIFF, arrays), 127 for JPEG/WebP masks, whose compression noise is not a hole"),
    OptionSpec("exif", _choice("exif", EXIF_MODES), DEFAULT_EXIF, choices=EXIF_MODES, per_request=True,
               help="apply: turn images and masks upright by their EXIF orientation (default, as IOPaint); "
                    "keep: use pixels as stored"),
    OptionSpec("strategy", _strategy, "auto", per_request=True, choices=STRATEGIES + tuple(ALIASES),
               metavar=",".join(STRATEGIES + tuple(ALIASES)),
               help="large images: crop = one crop per hole region above --crop-trigger (auto, as IOPaint); "
                    "window = one crop around all holes; resize = long side to --resize-limit; "
                    "whole/original = the full image"),
    OptionSpec("margin", _integer("margin", 0), DEFAULT_CONTEXT_MARGIN, per_request=True, metavar="PX",
               help=f"context kept around holes when cropping (pixels, default {DEFAULT_CONTEXT_MARGIN})"),
    OptionSpec("crop_trigger", _integer("crop_trigger", 0), DEFAULT_CROP_TRIGGER, per_request=True, metavar="PX",
               help=f"crop/window only when the long side exceeds this (default {DEFAULT_CROP_TRIGGER})"),
    OptionSpec("resize_limit", _integer("resize_limit", C.MIN_SIDE), DEFAULT_RESIZE_LIMIT, per_request=True,
               metavar="PX", help=f"resize: the long side is scaled to this (default {DEFAULT_RESIZE_LIMIT})"),
    OptionSpec("max_side", _integer("max_side", C.MIN_SIDE, none_ok=True), None, metavar="PX",
               help="largest H/W fed to the model; bigger images are cropped or downscaled (default: the model's "
                    "size range)"),
    OptionSpec("max_pixels", _integer("max_pixels", 1), DEFAULT_MAX_PIXELS, metavar="N",
               help=f"refuse larger images, checked before decoding (default {DEFAULT_MAX_PIXELS})"),
    OptionSpec("max_memory", _memory, "auto", metavar="SIZE",
               help="host memory inference may take, e.g. 4GB, 512MB (CPU backends; bigger images are cropped or "
                    "downscaled to fit, or refused); auto (default): 70%% of the memory available; none: no budget"),
    OptionSpec("backend", _choice("backend", BACKEND_CHOICES), "auto", choices=BACKEND_CHOICES,
               help="runtime: tensorrt (.engine/.plan), onnxruntime (.onnx), torch (.ckpt/.pt/.pth); "
                    "auto (default): by the model file's suffix"),
    OptionSpec("device", _device, None, metavar="DEVICE", help="cpu, cuda or cuda:N (default: the backend's best)"),
    OptionSpec("precision", _precision, None, choices=("auto",) + C.TORCH_PRECISIONS,
               help="PyTorch backend (.ckpt/.pt/.pth): fp32 (auto), fp16 (CUDA) or bf16 autocast with the Fourier units "
                    "kept in fp32; engines and ONNX models run at the precision they were built/exported with"),
    OptionSpec("cuda_graphs", _choice("cuda_graphs", CUDA_GRAPH_CHOICES), "auto", choices=CUDA_GRAPH_CHOICES,
               help="PyTorch backend: replay captured CUDA graphs per input shape (auto: on when the device is CUDA)"),
    OptionSpec("compile", _choice("compile", COMPILE_CHOICES), "off", choices=COMPILE_CHOICES,
               help="PyTorch backend: torch.compile the model (off by default until GPU rows show a gain); the "
                    "first call of each input shape compiles (seconds to minutes)"),
    OptionSpec("providers", _providers, None, metavar="EP[,EP...]",
               help="ONNX Runtime backend: execution providers in order of preference, e.g. CUDA,CPU or "
                    "TensorRT,CUDA,CPU (CUDA, TensorRT, OpenVINO, DirectML, CoreML, CPU where the installed "
                    "onnxruntime has them; default auto: the best available)"),
)

SPECS: Dict[str, OptionSpec] = {spec.name: spec for spec in OPTIONS}
REQUEST_OPTIONS: Tuple[str, ...] = tuple(spec.name for spec in OPTIONS if spec.per_request)
#: Library keywords of the releases before `InpaintOptions` (kept so old calls still read right).
_RENAMED = {"context_margin": "margin"}


@dataclass(frozen=True)
class InpaintOptions:
    """Every option of the pipeline and the backend; build it with `InpaintOptions.create(**values)`,
    `with_text({...})` (CLI, HTTP, Triton text) or `replace(...)`. Values are checked on creation."""

    threshold: Union[str, float] = "auto"
    exif: str = DEFAULT_EXIF
    strategy: str = "auto"
    margin: int = DEFAULT_CONTEXT_MARGIN
    crop_trigger: int = DEFAULT_CROP_TRIGGER
    resize_limit: int = DEFAULT_RESIZE_LIMIT
    max_side: Optional[int] = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_memory: str = "auto"
    backend: str = "auto"
    device: Optional[str] = None
    precision: Optional[str] = None
    cuda_graphs: str = "auto"
    compile: str = "off"
    providers: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        for spec in OPTIONS:  # every value goes through its parser once, typed or text
            object.__setattr__(self, spec.name, _checked(spec, getattr(self, spec.name)))

    @classmethod
    def create(cls, **values: Any) -> "InpaintOptions":
        return cls().replace(**values)

    def replace(self, **values: Any) -> "InpaintOptions":
        """A copy with `values` changed (field names; `strategy` may be a `StrategyOptions`)."""
        changes = {}
        for key, value in values.items():
            key = _RENAMED.get(key, key)
            if key == "strategy" and hasattr(value, "crop_trigger"):  # a StrategyOptions: its four fields
                changes.update(strategy=value.strategy, margin=value.margin, crop_trigger=value.crop_trigger,
                               resize_limit=value.resize_limit)
                continue
            if key not in SPECS:
                raise OptionError(f"unknown option {key!r}; known: {', '.join(SPECS)}")
            changes[key] = value
        return dataclasses.replace(self, **changes)

    def with_text(self, fields: Mapping[str, str], allowed: Tuple[str, ...] = REQUEST_OPTIONS,
                  where: str = "option") -> "InpaintOptions":
        """A copy with text values (HTTP form fields, Triton parameters) parsed; names outside `allowed` are
        refused in one line that lists the accepted ones."""
        unknown = sorted(set(fields) - set(allowed))
        if unknown:
            raise OptionError(f"unknown {where} {unknown[0]!r}; accepted: {', '.join(allowed)}")
        return self.replace(**{key: SPECS[key].parse(str(value)) for key, value in fields.items()})

    def as_text(self, names: Tuple[str, ...] = tuple(SPECS)) -> Dict[str, str]:
        """The named options as text that `with_text` reads back (Triton config parameters)."""
        return {name: to_text(getattr(self, name)) for name in names}

    @property
    def strategy_options(self) -> Any:
        from .strategy import StrategyOptions

        return StrategyOptions(self.strategy, margin=self.margin, crop_trigger=self.crop_trigger,
                               resize_limit=self.resize_limit)


def _checked(spec: OptionSpec, value: Any) -> Any:
    """A value of the option's type, whether given typed (library) or as text (CLI, HTTP, Triton)."""
    if value is None:
        return spec.default
    if isinstance(value, str):
        return spec.parse(value)
    if isinstance(value, bool):
        raise OptionError(f"{spec.name} takes {spec.metavar or 'a value'}, not {value}")
    if isinstance(value, (int, float)) and spec.name != "threshold" and spec.name != "max_memory":
        return spec.parse(str(int(value)) if float(value).is_integer() else str(value))
    if spec.name == "max_memory" and isinstance(value, (int, float)):
        return spec.parse(str(int(value)))  # a byte count
    if spec.name == "threshold":
        return spec.parse(str(float(value)))
    if spec.name == "providers" and isinstance(value, (tuple, list)):
        return spec.parse(",".join(value))
    raise OptionError(f"{spec.name} cannot be {value!r}")


def markdown_table() -> str:
    """docs/options.md's table: every option, where it is accepted, its default and help."""
    rows = ["| option | CLI flag | HTTP form field / Triton parameter | default | what |", "|---|---|---|---|---|"]
    for spec in OPTIONS:
        request = f"`{spec.name}`" if spec.per_request else "– (start-up only)"
        rows.append(f"| `{spec.name}` | `{spec.flag}` | {request} | `{spec.default_text}` | "
                    f"{spec.help.replace('%%', '%').replace('|', '/')} |")
    return "\n".join(rows) + "\n"
