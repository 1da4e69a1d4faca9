"""Pruning front end: pure mask functions (numpy) and torch pruning methods.

``darbgen.pruning.masks`` needs numpy only; the torch parts (``methods``,
``train``, ``examples``) load on first use, so importing this package does not
import torch.
"""

import importlib

from .masks import (DEFAULT_BLOCK_SIZES, bmwm_mask, block_mask, darb_block_sizes, darb_mask,
                    irregular_mask, nearest_density_rule, nm_mask)
from .pqi import SAPCount, gini_index, pq_index, sap_prune_count

_LAZY = {
    "PruningMethod": "methods", "Irregular": "methods", "Block": "methods", "NM": "methods",
    "BMWM": "methods", "DARB": "methods", "METHODS": "methods", "make_method": "methods",
    "PrunableLayer": "methods", "prunable_layers": "methods", "encode_layer": "methods",
    "export_layer": "methods", "load_source": "sources", "prune_oneshot": "sources",
    "run_example": "examples", "EXAMPLES": "examples", "prune_model": "examples",
    "export_network": "examples", "from_module": "graphs", "load_graph": "graphs",
    "prune_source": "user",
}

__all__ = ["DEFAULT_BLOCK_SIZES", "bmwm_mask", "block_mask", "darb_block_sizes", "darb_mask",
           "irregular_mask", "nearest_density_rule", "nm_mask", "SAPCount", "gini_index",
           "pq_index", "sap_prune_count", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
