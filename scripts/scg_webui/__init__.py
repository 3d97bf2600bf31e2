"""The SCG extension for AUTOMATIC1111 and Forge: the SCG tab, settings and the scg_hypercolumn
ControlNet preprocessor. A thin adapter over ``scg_core``; host-specific code is in ``hosts.py``."""
