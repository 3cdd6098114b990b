"""`lama-deploy bench`: the benchmarks, one module per responsibility.

- `command.py`: the command (`lama-deploy bench`, `python3 -m lama_deploy.scripts.bench`): CPU cells in fresh
  processes, targets, plot, `docs/benchmarks.md`; `--device cuda` hands over to the GPU rows;
- `backends.py`: the measured backends (PyTorch, ONNX Runtime, TensorRT) and the child process of one cell;
- `report.py`: statistics, targets, FLOP counts, the Markdown page and the plot of the CPU run;
- `gpu.py` + `gpu_report.py`: the GPU rows (Fourier forms x precision policies, the PyTorch backend's modes,
  batch scaling, torch.compile) and their section of the page;
- `fp16.py`: fp16 error of the DFT-as-matmul at trained-like activations;
- `fourier_unit.py`: one Fourier unit's ONNX Runtime CPU time with and without the spectrum padding;
- `memory.py`, `crop.py`: peak memory per case and the crop strategy (`python3 -m lama_deploy.scripts.bench.memory`,
  `... .bench.crop`).
"""

from .command import main

__all__ = ["main"]
