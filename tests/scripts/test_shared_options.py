"""One option, one spelling: every command's parser, the HTTP form fields and the Triton parameters take the
options of `lama_deploy.runtime.options.OPTIONS` under the same names, values, defaults and help."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from lama_deploy.runtime.options import OPTIONS, REQUEST_OPTIONS, SPECS, InpaintOptions, OptionError
from lama_deploy.runtime.server.limits import RequestRejected, request_options as http_options
from lama_deploy.runtime.triton.steps import options_from_parameters, request_options as triton_options
from lama_deploy.scripts.commands import inpaint, serve, triton_repo

REPO = Path(__file__).resolve().parents[2]
PARSERS = {"inpaint": inpaint.build_parser, "serve": serve.build_parser, "triton-repo": triton_repo.build_parser}
#: values a user may type, per option (good ones; each entry point must read them alike)
GOOD = {"threshold": ["auto", "0", "127", "iopaint", "lama", "30.5"], "exif": ["apply", "keep"],
        "strategy": ["auto", "crop", "window", "resize", "whole", "original"], "margin": ["0", "64"],
        "crop_trigger": ["0", "1200"], "resize_limit": ["256"], "max_side": ["512", "none"],
        "max_pixels": ["1000000"], "max_memory": ["auto", "none", "4GB", "512MiB"],
        "backend": ["auto", "onnxruntime", "tensorrt", "torch"], "device": ["cpu", "cuda", "cuda:1"],
        "precision": ["auto", "fp32", "fp16", "bf16"], "cuda_graphs": ["auto", "on", "off"],
        "compile": ["off", "default", "max-autotune"], "providers": ["CUDA,CPU", "auto"]}
BAD = {"threshold": ["300", "soft", "-1"], "exif": ["rotate"], "strategy": ["tiles"], "margin": ["-1", "x"],
       "crop_trigger": ["1.5"], "resize_limit": ["8"], "max_side": ["8"], "max_pixels": ["0"],
       "max_memory": ["lots"], "backend": ["tflite"], "device": ["gpu0"], "precision": ["fp8"],
       "cuda_graphs": ["maybe"], "compile": ["fast"], "providers": [","]}


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.dest: action for action in parser._actions if action.option_strings}


def test_every_option_has_examples() -> None:
    assert set(GOOD) == set(SPECS) == set(BAD)


@pytest.mark.parametrize("command", list(PARSERS))
def test_each_command_spells_every_option_alike(command: str) -> None:
    actions = _actions(PARSERS[command]())
    reference = _actions(PARSERS["inpaint"]())
    for spec in OPTIONS:
        action = actions[spec.name]
        assert action.option_strings == [spec.flag]
        assert (action.default, action.metavar, action.help) == \
            (reference[spec.name].default, reference[spec.name].metavar, reference[spec.name].help)
        assert spec.help.split(";")[0] in action.help and spec.default_text in action.help


@pytest.mark.parametrize("name", list(SPECS))
def test_cli_http_and_triton_read_the_same_values(name: str) -> None:
    parser = inpaint.build_parser()
    for text in GOOD[name]:
        args = parser.parse_args(["-o", "x.png", f"{SPECS[name].flag}={text}"])
        from_cli = InpaintOptions().replace(**{name: getattr(args, name)}) if getattr(args, name) is not None \
            else InpaintOptions()
        from_config = options_from_parameters({name: text})
        assert from_config == from_cli, (name, text)
        if name in REQUEST_OPTIONS:
            assert http_options({name: text}, InpaintOptions()) == from_cli
            assert triton_options(InpaintOptions(), {name: text}) == from_cli
    for text in BAD[name]:
        with pytest.raises(OptionError):
            InpaintOptions().with_text({name: text}, tuple(SPECS))
        if name in REQUEST_OPTIONS:
            with pytest.raises(RequestRejected) as refused:
                http_options({name: text}, InpaintOptions())
            assert refused.value.status == 422 and "\n" not in refused.value.message


def test_start_up_options_are_refused_per_request() -> None:
    with pytest.raises(RequestRejected, match="unknown form field 'max_memory'"):
        http_options({"max_memory": "1GB"}, InpaintOptions())
    with pytest.raises(OptionError, match="unknown request parameter 'backend'"):
        triton_options(InpaintOptions(), {"backend": "torch"})


def test_the_options_table_in_the_docs_is_the_declared_one() -> None:
    from lama_deploy.runtime.options import markdown_table

    assert markdown_table() in (REPO / "docs" / "options.md").read_text()


# -- commands apart from the library ------------------------------------------------------------------------
LIBRARY = ["lama_model", "lama_deploy", "export", "runtime"]
LAUNCHERS = {"export/to_onnx.py"}  # `python export/to_onnx.py`: calls the export command, holds no parser


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _builds_a_parser(path: Path) -> bool:
    """An ArgumentParser made or an argument added (argparse.Namespace as a checkpoint's data type is fine)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("ArgumentParser", "add_argument", "add_argument_group"):
            return True
        if isinstance(node, ast.Name) and node.id == "ArgumentParser":
            return True
    return False


def test_no_library_module_parses_a_command_line_or_imports_a_command() -> None:
    offenders = {}
    for folder in LIBRARY:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative in LAUNCHERS:
                continue
            bad = {name for name in _imports(path)
                   if name.startswith(("lama_deploy.scripts", "scripts"))}
            if _builds_a_parser(path):
                bad.add("argparse parser")
            if bad:
                offenders[relative] = sorted(bad)
    assert offenders == {}
