"""Checkpoint loading: every layout, never executing code from the file, clear errors."""

from __future__ import annotations

import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch

from lama_model import CheckpointError, InpaintingModel, UnsafeCheckpointError, load_inpainting_model
from lama_model.checkpoint import config_from_state_dict, generator_state_dict


def _same_weights(a: InpaintingModel, b: InpaintingModel) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _lightning_checkpoint(model: InpaintingModel) -> dict:
    state = {f"generator.{k}": v for k, v in model.generator.state_dict().items()}
    state["discriminator.model0.0.weight"] = torch.zeros(64, 3, 4, 4)
    state["loss_resnet_pl.impl.conv1.weight"] = torch.ones(2)
    return {"state_dict": state, "epoch": 40, "pytorch-lightning_version": "1.2.9",
            "hyper_parameters": {"generator": {"kind": "ffc_resnet", "ngf": 64}}}


def test_lightning_checkpoint_with_foreign_objects(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    """Discriminator/loss keys are dropped; config objects of libraries not installed still yield the tensors."""
    fake = types.ModuleType("omegaconf_not_installed")

    class DictConfig:
        def __init__(self) -> None:
            self.content = {"lr": 1e-3}

    DictConfig.__module__ = fake.__name__
    DictConfig.__qualname__ = "DictConfig"
    fake.DictConfig = DictConfig
    sys.modules[fake.__name__] = fake
    try:
        checkpoint = _lightning_checkpoint(tiny_model)
        checkpoint["hparams_object"] = DictConfig()
        torch.save(checkpoint, tmp_path / "best.ckpt")
    finally:
        del sys.modules[fake.__name__]
    loaded = load_inpainting_model(tmp_path / "best.ckpt")
    assert loaded.generator.config.ngf == 8 and loaded.generator.config.n_blocks == 2
    assert _same_weights(loaded, tiny_model)
    assert not loaded.training


def test_plain_state_dict_and_prefixed(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    torch.save(tiny_model.generator.state_dict(), tmp_path / "gen.pth")
    torch.save({f"model.generator.{k}": v for k, v in tiny_model.generator.state_dict().items()}, tmp_path / "p.pth")
    assert _same_weights(load_inpainting_model(tmp_path / "gen.pth", config="tiny"), tiny_model)
    assert _same_weights(load_inpainting_model(tmp_path / "p.pth"), tiny_model)


def test_torchscript_archive_is_read_without_running_it(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    """IOPaint's big-lama.pt layout: a traced wrapper whose `model` holds the inpainting module."""

    class JITWrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = tiny_model

        def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.model(image, mask)

    traced = torch.jit.trace(JITWrapper().eval(), (torch.rand(1, 3, 32, 32), torch.zeros(1, 1, 32, 32)))
    traced.save(str(tmp_path / "big-lama.pt"))
    with zipfile.ZipFile(tmp_path / "big-lama.pt") as archive:
        assert any(name.endswith(".py") for name in archive.namelist())  # it does carry code
    assert _same_weights(load_inpainting_model(tmp_path / "big-lama.pt"), tiny_model)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "raw-pickle"])
def test_code_execution_payload_is_refused(tmp_path: Path, tiny_model: InpaintingModel, layout: str) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    checkpoint = _lightning_checkpoint(tiny_model)
    checkpoint["callbacks"] = _Payload(marker)
    path = tmp_path / "evil.ckpt"
    if layout == "zip":
        torch.save(checkpoint, path)
    else:
        path.write_bytes(pickle.dumps({"callbacks": _Payload(marker)}))
    with pytest.raises(UnsafeCheckpointError, match=r"system, which could execute code"):
        load_inpainting_model(path)
    assert not marker.exists(), "the pickle payload ran"


@pytest.mark.parametrize("callable_path", ["builtins.eval", "subprocess.Popen", "builtins.exec"])
def test_other_dangerous_callables_are_refused(tmp_path: Path, callable_path: str) -> None:
    module, name = callable_path.split(".")
    # GLOBAL module\nname\n + (tuple arg) + REDUCE + STOP, protocol 0 style
    payload = f"c{module}\n{name}\n(S'print(1)'\ntR.".encode()
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafeCheckpointError):
        load_inpainting_model(path)


def test_wrong_config_reports_keys_by_name(tmp_path: Path, tiny_model: InpaintingModel) -> None:
    torch.save(tiny_model.generator.state_dict(), tmp_path / "gen.pth")
    with pytest.raises(CheckpointError) as info:
        load_inpainting_model(tmp_path / "gen.pth", config="lama-fourier")
    message = str(info.value)
    assert "lama-fourier" in message and "shape mismatch model.1.ffc.convl2l.weight (8, 4, 7, 7) vs (64, 4, 7, 7)" in message
    assert "\n" not in message


def test_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_inpainting_model(tmp_path / "nope.ckpt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no LaMa generator found"):
        load_inpainting_model(tmp_path / "other.pth")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a pickle at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_inpainting_model(tmp_path / "garbage.ckpt")


def test_legacy_torch_save_format_is_named(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy torch.save format"):
        load_inpainting_model(tmp_path / "legacy.pth")


def test_config_is_inferred_from_tensors(tiny_model: InpaintingModel) -> None:
    state = generator_state_dict({f"state_dict.generator.{k}": v for k, v in tiny_model.generator.state_dict().items()})
    assert config_from_state_dict(state) == tiny_model.generator.config
