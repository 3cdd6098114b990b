"""One N x H x W range type for every command: the builder's optimisation profiles, the runtime's accepted
sizes, validation shapes, the benchmark and Triton's batch range.

A `Profile` holds min / opt / max as (N, H, W). A TensorRT optimisation profile has every value set; a
runtime range may leave `max` (unbounded) and `opt` (unknown) entries as None. H and W are tensor sizes,
i.e. after padding to the size multiple. Pure Python: the edge runtime imports it without TensorRT.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional, Tuple

from . import contract as C
from .errors import UserError

NHW = Tuple[int, int, int]  # typing.Tuple: the runtime runs on Python 3.8
#: (N, H, W) where None means "unbounded" (max) or "unknown" (opt).
Bound = Tuple[Optional[int], Optional[int], Optional[int]]
WHICH = ("min", "opt", "max")

#: Default optimisation profile (N x H x W): one image from 256^2 to 1024^2, tuned for 512^2, batch 2 at most.
DEFAULT_BUILD = ((1, 256, 256), (1, 512, 512), (2, 1024, 1024))


def tighter(a: int | None, b: int | None) -> int | None:
    """The smaller bound, None meaning unbounded."""
    return b if a is None else a if b is None else min(a, b)


@dataclass(frozen=True)
class Profile:
    """Shapes a model accepts over (N, H, W), applied to both inputs of the contract."""

    min: Bound = (1, C.MIN_SIDE, C.MIN_SIDE)
    opt: Bound = (None, None, None)
    max: Bound = (None, None, None)
    size_multiple: int = C.SIZE_MULTIPLE

    @staticmethod
    def ranges(min_batch: int = 1, max_batch: int | None = None, min_height: int = C.MIN_SIDE,
               min_width: int = C.MIN_SIDE, max_height: int | None = None, max_width: int | None = None,
               opt_height: int | None = None, opt_width: int | None = None,
               size_multiple: int = C.SIZE_MULTIPLE) -> "Profile":
        """A runtime range by named bounds (None = unbounded / unknown)."""
        return Profile((min_batch, min_height, min_width), (None, opt_height, opt_width),
                       (max_batch, max_height, max_width), size_multiple)

    @staticmethod
    def from_shapes(min_shape: tuple[int, ...], max_shape: tuple[int, ...], opt_shape: tuple[int, ...] | None = None,
                    size_multiple: int = C.SIZE_MULTIPLE) -> "Profile":
        """From NCHW min/opt/max shapes such as a TensorRT optimisation profile gives."""
        def nhw(shape: tuple[int, ...]) -> NHW:
            return int(shape[0]), int(shape[2]), int(shape[3])

        opt = (None, None, None) if opt_shape is None else nhw(opt_shape)
        return Profile(nhw(min_shape), opt, nhw(max_shape), size_multiple)

    # -- named views (the runtime and the strategy read these) --------------------------------------------
    min_batch = property(lambda self: self.min[0])
    min_height = property(lambda self: self.min[1])
    min_width = property(lambda self: self.min[2])
    max_batch = property(lambda self: self.max[0])
    max_height = property(lambda self: self.max[1])
    max_width = property(lambda self: self.max[2])
    opt_height = property(lambda self: self.opt[1])
    opt_width = property(lambda self: self.opt[2])

    def input_shapes(self, which: str) -> dict[str, tuple[int, int, int, int]]:
        """NCHW shape of every input at `which` ("min", "opt" or "max"); all three values must be set."""
        return C.input_shapes(*getattr(self, which))

    def usable(self) -> "Profile":
        """The same range with H/W bounds moved inward to multiples of the size rule and >= MIN_SIDE."""
        m = self.size_multiple
        low = (self.min[0], *(C.round_up(max(side, C.MIN_SIDE), m) for side in self.min[1:]))
        high = (self.max[0], *(None if side is None else side // m * m for side in self.max[1:]))
        return replace(self, min=low, max=high)

    def narrowed(self, max_side: int | None = None, min_side: int | None = None, max_batch: int | None = None) -> "Profile":
        """Intersect with user limits: H and W at most `max_side` and at least `min_side`, N at most `max_batch`."""
        low = (self.min[0], *(side if min_side is None else max(side, min_side) for side in self.min[1:]))
        high = (tighter(self.max[0], max_batch), *(tighter(side, max_side) for side in self.max[1:]))
        return replace(self, min=low, max=high)

    def is_empty(self) -> bool:
        p = self.usable()
        return any(hi is not None and hi < lo for lo, hi in zip(p.min, p.max))

    def as_dict(self) -> dict[str, Any]:
        """Named form for people (`Inpainter.info()`, the server's health): {"min": {"N": .., "H": .., "W": ..}, ...}."""
        named: dict[str, Any] = {which: dict(zip((C.DIM_BATCH, C.DIM_HEIGHT, C.DIM_WIDTH), getattr(self, which)))
                                 for which in WHICH}
        return {**named, "size_multiple": self.size_multiple}

    def as_lists(self) -> dict[str, Any]:
        """Stored form (the engine sidecar's `profiles` entries): [N, H, W] lists, plus trtexec shape specs
        when all three are fully set."""
        result: dict[str, Any] = {which: list(getattr(self, which)) for which in WHICH}
        if all(None not in getattr(self, which) for which in WHICH):
            result["shapes"] = {which: C.shape_spec(*getattr(self, which)) for which in WHICH}
        return result

    @staticmethod
    def from_lists(data: dict[str, Any]) -> "Profile":
        """Inverse of `as_lists` (what the sidecar stores); ValueError when the entry is malformed."""
        try:
            return Profile(*(tuple(None if v is None else int(v) for v in data[which]) for which in WHICH))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a profile entry: {data!r}") from exc


def format_nhw(nhw: Bound) -> str:
    return "x".join("?" if d is None else str(d) for d in nhw)


def parse_nhw(text: str, flag: str = "shape") -> NHW:
    """'1x512x512' -> (1, 512, 512)."""
    parts = text.lower().replace("*", "x").split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"{flag} {text!r} is not NxHxW (e.g. 1x512x512)")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def check_profile(profile: Profile, index: int = 0) -> None:
    """Raise one clear line for the first rule a build profile (every value set) breaks."""
    label = f"profile {index}"
    for which in WHICH:
        n, h, w = getattr(profile, which)
        if n < 1:
            raise UserError(f"{label}: --{which} {format_nhw((n, h, w))}: batch N must be >= 1")
        if h % C.SIZE_MULTIPLE or w % C.SIZE_MULTIPLE:
            raise UserError(f"{label}: --{which} {format_nhw((n, h, w))}: H and W must be multiples of "
                            f"{C.SIZE_MULTIPLE} (e.g. {C.round_up(h)}x{C.round_up(w)})")
        if min(h, w) < C.MIN_SIDE:
            raise UserError(f"{label}: --{which} {format_nhw((n, h, w))}: H and W must be >= {C.MIN_SIDE}")
    for dim, name in enumerate("NHW"):
        if not profile.min[dim] <= profile.opt[dim] <= profile.max[dim]:
            raise UserError(f"{label}: {name} must satisfy min <= opt <= max, got min {format_nhw(profile.min)}, "
                            f"opt {format_nhw(profile.opt)}, max {format_nhw(profile.max)}")


