"""The ControlNet side: ldm ↔ diffusers layouts, the ``scg_*`` metadata a ControlNet records of the
hint it was trained on, the official hint border, and the official ``.ckpt`` converter."""
