"""The iso-accuracy winners on the layer-sequenced processor, in Verilator.

``bench/iso_accuracy.py`` finds, per method, the highest ratio within 1 point of dense
and gives its engine figures from the chain's cycle model. This bench rebuilds each
chosen variant's best point of one seed (same dense model, same target ratio and
per-layer policy, same fine-tuning, so the same artifact), then runs the first
``--images`` test images of all of them on **one** processor build that holds every
network (only the load words change between them), checks every logit against the
golden integer model, and prints cycles per inference, index bits per kept weight and
weight memory. Figures go to ``docs/iso-processor.json``.

The best point (target ratio, reached ratio, int8 accuracy) is read from the search's raw
file ``build/iso/EXAMPLE/seedS.json``; when that is gone, from the committed report
``docs/iso-EXAMPLE.json``, which keeps every seed's best point. Either way the rebuilt
artifact's int8 accuracy must equal the recorded one, or the bench stops. The dense model
is retrained (and cached under ``build/iso-cache/``) when no cache exists.

    python bench/iso_processor.py [--example fashion-lenet300] [--seed 0] [--lanes 8]
                                  [--variants "DARB;irregular;..."]   (default: all winners)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from _record import ROOT, commit, record, uncommitted_changes
import darb_vs_block as dvb
import iso_accuracy as iso

from darbgen.config import layout_width
from darbgen.format import Artifact
from darbgen.network import plan
from darbgen.processor import ProcessorConfig
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_processor

logger = logging.getLogger("iso_processor")


def search_results(example: str, seed: int) -> dict:
    """``seed``'s search results (``variants`` with each ``best`` point): the raw file
    when it exists, else the seed's entry in the committed ``docs/iso-EXAMPLE.json``."""
    raw = iso.BUILD / "iso" / example / f"seed{seed}.json"
    if raw.exists():
        return json.loads(raw.read_text())
    report = iso.DOCS / f"iso-{example}.json"
    if not report.exists():
        raise SystemExit(f"neither {raw} nor {report} exists: run bench/iso_accuracy.py")
    for entry in json.loads(report.read_text())["seeds"]:
        if entry["seed"] == seed:
            logger.info("%s is gone: best points from %s", raw, report)
            return entry
    raise SystemExit(f"{report} has no seed {seed}")


def winner(example: str, seed: int, variant: iso.Variant, best: dict) -> tuple:
    """The artifact of ``variant``'s ``best`` point on ``seed``, its rebuilt int8 accuracy
    and the test images."""
    from darbgen.pruning.examples import EXAMPLES
    from darbgen.pruning.methods import prunable_layers

    state, _, data = iso.dense_model(example, seed, iso.BUILD / "iso-cache")
    n_layers = len(list(prunable_layers(EXAMPLES[example](seed=seed))))
    dvb.seed_all(seed)
    r = dvb.prune_point(variant.layer_methods(best["target"], n_layers), state, data,
                        seed=seed, finetune_epochs=iso.FINETUNE["epochs"],
                        steps=iso.FINETUNE["steps"], example=example)
    x = data.x_test.reshape(len(data.x_test), -1).numpy()
    return Artifact(r["layers"], {"source": example}), r["accuracy_int8"], x


def own_beat_bits(net, lanes: int) -> int:
    """Bits of one weight beat on the smallest processor for ``net`` alone."""
    return layout_width(ProcessorConfig.for_plans([net], lanes).engine.beat_fields)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--example", default="fashion-lenet300")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lanes", type=int, default=8)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--variants", default=None, metavar="LABEL;LABEL",
                   help="';'-separated labels (default: every variant with a winner)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "iso-processor.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch
    torch.set_num_threads(1)          # as iso_accuracy.py ran: the same float sums
    found = search_results(args.example, args.seed)["variants"]
    variants = {v.label: v for v in iso.VARIANTS}
    labels = [v.label for v in iso.VARIANTS if found.get(v.label, {}).get("best")] \
        if args.variants is None else args.variants.split(";")
    unknown = [label for label in labels if label not in variants]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from "
                         f"{'; '.join(variants)}")
    nets, rows = {}, []
    for label in labels:
        best = found[label]["best"]
        if best is None:
            raise SystemExit(f"{label}: no passing point on seed {args.seed}")
        t = time.monotonic()
        artifact, acc, x = winner(args.example, args.seed, variants[label], best)
        if abs(acc - best["accuracy_int8"]) > 1e-9:
            raise SystemExit(f"{label}: rebuilt int8 accuracy {acc:.4f}, the search recorded "
                             f"{best['accuracy_int8']:.4f}: not the same artifact")
        nets[label] = net = plan(artifact)
        logger.info("%s: %.2fx rebuilt (int8 %.4f, %.0f s)", label, best["ratio"], acc,
                    time.monotonic() - t)
        rows.append({"variant": label, "ratio": best["ratio"], "accuracy_int8": acc,
                     "index_bits_per_nnz": dvb.index_bits_per_nnz(artifact.layers),
                     "nnz": sum(l.nnz for l in artifact.layers), "_x": x})
    config = ProcessorConfig.for_plans(nets.values(), args.lanes)
    for row in rows:
        net = nets[row["variant"]]
        xq = net.quantize_input(row.pop("_x")[:args.images])
        t = time.monotonic()
        run = simulate_processor(net, xq, config)
        exact = bool(np.array_equal(run.logits, network_ref(net, xq)))
        if not exact:
            raise SystemExit(f"{row['variant']}: logits differ from the golden model")
        row.update({"images": len(xq), "cycles_per_inference": run.cycles / len(xq),
                    "exact": exact, "seconds": time.monotonic() - t,
                    # one beat (value, in-block offset) per kept weight, as wide as a
                    # processor built for this network alone needs
                    "beat_bits": own_beat_bits(net, args.lanes),
                    "weight_memory_bytes": row["nnz"] * own_beat_bits(net, args.lanes) / 8})
        print(f"{row['variant']:>10}: {row['ratio']:5.2f}x, {row['cycles_per_inference']:7.0f} "
              f"cycles per inference on {args.lanes} lanes, {row['index_bits_per_nnz']:.2f} "
              f"index bits per kept weight, {row['nnz']} kept weights "
              f"({row['weight_memory_bytes'] / 1024:.1f} KiB of {row['beat_bits']}-bit beats), every "
              "logit exact",
              flush=True)
    record(args.example, {"commit": commit() + ("+" if uncommitted_changes() else ""),
                          "seed": args.seed, "lanes": args.lanes,
                          "processor": {"lane_depth": config.engine.lane_depth,
                                        "beat_bits": layout_width(config.engine.beat_fields)},
                          "variants": rows}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
