"""ComfyUI nodes for SCG (classic V1 node API). Thin adapters over :mod:`scg_core`."""

from .controlnet_nodes import SCGControlNetApply
from .deps import report_missing_packages
from .hint_nodes import SCGDecompositionSheet, SCGLoadModularAE, SCGModularAEEncode
from .models import register_model_folder

report_missing_packages()
register_model_folder()

NODE_CLASS_MAPPINGS = {
    "SCGLoadModularAE": SCGLoadModularAE,
    "SCGModularAEEncode": SCGModularAEEncode,
    "SCGControlNetApply": SCGControlNetApply,
    "SCGDecompositionSheet": SCGDecompositionSheet,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SCGLoadModularAE": "Load Modular AE",
    "SCGModularAEEncode": "Modular AE Encode (hypercolumn)",
    "SCGControlNetApply": "SCG ControlNet Apply",
    "SCGDecompositionSheet": "SCG Decomposition Sheet (all hints)",
}
