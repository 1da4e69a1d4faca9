"""The ``darbgen`` command: one subcommand per stage, each a thin wrapper over the library.

Errors print one line on stderr and exit non-zero (a traceback only with
``-v``); outputs are written atomically, so a failed command leaves no
half-written file. Machine-readable results are one JSON object on the last
line of stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .files import atomic_write, check_output, read_input
from .format import JSON_NAMES, Artifact, ArtifactError, SparseLayer, read_npy
from .graph import ACTIVATIONS

__all__ = ["main", "build_parser"]

METHOD_NAMES = ("darb", "bmwm", "block", "nm", "irregular", "sap", "blkrew", "structured")


class CLIError(Exception):
    """A usage problem found after parsing (e.g. an option that does not fit the method)."""


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error shape: one line on stderr, exit status 2 (no usage
    block: ``-h`` shows it)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    return value


def _number_pair(text):
    try:
        a, b = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two numbers like 0.5,1, not {text!r}") from None
    return a, b


def _int_list(text):
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers like 2,4,8, not {text!r}") from None


def _block_size(text):
    """``B`` or, for block pruning, ``BHxBW``."""
    try:
        parts = tuple(int(t) for t in text.lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"must be an integer B or BHxBW, not {text!r}")
    return parts


def build_parser() -> argparse.ArgumentParser:
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show a traceback on errors")
    parser = _Parser(
        prog="darbgen", parents=[verbose],
        description="Pruned neural networks to bit-exact FPGA sparse engines.")
    parser.add_argument("--version", action="version", version=f"darbgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prune", parents=[verbose], help="prune weights into an artifact",
                       description="Prune a .npy matrix or a torch.save state dict "
                                   "(one-shot), your ONNX or torch.export model (with "
                                   "--data: fine-tuned and calibrated on your data; else "
                                   "one-shot) or a built-in example (trained and "
                                   "fine-tuned) into a .darb artifact.")
    p.add_argument("source", metavar="SOURCE",
                   help="a .npy float matrix, a torch.save state dict, an ONNX model, a "
                        "torch.export .pt2 file, or a built-in example (digits-mlp)")
    p.add_argument("--data", metavar="DATA.npz",
                   help="the user's data (x_train, y_train, x_test, y_test) for an ONNX, "
                        ".pt2 or (with --activation) state-dict SOURCE: prune progressively "
                        "with masked fine-tuning, calibrate, report dense, pruned and integer "
                        "accuracy")
    p.add_argument("--epochs", type=int, metavar="E",
                   help="with --data: fine-tuning epochs per pruning step (default 5)")
    p.add_argument("--activation", choices=ACTIVATIONS,
                   help="with --data and a state dict: what runs between its Linear layers "
                        "(a state dict names no ops; a graph source says its own)")
    p.add_argument("--method", required=True, choices=METHOD_NAMES)
    p.add_argument("--ratio", type=_number, metavar="R",
                   help="target pruning ratio, dense size / kept weights (darb, block, "
                        "irregular; default 16)")
    p.add_argument("--block-size", type=_block_size, metavar="B",
                   help="bmwm: block size (default 16); nm: M (default 4); block: B or "
                        "BHxBW (default 4x4)")
    p.add_argument("--block-sizes", type=_int_list, metavar="LIST",
                   help="darb: allowed power-of-two block sizes (default 2,4,8,16,32,64)")
    p.add_argument("--keep", type=int, metavar="K",
                   help="darb, bmwm: weights kept per block (default 1); nm: N (default 2)")
    sap_opts = p.add_argument_group("sap", "PQ Index driven adaptive pruning (--method sap); "
                                           "with --block-sizes, SAP-driven DARB")
    sap_opts.add_argument("--pq", type=_number_pair, metavar="P,Q",
                          help="PQ Index norms (default 0.5,1)")
    sap_opts.add_argument("--eta-r", type=_number, metavar="ETA", help="η_r (default 0)")
    sap_opts.add_argument("--gamma", type=_number, metavar="G", help="γ (default 1)")
    sap_opts.add_argument("--beta", type=_number, metavar="B", help="β cap (default 0.9)")
    sap_opts.add_argument("--scope", choices=("neuron", "layer", "global"),
                          help="pruning groups (default neuron)")
    sap_opts.add_argument("--iterations", type=int, metavar="T",
                          help="prune-rewind-train iterations for built-in examples "
                               "(default 10)")
    blk = p.add_argument_group("blkrew", "block row/column pruning with reweighted group "
                                         "regularization (--method blkrew; --ratio, "
                                         "--block-size BHxBW)")
    blk.add_argument("--penalty", choices=("reweighted", "group_lasso"),
                     help="regularizer for built-in examples (default reweighted)")
    blk.add_argument("--lam", type=_number, metavar="LAMBDA",
                     help="regularization strength (default 1e-5)")
    st = p.add_argument_group("structured", "feature-map / kernel / strided conv pruning "
                                            "(--method structured)")
    st.add_argument("--granularity", choices=("feature_map", "kernel", "strided"),
                    help="default kernel")
    st.add_argument("--selector", choices=("particle", "magnitude", "random"),
                    help="default particle for built-in examples, magnitude otherwise")
    st.add_argument("--keep-fraction", type=_number, metavar="F",
                    help="units kept, feature_map and kernel (default 0.5)")
    st.add_argument("--stride", type=int, metavar="S", help="strided: stride (default 2)")
    p.add_argument("--weight-bits", type=int, default=8, metavar="BITS",
                   help="signed weight width (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for built-in examples "
                                                       "(default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.darb")

    p = sub.add_parser("inspect", parents=[verbose], help="describe an artifact")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw a layer's mask and its rows' block sizes (needs matplotlib)")
    p.add_argument("--layer", metavar="NAME", help="with --plot: the layer (default: the first)")

    p = sub.add_parser("generate", parents=[verbose],
                       help="emit the engine's Verilog and a JSON of its ports and parameters",
                       description="Generate a sparse matrix-vector engine sized for every "
                                   "layer of the artifact.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--lanes", type=int, default=8, metavar="P",
                   help="parallel multipliers (default %(default)s)")
    p.add_argument("--board", metavar="NAME",
                   help="emit the board's whole top instead (Verilog + constraints; one layer)")
    p.add_argument("--layer", metavar="NAME", help="with --board: the layer (default: the first)")

    p = sub.add_parser("simulate", parents=[verbose],
                       help="run the generated engine in a simulator on input vectors",
                       description="Build the engine for one layer, run int8 input vectors "
                                   "through it in a simulator and write the exact outputs.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--inputs", required=True, metavar="X.npy",
                   help="int8 input vectors, n × cols")
    p.add_argument("-o", "--output", required=True, metavar="Y.npy")
    p.add_argument("--layer", metavar="NAME", help="layer to run (default: the first)")
    p.add_argument("--lanes", type=int, default=8, metavar="P",
                   help="parallel multipliers (default %(default)s)")
    p.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")

    # What `build` and `serve-sim` share: the device core a board runs. By default the
    # board's layer-sequenced processor; --layer or --network: an older core sized to
    # the artifact (one engine, a chain of engines).
    board_core = argparse.ArgumentParser(add_help=False)
    board_core.add_argument("artifact", metavar="ARTIFACT", nargs="?",
                            help="without --layer or --network: a network that must fit the "
                                 "board's processor (checked); optional")
    board_core.add_argument("--board", required=True, metavar="NAME")
    board_core.add_argument("--layer", metavar="NAME",
                            help="instead of the processor: one engine sized to this layer")
    board_core.add_argument("--lanes", type=int, metavar="P",
                            help="lanes (default: the board's)")
    board_core.add_argument("--network", action="store_true",
                            help="instead of the processor: the whole network as a chain of "
                                 "engines with requantizers")

    p = sub.add_parser("build", parents=[verbose, board_core],
                       help="build a board's bitstream: its processor (open toolchain)",
                       description="Synthesize, place and route UART link + protocol "
                                   "controller + the board's layer-sequenced processor (or, "
                                   "with --layer/--network, an engine or chain sized to the "
                                   "artifact) with the YoWASP tools; write the bitstream and "
                                   "DIR/report.json.")
    p.add_argument("-o", "--output", required=True, metavar="DIR")

    p = sub.add_parser("serve-sim", parents=[verbose, board_core],
                       help="simulate a board in Verilator behind a pseudo-terminal",
                       description="Build the board's device (UART included; its processor "
                                   "unless --layer/--network) in Verilator, bridge its UART "
                                   'to a pseudo-terminal, print {"port": "/dev/pts/N"} and '
                                   "serve until killed.")

    p = sub.add_parser("deploy", parents=[verbose],
                       help="load a network, an LSTM step or a layer onto a board over serial, "
                            "verify it, run inputs",
                       description="Optionally program the board, identify it, check that "
                                   "what it is asked to run fits, stream the weights, verify "
                                   "them, run input vectors and write the exact outputs.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--port", required=True, metavar="PORT",
                   help="serial device or pyserial URL (e.g. the port serve-sim printed)")
    p.add_argument("--layer", metavar="NAME",
                   help="run this layer alone (default: what the board runs: the whole "
                        "network on a processor or chain, the first layer on one engine)")
    p.add_argument("--network", action="store_true",
                   help="deploy the whole network (a processor, or a chain built with "
                        "--network)")
    p.add_argument("--inputs", metavar="X.npy",
                   help="int8 input vectors, n × cols (an LSTM step: one sequence's x_t, "
                        "one per row)")
    p.add_argument("-o", "--output", metavar="Y.npy", help="where to write the outputs")
    p.add_argument("--program", metavar="BITSTREAM",
                   help="program this bitstream first (openFPGALoader; the board is read "
                        "from report.json next to it)")
    _link_options(p)

    p = sub.add_parser("eval", parents=[verbose],
                       help="accuracy of a whole network: float, integer model, hardware",
                       description="Run the artifact's whole network in integers (the golden "
                                   "model) on a data set's test split and, with --on verilator, "
                                   "on the generated chain of engines, with --on PORT on a "
                                   "board over its serial link; print "
                                   '{"accuracy_dense", "accuracy_int", "accuracy_hw", '
                                   '"hw_matches_int", "pruning_ratio", "samples"}.')
    p.add_argument("artifact", metavar="ARTIFACT")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--dataset", metavar="NAME", help="a built-in data set: digits")
    data.add_argument("--data", metavar="DATA.npz",
                      help="the user's data: its x_test and y_test")
    p.add_argument("--on", default="golden", metavar="golden|verilator|PORT",
                   help="where the hardware result comes from (default %(default)s: none; "
                        "PORT: a board that runs the network, e.g. the port serve-sim "
                        "--board NAME printed)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N test samples")
    p.add_argument("--lanes", type=int, default=4, metavar="P",
                   help="lanes per engine with --on verilator (default %(default)s)")
    p.add_argument("--report", metavar="FILE",
                   help="write per-class accuracy and confusion matrices as JSON")
    _link_options(p, " with --on PORT")

    p = sub.add_parser("sweep", parents=[verbose],
                       help="run a grid of design points on Dask (see docs/sweep.md)",
                       description="Expand SPEC.toml's lists (method, ratio, block_sizes, "
                                   "lanes, board) into points, run their steps (prune, eval, "
                                   "simulate, build) as Dask tasks cached by content hash under "
                                   "DIR, and write DIR/results.csv, results.json and plots.")
    p.add_argument("spec", metavar="SPEC.toml")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="an existing Dask scheduler (e.g. tcp://host:8786); default: a "
                        "LocalCluster on this machine")
    p.add_argument("--workers", type=int, metavar="N",
                   help="LocalCluster worker processes (default: this machine's cores)")

    p = sub.add_parser("dense", parents=[verbose],
                       help="write a layer's masked, quantized integer matrix")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--layer", required=True, metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="W.npy")
    return parser


# -- prune --------------------------------------------------------------------------

# The options of the drivers that are not mask methods (they train, regularize or search);
# the mask methods declare theirs (PruningMethod.OPTIONS in darbgen.pruning.methods).
_DRIVER_OPTIONS = {
    "sap": {"block_sizes": None, "pq": (0.5, 1.0), "eta_r": 0.0, "gamma": 1.0, "beta": 0.9,
            "scope": "neuron", "iterations": 10},
    "blkrew": {"ratio": 8.0, "block_size": (4, 4), "penalty": "reweighted", "lam": 1e-5},
    "structured": {"granularity": "kernel", "selector": None, "keep_fraction": 0.5,
                   "stride": 2},
}


def method_options() -> dict:
    """Method name → its options and their defaults: the pruning registry's methods,
    then the drivers."""
    from .pruning.methods import METHODS

    return {**{name: cls.OPTIONS for name, cls in METHODS.items()}, **_DRIVER_OPTIONS}


def method_takes(method: str) -> frozenset:
    """The option names (``ratio``, ``block_size``, ...) ``prune --method METHOD`` takes."""
    return frozenset(method_options()[method])


def check_method_options(args) -> dict:
    """The options ``args.method`` takes, with defaults.

    Raises
    ------
    CLIError
        An option was given that does not apply to the method.
    """
    options = method_options()
    allowed = options[args.method]
    for opt in dict.fromkeys(k for opts in options.values() for k in opts):
        if getattr(args, opt) is not None and opt not in allowed:
            raise CLIError(f"--{opt.replace('_', '-')} does not apply to --method {args.method}")
    opts = {k: (getattr(args, k) if getattr(args, k) is not None else v)
            for k, v in allowed.items()}
    # Ranges the methods would only meet after training (or never, for a file source).
    for opt in ("iterations", "stride"):
        if opt in opts and opts[opt] < 1:
            raise CLIError(f"--{opt} must be a positive integer, not {opts[opt]}")
    if "lam" in opts and not opts["lam"] >= 0:
        raise CLIError(f"--lam must be a non-negative number, not {opts['lam']}")
    return opts


def method_from_args(args):
    """The pruning method an argument namespace asks for.

    Raises
    ------
    CLIError
        An option that does not apply to the method.
    """
    from .pruning.methods import METHODS

    return METHODS[args.method].from_options(**check_method_options(args))


def cmd_prune(args) -> int:
    _output_file(args.output, args.source, args.data)
    return _report_pruned(args, prune_artifact(args))


def prune_artifact(args) -> Artifact:
    """The artifact ``prune``'s options (a parsed namespace) describe; ``darbgen sweep``
    calls it too.

    Raises
    ------
    CLIError
        No such source, or an option that does not apply to the method.
    """
    from .pruning.examples import EXAMPLES, run_example
    from .pruning.sources import load_source, prune_oneshot

    if args.source not in EXAMPLES and not os.path.lexists(args.source):
        raise CLIError(f"{args.source}: no such file (built-in examples: "
                       f"{', '.join(EXAMPLES)})")
    user = args.data is not None or Path(args.source).suffix in (".onnx", ".pt2")
    if args.epochs is not None and args.data is None:
        raise CLIError("--epochs needs --data (fine-tuning runs on the user's data)")
    if args.activation is not None and args.data is None:
        raise CLIError("--activation needs --data (without data a state dict is pruned "
                       "layer by layer, one-shot)")
    if user and args.method in _DRIVER_OPTIONS:
        raise CLIError(f"--method {args.method} does not take --data or a graph source; use "
                       "darb, bmwm, block, nm or irregular")
    if args.method in ("sap", "blkrew", "structured"):
        return {"sap": cmd_prune_sap, "blkrew": cmd_prune_blkrew,
                "structured": cmd_prune_structured}[args.method](args)
    method = method_from_args(args)
    if user:
        return _prune_user(args, method)
    if args.source in EXAMPLES:
        result = run_example(args.source, method, weight_bits=args.weight_bits, seed=args.seed,
                             progress=sys.stderr.isatty())
        artifact = result.artifact
        print(f"{args.source}: dense accuracy {result.accuracy_dense:.4f}, pruned "
              f"{result.accuracy_pruned:.4f}, int{args.weight_bits} weights "
              f"{result.accuracy_quantized:.4f} ({result.seconds:.1f} s)")
    else:
        artifact = prune_oneshot(load_source(args.source), method, weight_bits=args.weight_bits,
                                 source=str(args.source))
    return artifact


def _prune_user(args, method) -> Artifact:
    """``prune`` of the user's model (an ONNX graph, or weights) with the user's data."""
    from .pruning.user import prune_source

    if args.epochs is not None and args.epochs < 0:
        raise CLIError(f"--epochs must be a non-negative integer, not {args.epochs}")
    artifact = prune_source(args.source, method, data=args.data,
                            epochs=5 if args.epochs is None else args.epochs,
                            weight_bits=args.weight_bits, seed=args.seed,
                            activation=args.activation)
    acc = artifact.provenance.get("accuracy")
    if acc:
        print(f"{args.source}: dense accuracy {acc['dense']:.4f}, pruned {acc['pruned']:.4f}, "
              f"int{args.weight_bits} weights {acc['quantized']:.4f}, integer network "
              f"{acc['int']:.4f} on the {artifact.provenance['training']['test_samples']} "
              f"test samples of {args.data}")
    return artifact


def cmd_prune_sap(args) -> Artifact:
    from .pruning.sap import sap, sap_artifact, sap_oneshot_masks

    o = check_method_options(args)
    p, q = o["pq"]
    criterion = sap(p, q, eta_r=o["eta_r"], gamma=o["gamma"], beta=o["beta"])
    params = {"p": p, "q": q, "eta_r": o["eta_r"], "gamma": o["gamma"], "beta": o["beta"],
              "scope": o["scope"]}
    if args.block_sizes is not None:
        params["block_sizes"] = list(args.block_sizes)
    from .pruning.examples import EXAMPLES
    if args.source in EXAMPLES:
        from .pruning.sap import run_sap_example
        artifact = run_sap_example(args.source, criterion, scope=o["scope"],
                                   iterations=o["iterations"], block_sizes=args.block_sizes,
                                   weight_bits=args.weight_bits, seed=args.seed,
                                   progress=sys.stderr.isatty())
        acc = artifact.provenance["accuracy"]
        print(f"{args.source}: SAP {o['iterations']} iterations, dense accuracy "
              f"{acc['dense']:.4f}, SAP {acc['sap']:.4f}"
              + (f", SAP-driven DARB {acc['pruned']:.4f}" if "pruned" in acc else ""))
        artifact.provenance["parameters"].update(params)
    else:
        from .pruning.sources import load_source
        from .pruning.sap import sap_darb_masks
        layers = load_source(args.source)
        weights = [layer.weight for layer in layers]
        masks = sap_oneshot_masks(weights, criterion, o["scope"])
        sizes = None
        if args.block_sizes is not None:
            masks, sizes = zip(*sap_darb_masks(weights, masks, args.block_sizes))
        artifact = sap_artifact(layers, masks, params, row_block_sizes=sizes,
                                weight_bits=args.weight_bits,
                                provenance={"source": str(args.source), "fine_tuned": False})
    return artifact


def _source(args):
    """A built-in example's name, or the layers of a file source."""
    from .pruning.examples import EXAMPLES
    from .pruning.sources import load_source

    return args.source if args.source in EXAMPLES else load_source(args.source)


