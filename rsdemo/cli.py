"""`rsdemo` command line. Each command is a thin wrapper over the Python API; errors print one line, exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

DATA_HELP = ("dataset: synthetic[:N[:SEED]] | rsitmd:FILE | rsicd:FILE | sydney:FILE | ucm:DIR | coco:FILE_OR_DIR | "
             "precomp:DIR | folder:DIR_OR_CSV | a bare path (format detected)")


def _make_synthetic(a) -> int:
    from .data.synthetic import export

    t = time.perf_counter()
    out = export(a.out, n=a.n, seed=a.seed, size=a.size, progress=not a.quiet)
    dt = time.perf_counter() - t
    print(f"wrote {a.n} images to {out} in {dt:.1f} s ({a.n / dt:.0f} images/s); "
          f"annotations: {out / 'dataset_synthetic.json'}")
    return 0


def _data_report(a) -> int:
    from .data.formats import open_dataset
    from .data.report import data_report, format_report

    ds = open_dataset(a.data, images=a.images)
    rep = data_report(ds, check_images=not a.no_images)
    print(json.dumps(rep, indent=1, default=str) if a.json else format_report(rep))
    return 0


def _eval(a) -> int:
    import numpy as np

    from .baselines import BASELINES
    from .data.formats import open_dataset
    from .evaluate import format_recall, recall

    ds = open_dataset(a.data, images=a.images)
    if a.split != "all":
        ds = ds.split(*a.split.split(","))
    if not len(ds):
        raise ValueError(f"split {a.split!r} of {a.data} holds no images (splits: {ds.split_counts() or 'none'})")
    texts, owner = ds.captions()
    if a.scores:
        sim = np.load(a.scores)
        what = a.scores
    else:
        sim = BASELINES[a.baseline](ds, seed=a.seed)
        what = f"baseline {a.baseline}"
    r = recall(sim, owner, ties=a.ties)
    if a.json:
        print(json.dumps({"data": a.data, "split": a.split, "scores": what, "ties": a.ties, **r}, indent=1))
    else:
        print(f"{what} on {ds.name} ({r['n_images']} images, {r['n_captions']} captions, ties {a.ties}): "
              f"{format_recall(r)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsdemo", description=(
        "Remote-sensing image-text retrieval: data tools, training, evaluation and the demo. "
        "Run `rsdemo COMMAND --help` for each command."))
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("make-synthetic", help="generate the synthetic aerial world (RSITMD JSON + images + masks)",
                       description="Generate N synthetic aerial scenes with five captions each, scene labels, "
                                   "instance masks and per-caption token spans, in the RSITMD Karpathy-JSON layout "
                                   "(DIR/dataset_synthetic.json, DIR/images/, DIR/masks/). Deterministic from --seed.")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--n", type=int, default=1000, help="number of images (default 1000)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_make_synthetic)

    s = sub.add_parser("data-report", help="counts, defects and cross-split leakage of a dataset",
                       description="Load a dataset and report images/captions per split, defects found while "
                                   "loading (blank captions, caption-count mismatches), duplicate filenames and "
                                   "images, and identical captions shared across splits.")
    s.add_argument("data", help=DATA_HELP)
    s.add_argument("--images", help="image folder (files are matched by name, else by stem)")
    s.add_argument("--no-images", action="store_true", help="skip the duplicate-image check")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_data_report)

    s = sub.add_parser("eval", help="R@1/5/10 both ways and mR on a dataset split",
                       description="Evaluate retrieval on a split with the RS protocol (image->text hit if any of "
                                   "the image's captions is in the top K; text->image per caption; mR = mean of "
                                   "the six recalls). Scores come from a saved [images x captions] matrix (.npy, "
                                   "in the split's caption order) or a reference baseline.")
    s.add_argument("--data", default="synthetic", help=DATA_HELP + " (default synthetic)")
    s.add_argument("--images", help="image folder")
    s.add_argument("--split", default="test", help="split name(s), comma-separated, or 'all' (default test)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--scores", help="similarity matrix .npy [n_images, n_captions]")
    g.add_argument("--baseline", default="keywords", choices=["random", "keywords"],
                   help="random scores, or the bag-of-scene-words matcher (default)")
    s.add_argument("--ties", default="pessimistic", choices=["pessimistic", "optimistic"],
                   help="how equal scores rank (default pessimistic: a tie counts against the query)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if a.command is None:
        parser.print_help()
        return 0
    try:
        return a.func(a)
    except KeyboardInterrupt:
        print("rsdemo: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError) as e:  # DataError is a ValueError
        if os.environ.get("RSDEMO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"rsdemo {a.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
