"""Reading LaMa checkpoints without executing code from them, within budgets, and mapping their keys onto
the generator (docs/security.md, "Checkpoint loader").

- `archive`: the file (torch.save / TorchScript zip archives, bare pickles), its records checked against
  the archive's real sizes;
- `unpickler`: the restricted unpickler; `policy`: what a pickle may name and call; `budget`: what reading
  one file may still cost (objects, memory, opcodes, time), charged by the unpickler and the walk;
- `records`: errors, limits and tensor data records;
- `weights`: the generator's tensors found in the object, the configuration checked, the model built.
"""

from .archive import member_info, read_checkpoint
from .budget import Budget
from .records import DEFAULT_LIMITS, CheckpointError, DamagedCheckpointError, Limits, UnsafeCheckpointError
from .weights import (ANCHOR_KEY, check_weights_fit, check_weights_own_bytes, collect_tensors, config_from_state_dict,
                      config_name, expected_shapes, generator_state_dict, load_generator_weights,
                      load_inpainting_model)

__all__ = [
    "ANCHOR_KEY", "DEFAULT_LIMITS", "Budget", "CheckpointError", "DamagedCheckpointError", "Limits",
    "UnsafeCheckpointError", "check_weights_fit", "check_weights_own_bytes", "collect_tensors",
    "config_from_state_dict", "config_name", "expected_shapes", "generator_state_dict", "load_generator_weights",
    "load_inpainting_model", "member_info", "read_checkpoint",
]