def make_profiles(mins: list[str] | None, opts: list[str] | None, maxs: list[str] | None) -> list[Profile]:
    """Build profiles from repeated --min/--opt/--max. With one profile, what is not given comes from
    DEFAULT_BUILD (`--max 1x2048x2048` alone raises only the max); several profiles need all three each."""
    mins, opts, maxs = mins or [], opts or [], maxs or []
    if max(len(mins), len(opts), len(maxs)) <= 1:
        given = [parse_nhw(v[0], f"--{k}") if v else d for k, v, d in zip(WHICH, (mins, opts, maxs), DEFAULT_BUILD)]
        profiles = [Profile(*given)]
    elif not len(mins) == len(opts) == len(maxs):
        raise UserError(f"give --min, --opt and --max once per profile (got {len(mins)}, {len(opts)}, {len(maxs)})")
    else:
        profiles = [Profile(parse_nhw(a, "--min"), parse_nhw(b, "--opt"), parse_nhw(c, "--max"))
                    for a, b, c in zip(mins, opts, maxs)]
    for index, profile in enumerate(profiles):
        check_profile(profile, index)
    return profiles


def batch_range(profiles: list[Profile]) -> tuple[int, int]:
    """(smallest min N, largest max N) over build profiles; ValueError when there are none."""
    if not profiles:
        raise ValueError("no profiles")
    return min(p.min[0] for p in profiles), max(p.max[0] for p in profiles)