def cmd_prune_blkrew(args) -> Artifact:
    from .pruning.blkrew import blkrew_artifact

    o = check_method_options(args)
    shape = o["block_size"] * 2 if len(o["block_size"]) == 1 else o["block_size"]
    artifact = blkrew_artifact(_source(args), ratio=o["ratio"], block_shape=shape,
                               kind=o["penalty"], lam=o["lam"], weight_bits=args.weight_bits,
                               seed=args.seed, progress=sys.stderr.isatty())
    artifact.provenance.setdefault("source", str(args.source))
    return artifact


def cmd_prune_structured(args) -> Artifact:
    from .pruning.structured import structured_artifact

    o = check_method_options(args)
    source = _source(args)
    selector = o["selector"] or ("particle" if isinstance(source, str) else "magnitude")
    artifact = structured_artifact(source, granularity=o["granularity"], selector=selector,
                                   keep_fraction=o["keep_fraction"], stride=o["stride"],
                                   weight_bits=args.weight_bits, seed=args.seed,
                                   progress=sys.stderr.isatty())
    artifact.provenance.setdefault("source", str(args.source))
    return artifact


def _report_pruned(args, artifact) -> int:
    artifact.save(args.output)
    kept = sum(layer.nnz for layer in artifact.layers)
    total = sum(layer.rows * layer.input_width for layer in artifact.layers)
    summary = {"output": str(args.output), "layers": len(artifact.layers), "nnz": kept,
               "pruning_ratio": total / kept}
    summary.update({f"accuracy_{k}": v for k, v in
                    artifact.provenance.get("accuracy", {}).items()})
    print(f"wrote {args.output}: {len(artifact.layers)} layer(s), {kept} weights kept, "
          f"{total / kept:.2f}x")
    if len(artifact.layers) > 1 and any(l.input_scale is None for l in artifact.layers):
        print(f"note: {args.source} was pruned one-shot: no fine-tuning and no calibration "
              "(no input scales), so `darbgen eval` and the whole-network hardware cannot run "
              "it; an ONNX model with --data DATA.npz gets both")
    print(json.dumps(summary))
    return 0


