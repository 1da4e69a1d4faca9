"""The seed spread of the Fashion-MNIST studies of issue 17: BLK-REW and Anwar et al. on
fashion-lenet5, SAP and the PQ Index on fashion-lenet300.

Reads what ``bench/structured_bench.py --example fashion-lenet5 [--seed N]`` and
``bench/sap_bench.py --example fashion-lenet300 [--seed N]`` wrote for each seed (seed 0's
unsuffixed files, plus ``-small-lambda`` for seed 0's λ 1e-6 and 1e-5; ``-seedN`` for the
others, plus ``-grid-seedN`` for their other λ) and writes per-seed values with their mean and 95 % Student-t interval to
``docs/fashion-seeds.md`` and ``docs/fashion-seeds.json``, with one plot per study
(``docs/*-seeds.png``). It trains nothing; a seed whose files are missing is left out and
the tables say which seeds they hold.

Run: ``.venv/bin/python bench/fashion_seeds.py`` (seconds).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(_BENCH))
from iso_accuracy import t_interval  # noqa: E402  (bench/ is not a package)

DOCS = _BENCH.parent / "docs"
STRUCTURED, SAP = "structured-bench-fashion-lenet5", "sap-bench-fashion-lenet300"
#: The BLK-REW arms run on every seed: each (penalty, optimizer)'s best λ on seed 0.
ARMS = [("reweighted", "adam", 1e-6), ("reweighted", "sgd", 1e-5),
        ("group_lasso", "adam", 1e-4), ("group_lasso", "sgd", 1e-6)]
#: The λ over which each (penalty, optimizer) takes its best where a seed ran them all.
GRID = (1e-6, 1e-5, 1e-4)
_GRID = "λ of " + ", ".join(f"{lam:g}" for lam in GRID)
SAP_RUNS = ("SAP(0.5,1)", "SAP(1,2)", "LT(0.2)")


def load_seeds(stem: str, docs: Path = DOCS, extra: tuple = ()) -> dict:
    """``{seed: result}`` for each seed whose json exists; each seed's BLK-REW rows also
    come from ``stem-TAG[-seedN].json`` for each TAG in ``extra`` (other λ, same seed)."""
    runs = {}
    for path in [docs / f"{stem}.json", *sorted(docs.glob(f"{stem}-seed*.json"))]:
        if path.exists():
            out = json.loads(path.read_text())
            runs[out["seed"]] = out
    for seed, out in runs.items():
        for tag in extra:
            path = docs / (f"{stem}-{tag}-seed{seed}.json" if seed else f"{stem}-{tag}.json")
            if path.exists():
                out["blkrew"] += json.loads(path.read_text())["blkrew"]
    return dict(sorted(runs.items()))


def spread(per_seed: dict) -> dict:
    """Per-seed values with their mean and 95 % t-interval."""
    return {"per_seed": per_seed, **t_interval(list(per_seed.values()))}


def blkrew(runs: dict) -> dict:
    """Accuracy after retraining of each arm at 8x, per seed; reweighted minus group lasso
    per optimizer and best against best."""
    def acc(out, kind, opt, lam):
        return next((r["accuracy"] for r in out["blkrew"] if (r["kind"], r["optimizer"]) ==
                     (kind, opt) and r["lambda"] == lam and r["ratio"] == 8), None)

    arms = {f"{kind} {opt} λ={lam:g}": {s: acc(out, kind, opt, lam) for s, out in runs.items()}
            for kind, opt, lam in ARMS}
    seeds = [s for s in runs if all(v[s] is not None for v in arms.values())]
    by = {(k.split()[0], k.split()[1]): v for k, v in arms.items()}
    diffs = {f"reweighted - group lasso, {opt}":
             {s: by["reweighted", opt][s] - by["group_lasso", opt][s] for s in seeds}
             for opt in ("adam", "sgd")}
    best = {kind: {s: max(by[kind, o][s] for o in ("adam", "sgd")) for s in seeds}
            for kind in ("reweighted", "group_lasso")}
    diffs["best reweighted - best group lasso"] = {
        s: best["reweighted"][s] - best["group_lasso"][s] for s in seeds}
    # each (penalty, optimizer) at its best λ of GRID, on the seeds that ran all of GRID
    tuned = {(kind, opt): {s: max(acc(out, kind, opt, lam) for lam in GRID)
                           for s, out in runs.items()
                           if all(acc(out, kind, opt, lam) is not None for lam in GRID)}
             for kind in ("reweighted", "group_lasso") for opt in ("adam", "sgd")}
    tuned_seeds = [s for s in runs if all(s in v for v in tuned.values())]
    for opt in ("adam", "sgd"):
        diffs[f"reweighted - group lasso, {opt}, each at its best {_GRID}"] = {
            s: tuned["reweighted", opt][s] - tuned["group_lasso", opt][s] for s in tuned_seeds}
    diffs["best reweighted - best group lasso, λ and optimizer tuned per seed"] = {
        s: max(tuned["reweighted", o][s] for o in ("adam", "sgd"))
        - max(tuned["group_lasso", o][s] for o in ("adam", "sgd")) for s in tuned_seeds}
    return {"arms": {k: spread({s: a for s, a in v.items() if a is not None})
                     for k, v in arms.items()},
            "tuned": {f"{kind} {opt}, best {_GRID}": spread(v)
                      for (kind, opt), v in tuned.items()},
            "differences": {k: spread(v) for k, v in diffs.items()},
            "dense": spread({s: out["accuracy_dense"] for s, out in runs.items()})}


def anwar(runs: dict) -> dict:
    """Per granularity and selector: conv weights pruned, accuracy right after pruning
    conv2 and after retraining, points lost against the seed's dense model; the particle
    filter minus magnitude."""
    rows = {}
    for s, out in runs.items():
        for r in out["structured"]:
            key = f"{r['granularity']} {r['setting']} {r['selector']}"
            for field, value in (("conv_pruned", r["conv_pruned"]),
                                 ("accuracy_pruned", r["layers"][-1]["accuracy_pruned"]),
                                 ("accuracy", r["accuracy"]),
                                 ("loss_points", 100 * (out["accuracy_dense"] - r["accuracy"]))):
                rows.setdefault(key, {}).setdefault(field, {})[s] = value
    diffs = {}
    for key in rows:
        if key.endswith(" particle"):
            other = rows.get(key.replace(" particle", " magnitude"))
            for field in ("accuracy_pruned", "accuracy"):
                mine = rows[key][field]
                diffs.setdefault(key.replace(" particle", ""), {})[field] = spread(
                    {s: mine[s] - other[field][s] for s in mine if s in other[field]})
    word = {}
    for s, out in runs.items():
        for w in out["word_length"]:
            word.setdefault(w["bits"], {})[s] = w["accuracy"]
    return {"rows": {k: {f: spread(v) for f, v in fields.items()} for k, fields in rows.items()},
            "particle_minus_magnitude": diffs,
            "word_length": {bits: spread(v) for bits, v in word.items()},
            "seeds": [s for s, out in runs.items() if out["structured"]]}


def sap_figures(log: list) -> dict:
    """The figures of one SAP/LT run's per-iteration log."""
    low = min(log, key=lambda r: r["pqi_0.5_1"])
    end = log[-1]
    return {"reference": log[0]["accuracy"], "remaining_end": end["remaining"],
            "accuracy_end": end["accuracy"], "pqi_start": log[0]["pqi_0.5_1"],
            "pqi_min": low["pqi_0.5_1"], "pqi_min_iteration": low["iteration"],
            "pqi_min_remaining": low["remaining"], "pqi_end": end["pqi_0.5_1"],
            "rise": end["pqi_0.5_1"] / low["pqi_0.5_1"],
            "loss_points_end": 100 * (log[0]["accuracy"] - end["accuracy"])}


