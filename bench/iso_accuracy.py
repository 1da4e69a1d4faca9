"""Iso-accuracy pruning ratios on a built-in example: DARB against uniform block pruning,
irregular, N:M and BMWM, each found by a ratio search, over several seeds.

Per seed the dense model is trained once (cached under ``build/iso-cache/``) and every
probe prunes a copy of it: ``FINETUNE["steps"]`` progressive steps, each followed by
``FINETUNE["epochs"]`` of masked fine-tuning (identical for every method), int8 export
with per-row scales (:func:`darbgen.pruning.examples.prune_trained`). A probe passes when
its int8 accuracy is at most ``MAX_LOSS`` (1 point) below its seed's dense accuracy.

**The search.** Each variant has a sorted list of candidate target ratios: a geometric
grid ``GRID`` with step ``GRID_STEP`` (1.08, narrower than the 2.8-4.3x claim under test)
for the continuous methods (DARB, block, irregular), the method's own ratios for the
discrete ones (N:M: ``M/N`` with ``M = 16``; BMWM: ``128/k``). :func:`search` probes the
lowest and highest candidates, then bisects the index (a geometric bisection on the
grid) between a passing and a failing candidate until they are neighbours. It assumes
the loss grows with the ratio: every probe lies between a passing and a failing one, so
noise shows up as seed-to-seed spread, not as a contradiction within one search.

**Per-layer freedom.** ``uniform``: every layer at the target ratio. ``classifier``: the
last layer (the 10-row classifier) at ``min(R, CLASSIFIER_RATIO)`` of the same method,
every other layer at ``R``, so that the classifier is not what breaks first. DARB, block,
irregular, N:M and BMWM all get the ``classifier`` policy; DARB and block 4x4 also run
``uniform`` (the digits comparison's setting).

**Engine figures** of each variant's best passing point on seed 0's artifact: cycles per
inference on a chain of per-layer engines at ``LANES`` lanes (the sum over layers of
``bench/darb_vs_block.py``'s steady-state cycle model times the layer's input vectors per
image), index bits per kept weight, weight memory (beats + row headers over all lanes of
every layer's own smallest ``EngineConfig``) and x/y buffer memory.

Writes raw per-seed results to ``build/iso/EXAMPLE/seedS.json`` (a re-run reuses them;
``--fresh`` ignores them), then ``docs/iso-EXAMPLE.json`` (all probes), ``docs/iso-EXAMPLE.md``
(tables, 95% t-intervals over seeds) and ``docs/iso-EXAMPLE.png``.

Run: ``nice -n 10 .venv/bin/python bench/iso_accuracy.py --example fashion-lenet300
--seeds 0,1,2 --jobs 3`` (55 minutes wall on the shared 2-core machine, three seeds
in parallel, 158 process-minutes). ``--variants`` runs a subset. ``--report`` only rebuilds the docs from the per-seed files.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import darb_vs_block as dvb  # noqa: E402  (bench/ is not a package)

ROOT = Path(__file__).resolve().parent.parent
DOCS, BUILD = ROOT / "docs", ROOT / "build"
LANES = 8
MAX_LOSS = dvb.MAX_LOSS
#: Accuracies are fractions of 10000 test images: compare with a margin below one image.
_EPS = 1e-6
GRID = (2.0, 128.0)
GRID_STEP = 1.08
#: The classifier's ratio under the ``classifier`` policy (at most the target).
CLASSIFIER_RATIO = 2.0
#: Masked fine-tuning of every probe (the same for every method).
FINETUNE = {"steps": 2, "epochs": 1}
NM_M = 16
BMWM_BLOCK = 128

logger = logging.getLogger("iso_accuracy")


# -- variants -------------------------------------------------------------------------

def geometric_grid(lo: float = GRID[0], hi: float = GRID[1], step: float = GRID_STEP) -> list:
    """Target ratios ``lo · step^i`` up to ``hi`` (rounded to 4 decimals)."""
    n = int(math.floor(math.log(hi / lo) / math.log(step) + 1e-9))
    return [round(lo * step ** i, 4) for i in range(n + 1)]


@dataclass(frozen=True)
class Variant:
    """One method with its options and per-layer policy.

    Parameters
    ----------
    label : str
        Name in tables and plots.
    family : str
        ``darb``, ``block``, ``irregular``, ``nm`` or ``bmwm``.
    policy : str
        ``uniform`` or ``classifier`` (see the module docstring).
    option : object
        ``darb``: the selection rule's name; ``block``: the block shape.
    """

    label: str
    family: str
    policy: str = "classifier"
    option: object = None

    def method(self, ratio: float):
        """The method at target ``ratio``."""
        from darbgen.pruning.masks import DENSITY_RULES
        from darbgen.pruning.methods import BMWM, DARB, NM, Block, Irregular

        if self.family == "darb":
            return DARB(ratio=ratio, rule=DENSITY_RULES[self.option or "nearest"])
        if self.family == "block":
            return Block(ratio=ratio, block_shape=self.option or (4, 4))
        if self.family == "irregular":
            return Irregular(ratio=ratio)
        if self.family == "nm":
            return NM(n=round(NM_M / ratio), m=NM_M)
        if self.family == "bmwm":
            return BMWM(BMWM_BLOCK, keep=round(BMWM_BLOCK / ratio))
        raise ValueError(f"unknown method family {self.family!r}")

    def candidates(self) -> list:
        """Sorted target ratios the search may probe."""
        if self.family == "nm":
            return sorted(NM_M / n for n in range(1, NM_M // 2 + 1))
        if self.family == "bmwm":
            return sorted(BMWM_BLOCK / k for k in range(1, BMWM_BLOCK // 2 + 1))
        return geometric_grid()

    def layer_methods(self, ratio: float, layers: int) -> list:
        """One method per prunable layer at target ``ratio``."""
        if self.policy == "uniform":
            return [self.method(ratio)] * layers
        if self.policy != "classifier":
            raise ValueError(f"unknown per-layer policy {self.policy!r}")
        last = min(ratio, CLASSIFIER_RATIO)
        return [self.method(ratio)] * (layers - 1) + [self.method(last)]


#: In order of importance: a run cut short still has the comparison the claims need.
VARIANTS = (
    Variant("DARB", "darb", option="nearest"),
    Variant("block 4x4", "block", option=(4, 4)),
    Variant("irregular", "irregular"),
    Variant("block 4x4, uniform", "block", "uniform", (4, 4)),
    Variant(f"N:M (M={NM_M})", "nm"),
    Variant(f"BMWM (b={BMWM_BLOCK})", "bmwm"),
    Variant("block 2x2", "block", option=(2, 2)),
    Variant("block 8x8", "block", option=(8, 8)),
    Variant("DARB, uniform", "darb", "uniform", "nearest"),
    Variant("DARB (smaller-block rule)", "darb", option="smaller"),
    Variant("DARB (larger-block rule)", "darb", option="larger"),
)


# -- the search (pure: tests/test_iso_accuracy.py) --------------------------------------

def passes(point: dict, max_loss: float = MAX_LOSS) -> bool:
    """Accuracy loss against dense within ``max_loss``."""
    return point["loss"] <= max_loss + _EPS


def search(candidates, probe, max_loss: float = MAX_LOSS) -> dict:
    """The highest candidate ratio whose probe passes, by bisection over ``candidates``.

    ``probe(ratio)`` returns a point dict with ``loss`` (dense minus pruned accuracy) and
    ``ratio`` (reached). Returns ``best`` and ``failing`` (the passing and the failing
    neighbour's points; None when all fail or all pass), ``bracket`` (their reached ratios'
    quotient) and ``probes`` (every point in order).
    """
    cands = sorted(candidates)
    seen: dict = {}

    def ok(i):
        if i not in seen:
            seen[i] = probe(cands[i])
            seen[i]["target"] = cands[i]
        return passes(seen[i], max_loss)

    out = {"best": None, "failing": None, "bracket": None}
    if not ok(0):
        out["failing"] = seen[0]
    elif ok(len(cands) - 1):
        out["best"] = seen[len(cands) - 1]
    else:
        lo, hi = 0, len(cands) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid)
        out["best"], out["failing"] = seen[lo], seen[hi]
        out["bracket"] = seen[hi]["ratio"] / seen[lo]["ratio"]
    out["probes"] = [seen[i] for i in seen]
    return out


def t_interval(values, confidence: float = 0.95) -> dict:
    """Mean and Student-t interval over seeds (``half`` None for a single value)."""
    from scipy import stats

    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "low": None, "high": None, "half": None, "n": 0}
    mean = float(v.mean())
    if v.size < 2:
        return {"mean": mean, "low": None, "high": None, "half": None, "n": 1}
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1)
                 / math.sqrt(v.size))
    return {"mean": mean, "low": mean - half, "high": mean + half, "half": half,
            "n": int(v.size)}


# -- engine figures ---------------------------------------------------------------------

def memory_bits(layer, lanes: int = LANES) -> dict:
    """Memory of ``layer``'s own smallest engine at ``lanes`` lanes: weight beats and row
    headers over all lanes, and the x copies (one per lane, double-buffered) and y
    buffers (double-buffered)."""
    from darbgen.config import EngineConfig, layout_width

    c = EngineConfig.for_layers([layer], lanes)
    weights = c.lanes * (c.lane_depth * layout_width(c.beat_fields)
                         + c.lane_rows * layout_width(c.header_fields))
    x = c.lanes * 2 * c.x_depth * c.input_width * c.input_bits
    y = 2 * c.lane_rows * c.lanes * c.acc_width
    return {"weights": weights, "x": x, "y": y}


def engine_figures(layers, lanes: int = LANES, block_shape=None) -> dict:
    """Per-layer engine chain figures of an artifact's layers (see the module docstring).
    With ``block_shape`` (block pruning), also the index bits per kept weight a BSR
    layout of those blocks would need (the artifact stores block-pruned rows as CSR)."""
    per = []
    for layer in layers:
        cyc = dvb.layer_cycles(layer, lanes)["cycles"]
        mem = memory_bits(layer, lanes)
        # a convolution runs once per output position (its im2col vectors)
        n = 1 if layer.conv_geometry is None else layer.conv_geometry.positions
        per.append({"layer": layer.name, "nnz": layer.nnz, "positions": n,
                    "cycles_per_vector": cyc, "cycles": cyc * n,
                    "index_bits_per_nnz": layer.index_bits_per_nnz, "memory_bits": mem})
    return {"lanes": lanes,
            "cycles_per_inference": sum(p["cycles"] for p in per),
            "index_bits_per_nnz": dvb.index_bits_per_nnz(layers),
            "bsr_index_bits_per_nnz": None if block_shape is None else
            sum(dvb.bsr_index_bits_per_nnz(l, block_shape) * l.nnz for l in layers)
            / sum(l.nnz for l in layers),
            "weight_memory_bytes": sum(p["memory_bits"]["weights"] for p in per) / 8,
            "buffer_memory_bytes": sum(p["memory_bits"]["x"] + p["memory_bits"]["y"]
                                       for p in per) / 8,
            "layers": per}


# -- running ----------------------------------------------------------------------------

def dense_model(example: str, seed: int, cache: Path):
    """The dense model of ``seed`` (trained with the example's schedule, or read from
    ``cache``, our own file, loaded weights-only): ``(state, accuracy, data)``."""
    import torch

    from darbgen.pruning.examples import SCHEDULES, example_data

    path = cache / f"{example}-seed{seed}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        dvb.seed_all(seed)
        return saved["state"], float(saved["accuracy"]), example_data(example, seed)
    state, acc, data = dvb.train_dense(seed, SCHEDULES[example]["epochs"], example)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "accuracy": torch.tensor(acc)}, path)
    return state, acc, data


def run_seed(example: str, seed: int, variants, finetune=FINETUNE, cache=BUILD / "iso-cache",
             done: dict | None = None, save=None) -> dict:
    """Every variant's search on one seed; ``done`` holds variants an interrupted run
    finished (skipped), ``save(result)`` is called after each variant."""
    from darbgen.pruning.methods import prunable_layers
    from darbgen.pruning.examples import EXAMPLES

    start = time.monotonic()
    state, acc_dense, data = dense_model(example, seed, cache)
    n_layers = len(list(prunable_layers(EXAMPLES[example](seed=seed))))
    logger.info("%s seed %d: dense accuracy %.4f (%.0f s)", example, seed, acc_dense,
                time.monotonic() - start)
    out = {"seed": seed, "accuracy_dense": acc_dense, "variants": dict(done or {}),
           "seconds": 0.0}
    # Control: the dense model through the same fine-tuning with nothing pruned (ratio 1),
    # to show how much of a probe's accuracy is fine-tuning rather than pruning.
    from darbgen.pruning.methods import Irregular
    control = dvb.prune_point(Irregular(ratio=1), state, data, seed=seed,
                              finetune_epochs=finetune["epochs"], steps=finetune["steps"],
                              example=example)
    out["accuracy_dense_finetuned_int8"] = control["accuracy_int8"]
    logger.info("seed %d control (dense, same fine-tuning, int8): %.4f", seed,
                control["accuracy_int8"])
    for v in variants:
        if v.label in out["variants"]:
            continue
        def probe(ratio, v=v):
            t = time.monotonic()
            dvb.seed_all(seed)
            r = dvb.prune_point(v.layer_methods(ratio, n_layers), state, data, seed=seed,
                                finetune_epochs=finetune["epochs"], steps=finetune["steps"],
                                example=example)
            point = {"ratio": dvb.achieved_ratio(r["layers"]),
                     "accuracy_int8": r["accuracy_int8"],
                     "accuracy_float": r["accuracy_pruned_float"],
                     "loss": acc_dense - r["accuracy_int8"],
                     "layer_ratios": [l.rows * l.input_width / l.nnz for l in r["layers"]],
                     "_layers": r["layers"]}
            logger.info("seed %d %-26s target %7.3f reached %7.3f int8 %.4f loss %+.2f pt "
                        "%s (%.0f s)", seed, v.label, ratio, point["ratio"],
                        point["accuracy_int8"], 100 * point["loss"],
                        "pass" if passes(point) else "FAIL", time.monotonic() - t)
            return point

        result = search(v.candidates(), probe)
        best = result["best"]
        if best is not None:
            result["engine"] = engine_figures(best["_layers"], block_shape=(
                v.option or (4, 4)) if v.family == "block" else None)
        for p in result["probes"]:
            del p["_layers"]
        out["variants"][v.label] = result
        out["seconds"] = time.monotonic() - start
        if save is not None:
            save(out)
        b = result["best"]
        logger.info("seed %d %-26s best %s, failing %s, bracket %s", seed, v.label,
                    f"{b['ratio']:.2f}x" if b else "none",
                    f"{result['failing']['ratio']:.2f}x" if result["failing"] else "none",
                    f"{result['bracket']:.3f}" if result["bracket"] else "-")
    out["complete"] = True
    return out


# -- report -----------------------------------------------------------------------------

def summarize(seeds: list, variants=VARIANTS, darb: str = "DARB") -> dict:
    """Per variant: best reached ratio per seed and its t-interval; brackets; DARB's
    ratio over each block variant per seed and over the best block variant per seed."""
    labels = [v.label for v in variants if all(v.label in s["variants"] for s in seeds)]
    table = {}
    for label in labels:
        runs = [s["variants"][label] for s in seeds]
        best = [r["best"]["ratio"] if r["best"] else None for r in runs]
        table[label] = {
            "ratio_per_seed": best, "ratio": t_interval(best),
            "failing_per_seed": [r["failing"]["ratio"] if r["failing"] else None for r in runs],
            "bracket_per_seed": [r["bracket"] for r in runs],
            "loss_per_seed": [r["best"]["loss"] if r["best"] else None for r in runs],
            "probes": sum(len(r["probes"]) for r in runs),
            "engine_seed0": runs[0].get("engine"),
        }
    blocks = [v.label for v in variants if v.family == "block" and v.label in table]
    over = {}
    if darb in table:
        for b in blocks:
            q = [d / k if d and k else None for d, k in zip(table[darb]["ratio_per_seed"],
                                                             table[b]["ratio_per_seed"])]
            over[b] = {"per_seed": q, **t_interval(q)}
        best_block = [max((table[b]["ratio_per_seed"][i] or 0) for b in blocks) or None
                      for i in range(len(seeds))]
        q = [d / k if d and k else None for d, k in zip(table[darb]["ratio_per_seed"],
                                                         best_block)]
        over["best block variant"] = {"per_seed": q, **t_interval(q),
                                      "block_per_seed": best_block}
    return {"variants": table, "darb_over_block": over,
            "dense": t_interval([s["accuracy_dense"] for s in seeds]),
            "dense_finetuned_int8": t_interval([s.get("accuracy_dense_finetuned_int8")
                                                for s in seeds])}


def _ci(t, fmt="{:.2f}") -> str:
    if t["mean"] is None:
        return "none"
    if t["half"] is None:
        return fmt.format(t["mean"])
    return f"{fmt.format(t['mean'])} ± {fmt.format(t['half'])}"


def markdown(example: str, seeds: list, summary: dict, meta: dict) -> str:
    """The tables of ``docs/iso-EXAMPLE.md``."""
    n = len(seeds)
    lines = [f"# Iso-accuracy pruning ratios on {example} (generated)", "",
             f"Generated by `bench/iso_accuracy.py` ({meta['seconds'] / 60:.0f} min summed "
             f"over the seeds, which may run in parallel; seeds "
             f"{', '.join(str(s['seed']) for s in seeds)}, torch threads 1). Dense "
             f"accuracy {_ci(summary['dense'], '{:.4f}')} (95% t-interval over {n} seeds); "
             f"the control (dense through the probes' fine-tuning, int8 weights, nothing "
             f"pruned) {_ci(summary['dense_finetuned_int8'], '{:.4f}')}. "
             f"A point passes at most {100 * MAX_LOSS:g} point below its seed's dense model "
             f"(int8 weights). Fine-tuning per probe: {meta['finetune']['steps']} progressive "
             f"steps of {meta['finetune']['epochs']} epoch(s). Classifier policy: the last "
             f"layer at min(R, {CLASSIFIER_RATIO:g}).", "",
             "## Highest pruning ratio within 1 point of dense", "",
             "Ratios are reached ratios (dense weights / kept, all layers). `±` is the 95% "
             "t-interval half-width over seeds; the bracket is the failing neighbour's "
             "ratio over the passing one (the search's resolution).", "",
             "`none`: even the lowest candidate (2×) loses more than 1 point; the mean and "
             "interval are over the other seeds.", "",
             "| method | policy | ratio (mean ± CI) | per seed | bracket per seed | "
             "probes |", "| --- | --- | --- | --- | --- | --- |"]
    policies = {v.label: v.policy for v in VARIANTS}
    for label, r in summary["variants"].items():
        per = ", ".join(f"{x:.2f}" if x else "none" for x in r["ratio_per_seed"])
        br = ", ".join(f"{x:.3f}" if x else "-" for x in r["bracket_per_seed"])
        lines.append(f"| {label} | {policies.get(label, '?')} | {_ci(r['ratio'])} | {per} | "
                     f"{br} | {r['probes']} |")
    lines += ["", "## DARB over block pruning (same seed, iso-accuracy)", "",
              "| DARB / … | mean ± CI | per seed |", "| --- | --- | --- |"]
    for label, r in summary["darb_over_block"].items():
        per = ", ".join(f"{x:.2f}" if x else "none" for x in r["per_seed"])
        lines.append(f"| {label} | {_ci(r)} | {per} |")
    lines += ["", f"## Engine figures of each best point (seed {seeds[0]['seed']}, a chain "
              f"of per-layer engines, {LANES} lanes)", "",
              "| method | ratio | cycles / inference | index bits / kept weight (BSR) | "
              "weight memory (bytes) | x/y buffers (bytes) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for label, r in summary["variants"].items():
        e = r["engine_seed0"]
        if e is None:
            lines.append(f"| {label} | none | | | | |")
            continue
        bsr = "" if e.get("bsr_index_bits_per_nnz") is None else \
            f" ({e['bsr_index_bits_per_nnz']:.2f})"
        lines.append(f"| {label} | {r['ratio_per_seed'][0]:.2f} | {e['cycles_per_inference']} "
                     f"| {e['index_bits_per_nnz']:.2f}{bsr} | {e['weight_memory_bytes']:.0f} | "
                     f"{e['buffer_memory_bytes']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(example: str, seeds: list, summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    labels = list(summary["variants"])
    colors = plt.cm.tab20.colors[::2] + plt.cm.tab20.colors[1::2]   # 20 distinct
    for i, label in enumerate(labels):
        c = colors[i % len(colors)]
        for s in seeds:
            pts = sorted(s["variants"][label]["probes"], key=lambda p: p["ratio"])
            ax1.plot([p["ratio"] for p in pts], [100 * p["loss"] for p in pts], ".-", color=c,
                     alpha=0.5, label=label if s is seeds[0] else None)
        r = summary["variants"][label]["ratio"]
        if r["mean"] is not None:
            err = [[r["half"] or 0], [r["half"] or 0]]
            ax2.barh(i, r["mean"], xerr=err, color=c, capsize=3)
            for x in summary["variants"][label]["ratio_per_seed"]:
                if x:
                    ax2.plot(x, i, "k.", ms=5)
    ax1.axhline(100 * MAX_LOSS, color="gray", ls="--", lw=1, label="1 point")
    ax1.set(xscale="log", xlabel="pruning ratio reached", ylabel="accuracy loss vs dense (points)",
            title="every probe of the searches (all seeds)")
    ax1.set_ylim(-1, 6)
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_yticks(range(len(labels)), labels, fontsize=8)
    ax2.invert_yaxis()
    ax2.set(xscale="log", xlabel="highest ratio within 1 point (mean, 95% CI; dots = seeds)",
            title="iso-accuracy pruning ratio")
    fig.suptitle(f"{example}: iso-accuracy search, {len(seeds)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(example: str, seeds: list, out_dir: Path, meta: dict) -> dict:
    summary = summarize(seeds)
    stem = out_dir / f"iso-{example}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"example": example, **meta, "lanes": LANES, "max_loss": MAX_LOSS,
         "grid": {"range": GRID, "step": GRID_STEP}, "classifier_ratio": CLASSIFIER_RATIO,
         "nm_m": NM_M, "bmwm_block": BMWM_BLOCK, "summary": summary, "seeds": seeds},
        indent=1, default=str))
    stem.with_suffix(".md").write_text(markdown(example, seeds, summary, meta))
    plot(example, seeds, summary, stem.with_suffix(".png"))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--example", default="fashion-lenet300", metavar="NAME",
                        help="built-in example (default %(default)s)")
    parser.add_argument("--seeds", default="0,1,2", metavar="S,S,...",
                        help="training seeds (default %(default)s)")
    parser.add_argument("--variants", default=None, metavar="LABEL;LABEL",
                        help="only these variants (labels as in the table, ';'-separated)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="seeds run in N processes at once (default %(default)s)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore per-seed results from an earlier run")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild the docs from the per-seed results")
    parser.add_argument("-o", "--out-dir", default=str(DOCS), metavar="DIR",
                        help="where iso-EXAMPLE.json/.md/.png go (default docs/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = VARIANTS if args.variants is None else \
        tuple(v for v in VARIANTS if v.label in args.variants.split(";"))
    raw = BUILD / "iso" / args.example
    raw.mkdir(parents=True, exist_ok=True)
    todo = [s for s in seeds if args.fresh or not _load(raw, s).get("complete")]
    if not args.report and todo:
        import torch
        torch.set_num_threads(1)   # two threads ran 3x slower on the shared machine
        if args.jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(args.jobs) as pool:
                futures = {s: pool.submit(_run_and_save, args.example, s, variants, raw,
                                          args.fresh) for s in todo}
                for f in futures.values():
                    f.result()
        else:
            for s in todo:
                _run_and_save(args.example, s, variants, raw, args.fresh)
    results = [r for r in (_load(raw, s) for s in seeds) if r]
    if not results:
        print("no per-seed results", file=sys.stderr)
        return 1
    meta = {"seconds": sum(r["seconds"] for r in results), "finetune": FINETUNE}
    summary = report(args.example, results, Path(args.out_dir), meta)
    for label, r in summary["variants"].items():
        print(f"{label:28} {_ci(r['ratio']):>16}  per seed "
              + ", ".join(f"{x:.2f}" if x else "none" for x in r["ratio_per_seed"]))
    for label, r in summary["darb_over_block"].items():
        print(f"DARB / {label:21} {_ci(r):>16}")
    print(f"wrote {Path(args.out_dir) / f'iso-{args.example}'}.json, .md and .png")
    return 0


def _load(raw: Path, seed: int) -> dict:
    """The per-seed results of an earlier run ({} when there are none)."""
    path = raw / f"seed{seed}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_and_save(example, seed, variants, raw: Path, fresh: bool = False) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    path = raw / f"seed{seed}.json"
    done = {} if fresh else _load(raw, seed).get("variants", {})

    def save(result):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        tmp.replace(path)

    save(run_seed(example, seed, variants, done=done, save=save))


if __name__ == "__main__":
    sys.exit(main())
