"""Triton Inference Server: model repositories (`repo`: the raw model; `image_repos`: the raw-image python
model and the ensemble), their `config.pbtxt` text (`pbtxt`), the python-backend models (`model`) over the
Inpainter's steps, and `serve` (the pytriton-bundled tritonserver). Nothing here imports Triton itself."""
