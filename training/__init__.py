"""Training entry points: ``python -m training.train_modular_ae`` (and, later, ``train_controlnet``)."""
