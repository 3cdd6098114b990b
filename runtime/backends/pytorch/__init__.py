"""The PyTorch backend (`backend.py`: `TorchBackend`), its precision modes and fp16/bf16 policies
(`precision.py`) and CUDA-graph replay (`cuda.py`). Imported only when a checkpoint is run: it needs torch."""
