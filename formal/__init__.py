"""Formal proofs of darbgen's engine (SymbiYosys through pip: yowasp-sby, yices).

* :mod:`formal.decoder`: the index decoder emits the artifact's columns (k-induction);
* :mod:`formal.engine`: the engine multiplies every loaded weight exactly once with
  the right input element, against a naive reference (bounded, complete runs);
* :mod:`formal.processor`: the whole processor's sequencer runs the program's steps
  and positions in order, each once, and gathers only scratchpad entries written before
  (bounded, shallow);
* :mod:`formal.sby`: the runner.

``python -m formal`` runs every proof and prints the table of docs/formal.md;
``tests/test_formal.py`` runs them in the test suite.
"""
