"""darbgen: pruned neural networks to bit-exact FPGA sparse matrix-vector engines.

The shared contract lives here (:mod:`darbgen.format`: the sparse layer and the
``.darb`` artifact); the stages are subpackages: ``darbgen.pruning`` (PyTorch),
``darbgen.hdl`` (Amaranth), ``darbgen.sim`` (cocotb + Verilator),
``darbgen.boards``, ``darbgen.host``. Only ``darbgen.pruning`` imports torch.
"""

__version__ = "0.1.0"