# -- inspect ------------------------------------------------------------------------

def describe(artifact: Artifact) -> dict:
    """The ``inspect --json`` object of an artifact."""
    layers = []
    for layer in artifact.layers:
        layers.append({
            "name": layer.name, "rows": layer.rows, "cols": layer.cols, "method": layer.method,
            "nnz": layer.nnz, "pruning_ratio": layer.pruning_ratio,
            "weight_bits": layer.weight_bits, "index_bits_per_nnz": layer.index_bits_per_nnz,
            "scale": layer.scale.tolist() if layer.scale.ndim else float(layer.scale),
            "block_sizes": layer.block_sizes.tolist(), "keep": layer.keep.tolist(),
            "input_cols": layer.input_width,
        })
    return {"format_version": artifact.format_version, "provenance": artifact.provenance,
            "layers": layers}


def _histogram(values) -> str:
    sizes, counts = np.unique(values, return_counts=True)
    return " ".join(f"{s}:{c}" for s, c in zip(sizes, counts))


def printable(value) -> str:
    """``value`` as text that is safe on a terminal: names from a file may hold escape
    sequences, which are shown escaped, never sent raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(value))


def _figure(value) -> str:
    """A provenance figure: a number to 4 places, anything else as printable text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4f}"
    return printable(value)


