"""lama-deploy: ship LaMa inpainting to real GPUs (ONNX with DFT-as-matmul, TensorRT, a thin runtime)."""

__version__ = "0.1.0"
