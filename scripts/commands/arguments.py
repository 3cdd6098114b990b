"""Shared argument groups: every command spells an option alike, from its one declaration.

The flags come from `lama_deploy.runtime.options.OPTIONS` (name, parser, default, help), so `--threshold` has
the same choices, default and help in `inpaint`, `serve` and `triton-repo`, and the value a flag takes is the
text an HTTP form field or a Triton parameter of the same name takes. Commands parse once into an
`InpaintOptions` (`options_from_args`) and hand that one object on.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from lama_deploy.errors import UsageError
from lama_deploy.profiles import DEFAULT_BUILD, WHICH, Profile, format_nhw, make_profiles
from lama_deploy.runtime.options import OPTIONS, REQUEST_OPTIONS, SPECS, InpaintOptions, OptionError

#: The groups, by what they govern (names of `OPTIONS` fields).
INPUT_OPTIONS = REQUEST_OPTIONS  # threshold, exif, strategy, margin, crop_trigger, resize_limit
LIMIT_OPTIONS = ("max_side", "max_pixels", "max_memory")
BACKEND_OPTIONS = ("backend", "device", "precision", "cuda_graphs", "compile", "providers")
GROUP_TITLES = {
    INPUT_OPTIONS: "inputs and large images (also per request: HTTP form fields, Triton parameters)",
    LIMIT_OPTIONS: "limits",
    BACKEND_OPTIONS: "runtime backend",
}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (a UsageError: exit 2), like every other user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def make_parser(prog: str, description: str, **kwargs: object) -> OneLineParser:
    return OneLineParser(prog=prog, description=description, **kwargs)


def _flag_type(name: str):
    spec = SPECS[name]

    def parse(text: str) -> object:
        try:
            return spec.parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = name  # argparse names the type in its messages
    return parse


def add_option_group(parser: argparse.ArgumentParser, names: Sequence[str], title: Optional[str] = None) -> None:
    """The flags of the named options, in one argument group; unset flags stay None (the options' defaults)."""
    group = parser.add_argument_group(title or GROUP_TITLES.get(tuple(names), "options"))
    for name in names:
        spec = SPECS[name]
        group.add_argument(spec.flag, dest=name, type=_flag_type(name), default=None,
                           metavar=spec.metavar or (",".join(spec.choices) if spec.choices else name.upper()),
                           help=f"{spec.help} (default: {spec.default_text})")


def add_inpaint_options(parser: argparse.ArgumentParser) -> None:
    """Every option of the pipeline and the backend: inputs, limits, runtime backend."""
    for names in (INPUT_OPTIONS, LIMIT_OPTIONS, BACKEND_OPTIONS):
        add_option_group(parser, names)


def options_from_args(args: argparse.Namespace, base: Optional[InpaintOptions] = None) -> InpaintOptions:
    """The InpaintOptions of the parsed flags (flags not given keep `base`'s values)."""
    given = {spec.name: getattr(args, spec.name) for spec in OPTIONS
             if getattr(args, spec.name, None) is not None}
    return (base or InpaintOptions()).replace(**given)


# -- engine profiles (build, trtexec lines) ---------------------------------------------------------------
def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """--min/--opt/--max NxHxW (repeatable: one profile each) on an argparse parser; read with `profiles_from`."""
    for which in WHICH:
        parser.add_argument(f"--{which}", action="append", metavar="NxHxW",
                            help=f"profile {which} shape (repeat for more profiles; default {format_nhw(DEFAULT_BUILD[WHICH.index(which)])})")


def profiles_from(args: argparse.Namespace) -> list[Profile]:
    """The profiles an argparse namespace with `add_profile_options` asks for."""
    return make_profiles(args.min, args.opt, args.max)