def sap(runs: dict) -> dict:
    """Per run: the figures of :func:`sap_figures` per seed; SAP-driven DARB."""
    per = {}
    for s, out in runs.items():
        for label, log in out["runs"].items():
            for field, value in sap_figures(log).items():
                per.setdefault(label, {}).setdefault(field, {})[s] = value
        d = out["sap_darb"]
        for field in ("pruning_ratio", "accuracy_before_finetune", "accuracy"):
            per.setdefault("SAP-driven DARB", {}).setdefault(field, {})[s] = d[field]
    return {label: {f: spread(v) for f, v in fields.items()} for label, fields in per.items()}


# -- report -------------------------------------------------------------------------

def fmt(t: dict, scale: float = 1.0, digits: int = 4) -> str:
    """``mean ± half (v0, v1, v2)``, the interval only with two seeds or more."""
    vals = ", ".join(f"{scale * v:.{digits}f}" for v in t["per_seed"].values())
    if t["mean"] is None:
        return "none"
    mean = f"{scale * t['mean']:.{digits}f}"
    half = f" ± {scale * t['half']:.{digits}f}" if t["half"] is not None else ""
    return f"{mean}{half} ({vals})"


def markdown(summary: dict) -> str:
    b, a, p = summary["blkrew"], summary["anwar"], summary["sap"]
    seeds = lambda t: ", ".join(map(str, t["per_seed"]))  # noqa: E731
    lines = ["# Seed spread of the Fashion-MNIST studies (generated by bench/fashion_seeds.py)",
             "", "Each cell: mean ± 95 % t-interval half-width (per-seed values in seed "
             "order). Accuracy as a fraction of the 10 000 test images; differences in "
             "points.", "",
             f"## BLK-REW at 8x, fashion-lenet5 (seeds {seeds(b['dense'])})", "",
             f"Dense: {fmt(b['dense'])}.", "",
             "| arm (seed 0's best λ) | seeds | accuracy after retraining |", "|---|---|---|"]
    lines += [f"| {k} | {seeds(t)} | {fmt(t)} |" for k, t in b["arms"].items()]
    lines += [f"| {k} | {seeds(t)} | {fmt(t)} |" for k, t in b["tuned"].items()]
    lines += ["", "| difference (points) | seeds | mean ± CI (per seed) |", "|---|---|---|"]
    lines += [f"| {k} | {seeds(t)} | {fmt(t, 100, 2)} |" for k, t in b["differences"].items()]
    lines += ["", f"## Anwar et al., fashion-lenet5 (seeds {', '.join(map(str, a['seeds']))})",
              "", "| granularity, setting, selector | conv pruned (%) | accuracy after "
              "pruning conv2 | after retraining | loss vs dense (points) |",
              "|---|---|---|---|---|"]
    for k, r in a["rows"].items():
        lines.append(f"| {k} | {fmt(r['conv_pruned'], 100, 1)} | {fmt(r['accuracy_pruned'])} "
                     f"| {fmt(r['accuracy'])} | {fmt(r['loss_points'], 1, 2)} |")
    lines += ["", "| particle filter - magnitude (points) | right after pruning conv2 | "
              "after retraining |", "|---|---|---|"]
    lines += [f"| {k} | {fmt(d['accuracy_pruned'], 100, 2)} | {fmt(d['accuracy'], 100, 2)} |"
              for k, d in a["particle_minus_magnitude"].items()]
    lines += ["", "Word length (kernel-pruned, particle filter, no retraining): " +
              "; ".join(f"{bits} bits {fmt(t)}" for bits, t in a["word_length"].items()), ""]
    lines += [f"## SAP and the PQ Index, fashion-lenet300 "
              f"(seeds {seeds(p['LT(0.2)']['reference'])})", "",
              "| run | 1-epoch reference | remaining after 20 it. (%) | accuracy then | "
              "PQI(0.5,1) at it. 0 | PQI minimum | at iteration | remaining there (%) | "
              "PQI at the end | end / minimum |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label in SAP_RUNS:
        r = p[label]
        lines.append(
            f"| {label} | {fmt(r['reference'])} | {fmt(r['remaining_end'], 100, 1)} | "
            f"{fmt(r['accuracy_end'])} | {fmt(r['pqi_start'])} | {fmt(r['pqi_min'])} | "
            f"{fmt(r['pqi_min_iteration'], 1, 0)} | {fmt(r['pqi_min_remaining'], 100, 1)} | "
            f"{fmt(r['pqi_end'])} | {fmt(r['rise'], 1, 2)} |")
    d = p["SAP-driven DARB"]
    lines += ["", f"SAP-driven DARB (SAP(0.5,1)'s final budgets): ratio "
              f"{fmt(d['pruning_ratio'], 1, 2)}, accuracy {fmt(d['accuracy_before_finetune'])} "
              f"right after the mask change, {fmt(d['accuracy'])} after one fine-tuning epoch.",
              ""]
    return "\n".join(lines)


def plot(summary: dict, sap_runs: dict, docs: Path = DOCS) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def dots(ax, x, t, scale=100.0, color="C0", label=None):
        vals = list(t["per_seed"].values())
        ax.scatter([x] * len(vals), [scale * v for v in vals], color=color, s=14, alpha=0.6)
        if t["mean"] is not None:
            ax.errorbar(x, scale * t["mean"], yerr=scale * (t["half"] or 0), fmt="_",
                        color=color, ms=16, capsize=4, label=label)

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (k, t) in enumerate(summary["blkrew"]["arms"].items()):
        dots(ax, i, t, color="C0" if k.startswith("reweighted") else "C1")
    ax.axhline(100 * summary["blkrew"]["dense"]["mean"], color="gray", lw=0.8, label="dense")
    ax.set_xticks(range(len(ARMS)), list(summary["blkrew"]["arms"]), fontsize=8)
    ax.set(ylabel="test accuracy (%) after retraining",
           title="BLK-REW vs group lasso at 8x, fashion-lenet5: seeds and 95% CI")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "blkrew-fashion-lenet5-seeds.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    rows = summary["anwar"]["rows"]
    grans = list(dict.fromkeys(k.rsplit(" ", 1)[0] for k in rows))
    for ax, field, title in ((axes[0], "accuracy_pruned", "right after pruning conv2"),
                             (axes[1], "accuracy", "after retraining")):
        for j, (selector, color) in enumerate((("particle", "C0"), ("magnitude", "C1"))):
            for i, g in enumerate(grans):
                key = f"{g} {selector}"
                if key in rows:
                    dots(ax, i + 0.15 * (2 * j - 1), rows[key][field], color=color,
                         label=selector if i == 0 else None)
        ax.set_xticks(range(len(grans)), grans, fontsize=8)
        ax.set(ylabel="test accuracy (%)", title=f"Anwar et al., fashion-lenet5: {title}")
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 100)    # a 3-seed interval can reach past the possible
    fig.tight_layout()
    fig.savefig(docs / "structured-fashion-lenet5-seeds.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    styles = ["-", "--", ":", "-."]
    for i, (s, out) in enumerate(sap_runs.items()):
        for c, label in enumerate(SAP_RUNS):
            log = out["runs"][label]
            kw = {"color": f"C{c}", "ls": styles[i % 4], "marker": ".",
                  "label": f"{label} seed {s}"}
            axes[0].plot([r["iteration"] for r in log], [r["pqi_0.5_1"] for r in log], **kw)
            axes[1].plot([100 * r["remaining"] for r in log],
                         [100 * r["accuracy"] for r in log], **kw)
    axes[0].set(title="PQ Index (p=0.5, q=1) of the retrained weights", xlabel="iteration")
    axes[1].set(title="test accuracy (%) vs weights remaining (%)", xlabel="remaining (%)",
                xscale="log")
    axes[1].invert_xaxis()
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle("SAP vs LT(0.2), neuron scope, LeNet-300-100 on Fashion-MNIST, per seed")
    fig.tight_layout()
    fig.savefig(docs / "sap-fashion-lenet300-seeds.png", dpi=110)


def main(argv=None) -> int:
    structured = load_seeds(STRUCTURED, extra=("small-lambda", "grid"))
    sap_runs = load_seeds(SAP)
    summary = {"blkrew": blkrew(structured), "anwar": anwar(structured), "sap": sap(sap_runs)}
    (DOCS / "fashion-seeds.json").write_text(json.dumps(summary, indent=1))
    (DOCS / "fashion-seeds.md").write_text(markdown(summary))
    plot(summary, sap_runs)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