def format_table(artifact: Artifact, path: str) -> str:
    """The human-readable ``inspect`` table."""
    prov = artifact.provenance
    lines = [f"{path}: darbgen artifact, format {artifact.format_version}, "
             f"source {printable(prov.get('source', '?'))}, "
             f"method {printable(prov.get('method', '?'))}"]
    head = ("layer", "rows", "cols", "method", "nnz", "ratio", "bits", "idx bits/nnz",
            "acc bits", "block sizes (size:rows)")
    rows = [head]
    for layer in artifact.layers:
        cols = str(layer.cols) if layer.input_columns is None else \
            f"{layer.cols}/{layer.input_width}"
        rows.append((printable(layer.name), str(layer.rows), cols, printable(layer.method),
                     str(layer.nnz),
                     f"{layer.pruning_ratio:.2f}x", str(layer.weight_bits),
                     f"{layer.index_bits_per_nnz:.2f}", str(layer.accumulator_width()),
                     _histogram(layer.block_sizes)))
    kept = sum(layer.nnz for layer in artifact.layers)
    total = sum(layer.rows * layer.input_width for layer in artifact.layers)
    rows.append(("total", "", "", "", str(kept), f"{total / kept:.2f}x", "", "", "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    acc = prov.get("accuracy")
    if isinstance(acc, dict) and acc:
        lines.append("accuracy: " + ", ".join(f"{printable(k)} {_figure(v)}"
                                              for k, v in acc.items()))
    elif acc:
        lines.append(f"accuracy: {_figure(acc)}")
    return "\n".join(lines)


def cmd_inspect(args) -> int:
    if args.layer is not None and args.plot is None:
        raise CLIError("--layer needs --plot")
    if args.plot is not None:
        _output_file(args.plot, args.artifact)
    artifact = Artifact.load(args.artifact)
    if args.plot is not None:
        from .report import plot_layer
        layer = artifact.layer(args.layer) if args.layer else artifact.layers[0]
        plot_layer(layer, args.plot)
        print(f"wrote {args.plot}: the mask and block sizes of {layer.name!r}", file=sys.stderr)
    if args.json:
        print(json.dumps(describe(artifact)))
    else:
        print(format_table(artifact, args.artifact))
    return 0


# -- dense --------------------------------------------------------------------------

def cmd_dense(args) -> int:
    _output_file(args.output, args.artifact)
    layer = Artifact.load(args.artifact).layer(args.layer)
    dense = layer.to_dense(expanded=True)
    atomic_write(args.output, lambda f: np.save(f, dense, allow_pickle=False))
    print(f"wrote {args.output}: {dense.shape[0]}x{dense.shape[1]} {dense.dtype}")
    return 0


# -- generate / simulate ----------------------------------------------------------------

def cmd_generate(args) -> int:
    from .config import EngineConfig
    from .hdl.generate import generate

    _output_dir(args.output)
    artifact = Artifact.load(args.artifact)
    if args.board is not None:
        return _generate_board(args, artifact)
    if args.layer is not None:
        raise CLIError("--layer needs --board (the engine alone is sized for every layer)")
    config = EngineConfig.for_layers(artifact.layers, _lanes(args.lanes))
    info = generate(config, args.output, artifact.layers)
    print(f"wrote {args.output}/{info['top']}.v and {info['top']}.json: {config.lanes} lanes, "
          f"block sizes {', '.join(map(str, config.block_sizes))}, "
          f"{config.acc_width}-bit accumulators")
    print(json.dumps({"verilog": f"{args.output}/{info['top']}.v",
                      "config_digest": info["config_digest"], "lanes": config.lanes}))
    return 0


def _output_file(path, *inputs) -> None:
    """Fail before any work when ``path`` cannot become an output file, or would replace
    one of the command's ``inputs``."""
    try:
        check_output(path, inputs)
    except ValueError as e:
        raise CLIError(str(e)) from None


def _output_dir(path) -> None:
    """Fail before any work when ``path`` cannot become an output directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CLIError(f"{path}: is a file, not an output directory")


def _lanes(n: int) -> int:
    from .config import MAX_LANES

    if n < 1:
        raise CLIError(f"--lanes must be a positive integer, not {n}")
    if n > MAX_LANES:
        raise CLIError(f"--lanes must be at most {MAX_LANES}, not {n}")
    return n


def _target(args, artifact):
    """What the options select: a whole network (``--network``) or one layer; and its name."""
    if getattr(args, "network", False):
        if args.layer:
            raise CLIError("--network runs every layer: drop --layer")
        from .processor_lstm import is_lstm, lstm_plan
        if is_lstm(artifact):                   # an LSTM's network is its time step
            step = lstm_plan(artifact)
            return step, step.name
        from .network import plan
        return plan(artifact), "network"
    layer = artifact.layer(args.layer) if args.layer else artifact.layers[0]
    return layer, layer.name


def _board_device(args, artifact, *, processor: bool = True):
    """The board, what its core runs (a layer's or the network's name, or "processor")
    and the device core the board options describe: the board's processor unless
    ``--layer`` or ``--network`` asks for a core sized to the artifact (or
    ``processor`` is false). An artifact given to a processor must fit it.

    Raises
    ------
    CLIError
        The artifact does not fit the processor (the message says what), or an option
        needs an artifact.
    """
    from .boards import core, get_board

    board = get_board(args.board)
    lanes = _lanes(args.lanes) if getattr(args, "lanes", None) is not None else None
    if processor and not (args.layer or getattr(args, "network", False)):
        config = core.processor_config(board, lanes)
        if artifact is not None:
            from .config import ConfigError
            from .hdl.cores import describe
            core = describe(config)
            target = core.default_target(artifact)      # the network, or an LSTM step
            try:
                core.check_target(target)
            except ConfigError as e:
                raise CLIError(f"{args.artifact} does not fit {board.name}'s processor: "
                               f"{e}") from None
        from .hdl.device import Device
        return board, "processor", Device(config, clock_hz=board.clock_hz, baud=board.baud)
    if artifact is None:
        raise CLIError(f"--{'layer' if args.layer else 'network'} needs an ARTIFACT")
    target, name = _target(args, artifact)
    return board, name, core.device(board, target, lanes)


def _load_artifact(path):
    """The artifact at ``path``, or ``None`` when no path was given."""
    return None if path is None else Artifact.load(path)


def _generate_board(args, artifact) -> int:
    from .boards import build

    board, name, dev = _board_device(args, artifact, processor=False)
    report = build(dev, board, args.output, lanes=dev.config.lanes, do_build=False,
                   extra_report={"layer": name})
    print(f"wrote {board.name} sources for {name!r} to {args.output}")
    print(json.dumps(report))
    return 0


def cmd_build(args) -> int:
    _output_dir(args.output)
    report = build_board(args, _load_artifact(args.artifact), args.output)
    print(f"{report['board']}: {report['layer']!r}, {report['lanes']} lanes, "
          f"fmax {report['fmax_mhz']} MHz (target {report['target_mhz']} MHz)")
    print(json.dumps(report))
    return 0


def build_board(args, artifact: Artifact | None, output) -> dict:
    """Build the bitstream the board options (``board``, ``layer``, ``lanes``, ``network``)
    describe into ``output``; the build's report (see :func:`darbgen.boards.build`), with
    the core's ``capacity`` when it runs any network that fits (the processor)."""
    from .boards import build
    from .hdl.cores import describe

    board, name, dev = _board_device(args, artifact)
    capacity = describe(dev.config).capacity()
    return build(dev, board, output, lanes=dev.config.lanes,
                 extra_report={"layer": name, "config": dev.config.to_json(),
                               **({} if capacity is None else {"capacity": capacity})})


def cmd_serve_sim(args) -> int:
    import os

    from .boards.core import DEVICE_TOP, device_verilog
    from .sim.board_sim import build_bridge

    board, name, dev = _board_device(args, _load_artifact(args.artifact))
    print(f"serve-sim: building {board.name}'s device for {name!r} "
          f"({dev.config.lanes} lanes, {dev.divisor} cycles per UART bit) in Verilator",
          file=sys.stderr)
    exe = build_bridge(device_verilog(dev, board), DEVICE_TOP)
    sys.stdout.flush()
    # The simulator itself prints {"port": ...} and serves until killed.
    os.execv(str(exe), [str(exe), "--divisor", str(dev.divisor)])


def _load_inputs(path, layer, *, network: bool = False, width: int | None = None,
                 what: str | None = None) -> np.ndarray:
    """int8 input vectors for ``layer`` from a .npy file (full-width inputs of a
    compacted layer are gathered to its stored columns). As the first layer of a
    ``network``, a convolution takes whole images (``C·H·W``, flattened), not patches;
    ``width`` and ``what`` name another input (an LSTM step's ``x_t``)."""
    data = read_input(path, what="a .npy file")
    try:
        x = read_npy(data)                          # checks the header before allocating
    except (ValueError, EOFError) as e:
        raise CLIError(f"{path}: not a readable .npy file ({e})") from None
    if x.dtype != np.int8:
        raise CLIError(f"{path}: inputs must be int8, not {x.dtype}")
    if width is None and network and layer.conv is not None:
        width, what = layer.conv_geometry.input_width, "the network's first layer"
    elif width is None:
        width, what = layer.cols, "layer"
        if x.ndim == 2 and x.shape[1] == layer.input_width != layer.cols:
            x = layer.gather(x)              # a compacted layer: keep its stored columns
    if x.ndim != 2 or x.shape[1] != width:
        raise CLIError(f"{path}: inputs must have shape (n, {width}) for {what} "
                       f"{layer.name!r}, not {x.shape}")
    return x


#: The serial link's options and their defaults (``deploy``, ``eval --on PORT``).
LINK_DEFAULTS = {"baud": 1_000_000, "timeout": 1.0, "deadline": 600.0}


def _link_options(p, when: str = "") -> None:
    """The serial link's options, shared by ``deploy`` and ``eval --on PORT``."""
    p.add_argument("--baud", type=int, default=LINK_DEFAULTS["baud"], metavar="N",
                   help=f"line rate the gateware was built for{when} (default %(default)s)")
    p.add_argument("--timeout", type=float, default=LINK_DEFAULTS["timeout"], metavar="S",
                   help=f"seconds a request waits for its reply before it is sent again{when} "
                        "(default %(default)s)")
    p.add_argument("--deadline", type=float, default=LINK_DEFAULTS["deadline"], metavar="S",
                   help=f"seconds after which the whole session gives up, however busy the "
                        f"line{when} (default %(default)s)")


def _link(args) -> dict:
    """The checked link options of ``args``, as :func:`_board` takes them."""
    from .host.transport import MAX_BAUD

    if not 1 <= args.baud <= MAX_BAUD:
        raise CLIError(f"--baud must be between 1 and {MAX_BAUD}, not {args.baud}")
    for opt in ("timeout", "deadline"):
        value = getattr(args, opt)
        if not (math.isfinite(value) and value > 0):
            raise CLIError(f"--{opt} must be a positive number of seconds, not {value}")
    return {"baud": args.baud, "timeout": args.timeout, "deadline": args.deadline}


@contextlib.contextmanager
def _board(port: str, *, baud: int, timeout: float, deadline: float, out=None):
    """The board on serial ``port``, identified (its line printed to ``out``, default
    stdout); the port is closed on the way out."""
    from .host import Board, SerialTransport

    from .hdl.cores import describe

    with SerialTransport(port, baud) as link:
        board = Board(link, timeout=timeout, deadline=deadline, progress=sys.stderr.isatty())
        identity = board.identify()
        core = describe(identity.config)
        cap = core.capacity()
        holds = "" if cap is None else (
            f"; {core.runs} holding {cap['weights']:,} kept weights, {cap['activations']:,} "
            f"activations, {cap['steps']} steps ({', '.join(cap['step_kinds'])})")
        print(f"identified build {identity.build_id.hex()}: {identity.config.lanes} lanes at "
              f"{identity.clock_hz / 1e6:g} MHz, {identity.baud} baud{holds}",
              file=out or sys.stdout)
        yield board


def cmd_deploy(args) -> int:
    from .host import program

    if (args.inputs is None) != (args.output is None):
        raise CLIError("--inputs and -o go together")
    link = _link(args)
    if args.output is not None:
        _output_file(args.output, args.artifact, args.inputs, args.program)
    artifact = Artifact.load(args.artifact)
    from .processor_lstm import LSTMPlan, is_lstm, lstm_plan
    # What the options name, checked before the board is touched; else what the board runs.
    named = _target(args, artifact) if args.layer or args.network else None
    # A network's input is its first layer's; an LSTM's, one time step's x_t per row (one
    # sequence: the first row starts from h = c = 0).
    step = lstm_plan(artifact) if is_lstm(artifact) and not args.layer else None
    x = None
    if args.inputs and step is not None:
        x = _load_inputs(args.inputs, step.gate, width=step.cols, what="the LSTM step")
    elif args.inputs:
        x = _load_inputs(args.inputs, artifact.layer(args.layer) if args.layer
                         else artifact.layers[0], network=not args.layer)
    if args.program:
        program(args.program)
    with _board(args.port, **link) as board:
        target, name = named or _default_target(artifact, board)
        loaded = board.load(target)
        print(f"loaded {loaded.words} words ({loaded.payload_bytes} bytes) of {name!r}, "
              f"verified by CRC-32; link efficiency {loaded.link_efficiency:.3f}")
        vectors, exact = 0, None
        if x is not None:
            from .sim.golden import network_ref, spmv_ref

            y = board.run(x)
            atomic_write(args.output, lambda f: np.save(f, y, allow_pickle=False))
            vectors = len(x)
            if isinstance(target, LSTMPlan):      # one sequence: its first step resets
                golden = target.golden(x, np.arange(len(x)) == 0)
            elif isinstance(target, SparseLayer):
                golden = spmv_ref(target, x)
            else:
                golden = network_ref(target, x)
            exact = bool(np.array_equal(y, golden))
            print(f"ran {vectors} vector(s) on the board, wrote {args.output}: "
                  f"{'exactly equal to' if exact else 'DIFFERENT FROM'} the golden model")
    print(json.dumps({"identified": True, "weights_verified": loaded.verified,
                      "link_efficiency": loaded.link_efficiency, "vectors": vectors,
                      "exact": exact, "retries": board.retried}))
    return 3 if exact is False else 0


def _default_target(artifact, board):
    """What the board's kind of core runs of ``artifact`` when the options name nothing
    (the whole network on a processor or chain, the first layer on one engine); and its
    name."""
    from .hdl.cores import describe

    from .processor_lstm import LSTMPlan

    target = describe(board.config).default_target(artifact)
    return target, target.name if isinstance(target, (SparseLayer, LSTMPlan)) else "network"


def simulate(layer, x, *, lanes: int = 8, simulator: str = "verilator"):
    """Run int8 vectors ``x`` through the engine for ``layer`` in ``simulator``: the outputs
    and ``simulate``'s summary (cycles, nnz, lanes, utilization, simulator, exact)."""
    from .sim.golden import spmv_ref
    from .sim.runner import simulate_layer

    if not len(x):                          # an empty batch: an empty result, no simulator
        return np.zeros((0, layer.rows), np.int64), {
            "cycles": 0, "nnz": layer.nnz, "lanes": _lanes(lanes), "utilization": None,
            "simulator": simulator, "exact": True}
    run = simulate_layer(layer, x, lanes=_lanes(lanes), simulator=simulator)
    exact = bool(np.array_equal(run.y, spmv_ref(layer, x)))
    utilization = layer.nnz * len(x) / (run.schedule.lanes * run.cycles)
    return run.y, {"cycles": run.cycles, "nnz": layer.nnz, "lanes": run.schedule.lanes,
                   "utilization": utilization, "simulator": simulator, "exact": exact}


def cmd_simulate(args) -> int:
    _output_file(args.output, args.artifact, args.inputs)
    artifact = Artifact.load(args.artifact)
    layer = artifact.layer(args.layer) if args.layer else artifact.layers[0]
    x = _load_inputs(args.inputs, layer)
    y, summary = simulate(layer, x, lanes=args.lanes, simulator=args.simulator)
    atomic_write(args.output, lambda f: np.save(f, y, allow_pickle=False))
    exact = summary["exact"]
    print(f"{layer.name}: {len(x)} vector(s) in {summary['cycles']} cycles on {args.simulator}, "
          f"{'exactly equal to' if exact else 'DIFFERENT FROM'} the golden model")
    print(json.dumps(summary))
    return 0 if exact else 3


def evaluate(artifact: Artifact, dataset: str | None = None, *, data=None, on: str = "golden",
             limit: int | None = None, lanes: int = 4, name: str = "the artifact",
             report=None, link: dict | None = None):
    """The accuracies ``eval`` prints (a dict) on a built-in ``dataset``'s test split or on
    the test arrays of a ``data`` file and, with ``on="verilator"``, the chain's cycles
    (else ``None``).

    ``on`` is ``"golden"`` (the integer model only), ``"verilator"`` (the generated chain
    in Verilator) or a serial port of a board that serves the network (``link``: the
    :func:`_board` options), which is loaded, verified and run there. ``name`` names the
    artifact in messages; with ``report``, per-class accuracy and confusion matrices are
    written there as JSON."""
    from .network import plan
    from .sim.golden import network_ref

    if limit is not None and limit < 1:
        raise CLIError(f"--limit must be a positive integer, not {limit}")
    from .processor_lstm import is_lstm
    if is_lstm(artifact):
        raise CLIError(f"{name} is an LSTM step: eval runs classifiers on a data set's test "
                       "split; run its time steps with `darbgen deploy ARTIFACT --port PORT "
                       "--inputs X.npy`, which checks every h and c against the golden model")
    net = plan(artifact)
    if data is not None:
        from .datasets import load_data
        arrays = load_data(data, test_only=True)
        x, labels = arrays["x_test"].reshape(len(arrays["x_test"]), -1), arrays["y_test"]
    else:
        from .datasets import test_split
        split_seed = _provenance(name, artifact, ("training", "split_seed"), int, 0)
        x, labels = test_split(dataset, split_seed)
    if x.shape[1] != net.cols:
        raise CLIError(f"{data or f'dataset {dataset!r}'} has {x.shape[1]} inputs, "
                       f"the network takes {net.cols}")
    x, labels = x[:limit], labels[:limit]
    xq = net.quantize_input(x)
    golden = network_ref(net, xq)
    hw = cycles = None
    if on == "verilator":
        from .sim.runner import simulate_network
        run = simulate_network(net, xq, lanes=_lanes(lanes))
        hw, cycles = run.logits, run.cycles
    elif on != "golden":
        with _board(on, **{**LINK_DEFAULTS, **(link or {})}, out=sys.stderr) as board:
            loaded = board.load(net)
            print(f"loaded {loaded.words} words of the network, verified by CRC-32; running "
                  f"{len(xq)} samples", file=sys.stderr)
            hw = board.run(xq)
    result = {
        "accuracy_dense": _provenance(name, artifact, ("accuracy", "dense"), (int, float),
                                      None),
        "accuracy_int": float((net.predict(golden) == labels).mean()),
        "accuracy_hw": None if hw is None else float((net.predict(hw) == labels).mean()),
        "hw_matches_int": None if hw is None else bool(np.array_equal(hw, golden)),
        "pruning_ratio": sum(l.rows * l.cols for l in artifact.layers)
        / sum(l.nnz for l in artifact.layers),
        "samples": len(x),
    }
    if report is not None:
        from .report import class_report, write_report
        preds = {"int": net.predict(golden)} | ({} if hw is None else {"hw": net.predict(hw)})
        write_report(report, {**result, **class_report(labels, preds, net.classes)})
        print(f"wrote {report}: per-class accuracy and confusion matrices", file=sys.stderr)
    return result, cycles


def cmd_eval(args) -> int:
    if args.report is not None:
        _output_file(args.report, args.artifact, args.data)
    link = _link(args)
    artifact = Artifact.load(args.artifact)
    result, cycles = evaluate(artifact, args.dataset, data=args.data, on=args.on,
                              limit=args.limit, lanes=args.lanes, name=args.artifact,
                              report=args.report, link=link)
    if cycles is not None:
        from .network import plan
        n = result["samples"]
        print(f"{n} samples through the chain of {len(plan(artifact).layers)} engines in "
              f"{cycles} cycles ({cycles / n:.0f} per inference, pipelined)")
    print(json.dumps(result))
    return 3 if result["hw_matches_int"] is False else 0


def _provenance(path, artifact: Artifact, keys: tuple, kind, default):
    """The provenance value at ``keys`` (a path through nested objects), or ``default``
    when it is absent.

    Raises
    ------
    CLIError
        A value on the way is not of the type darbgen writes there.
    """
    value = artifact.provenance
    for i, key in enumerate(keys):
        value = value.get(key, default)
        if value is default:
            return default
        want = kind if i == len(keys) - 1 else dict
        if not isinstance(value, want) or isinstance(value, bool):
            names = " or ".join(JSON_NAMES[k] for k in (want if isinstance(want, tuple) else
                                                         (want,)))
            raise CLIError(f"{path}: provenance field {'.'.join(keys[:i + 1])!r} must be "
                           f"{names}, not {JSON_NAMES[type(value)]}")
    return value


def cmd_sweep(args) -> int:
    from .sweep import load_spec, run_sweep

    _output_dir(args.output)
    if args.workers is not None and args.scheduler is not None:
        raise CLIError("--workers sizes a local cluster: drop it with --scheduler")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers must be a positive integer, not {args.workers}")
    summary = run_sweep(load_spec(args.spec), args.output, scheduler=args.scheduler,
                        workers=args.workers, progress=sys.stderr.isatty())
    print(f"{summary['points']} point(s), {summary['tasks']} task(s): {summary['fresh']} run, "
          f"{summary['cached']} cached, {summary['failed']} failed; wrote "
          f"{summary['results_csv']}")
    print(json.dumps(summary))
    return 3 if summary["failed"] else 0


COMMANDS = {"prune": cmd_prune, "eval": cmd_eval, "inspect": cmd_inspect, "dense": cmd_dense,
            "generate": cmd_generate, "simulate": cmd_simulate, "build": cmd_build,
            "serve-sim": cmd_serve_sim, "deploy": cmd_deploy, "sweep": cmd_sweep}


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (tests swap it between commands)."""

    def emit(self, record):
        print(self.format(record), file=sys.stderr)


def _log_progress() -> None:
    """Progress of long steps (pruning steps, simulator builds) as ``darbgen: ...`` lines on
    stderr, also when it is not a terminal (CI logs, pipes), where tqdm bars stay off.
    Only darbgen's own loggers: cocotb's INFO lines stay quiet."""
    logger = logging.getLogger("darbgen")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("darbgen: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _log_progress()
    try:
        return COMMANDS[args.command](args)
    except (CLIError, ArtifactError, ValueError, TypeError, OSError, KeyError,
            RuntimeError) as e:
        if getattr(args, "verbose", False):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"darbgen {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
