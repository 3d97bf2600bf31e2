"""Files: scg_core's safetensors weights, images (PIL ↔ ``[B,3,H,W]`` tensors), and the converter of
the official autoencoder ``.pth``. Depends on :mod:`scg_core.model` only."""
