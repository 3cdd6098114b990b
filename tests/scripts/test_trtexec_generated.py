"""scripts/trtexec/*.sh are generated: each must equal what `scripts/trtexec_commands.py` writes today, so a
stale script (an old flag, a moved hook file, another default profile) fails here.

The fast test takes the fp16 layer lists (the only part read from the big-lama graph) from the committed
8.x scripts and checks every byte of all 18 files; the slow test reads those lists from a fresh big-lama
export too. Regenerate with:

    python scripts/trtexec_commands.py --onnx big-lama.onnx --onnx-fp16 big-lama-fp16.onnx --out-dir scripts/trtexec
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lama_deploy.profiles import make_profiles
from lama_deploy.scripts.trtexec_commands import OnnxFacts, generate_scripts, read_onnx_facts

COMMITTED = Path(__file__).resolve().parents[2] / "scripts" / "trtexec"
LAYERS = re.compile(r"--layerPrecisions=\*:fp32,([^' ]+)")


def committed_fp16_layers() -> list[str]:
    lists = {tuple(item.rsplit(":", 1)[0] for item in match.group(1).split(","))
             for path in COMMITTED.glob("trtexec_*_fp16.sh") for match in LAYERS.finditer(path.read_text())}
    assert len(lists) == 1, "the 8.x fp16 scripts disagree on the layer list: regenerate them"
    (layers,) = lists
    return list(layers)


def _differences(generated: list[Path], reference: Path = COMMITTED) -> list[str]:
    names = sorted(p.name for p in generated)
    assert names == sorted(p.name for p in reference.glob("*.sh")), "a script was added or removed: regenerate"
    return [p.name for p in generated if p.read_text() != (reference / p.name).read_text()]


def _generate(out: Path) -> list[Path]:
    return generate_scripts(out, make_profiles(None, None, None), OnnxFacts("fp32", committed_fp16_layers(), "big-lama"),
                            OnnxFacts("fp16", [], "big-lama"))


def test_committed_scripts_are_what_the_generator_writes(tmp_path: Path) -> None:
    layers = committed_fp16_layers()
    assert len(layers) > 100 and all(name.startswith("/generator/") and "/fu/" not in name for name in layers)
    written = _generate(tmp_path)
    assert len(written) == 18 and _differences(written) == []


def test_a_stale_script_is_caught(tmp_path: Path) -> None:
    written = _generate(tmp_path / "fresh")
    stale = tmp_path / "stale"
    _generate(stale)
    script = stale / "polygraphy_trt86_fp32.sh"
    script.write_text(script.read_text().replace("polygraphy_hooks.py", "trt_builder.py"))  # the pre-split hook path
    assert _differences(written, stale) == ["polygraphy_trt86_fp32.sh"]


@pytest.mark.slow
def test_committed_layer_lists_match_a_fresh_big_lama_export(big_lama_onnx: Path, big_lama_fp16_onnx: Path,
                                                              tmp_path: Path) -> None:
    written = generate_scripts(tmp_path, make_profiles(None, None, None), read_onnx_facts(big_lama_onnx),
                               read_onnx_facts(big_lama_fp16_onnx))
    assert _differences(written) == []
