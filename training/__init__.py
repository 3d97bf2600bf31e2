"""Training entry points: ``python -m training.train_modular_ae`` and ``python -m training.train_controlnet``,
which share one loop (``training.loop``) and one checkpoint layout (``training.checkpoints``)."""
