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

    ds = open_dataset(a.data, images=a.images, labels=a.labels)
    rep = data_report(ds, check_images=not a.no_images)
    print(json.dumps(rep, indent=1, default=str) if a.json else format_report(rep))
    return 0


def _train(a) -> int:
    from .training import TrainArgs, train

    overrides = {}
    for kv in a.set or []:
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {kv!r}")
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        node = overrides
        *path, last = k.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = val
    card = train(TrainArgs(model=a.model, data=a.data, images=a.images, out=a.out, epochs=a.epochs,
                           batch_size=a.batch_size, lr=a.lr, seed=a.seed, device=a.device, resume=a.resume,
                           eval_split=a.eval_split, max_minutes=a.max_minutes, overrides=overrides, save_every=a.save_every,
                           progress=not a.quiet, init=a.init))
    from .evaluate import format_recall
    for split, m in (card.get("metrics") or {}).items():
        print(f"{card['model']} {split}: {format_recall(m)}")
    print(f"checkpoints in {a.out or 'runs/' + a.model} ({card['train_seconds']} s)")
    return 0


def _eval(a) -> int:
    import numpy as np

    from .baselines import BASELINES
    from .data.formats import open_dataset
    from .evaluate import evaluate_model, format_recall, recall

    model = None
    if a.checkpoint:
        from .checkpoint import load_model
        model = load_model(a.checkpoint, device=a.device)
        if a.data is None:  # the data the checkpoint was trained and carded on
            a.data = model.card.get("data", "synthetic")
            a.images = a.images or model.card.get("images")
    a.data = a.data or "synthetic"
    ds = open_dataset(a.data, images=a.images)
    if a.split != "all":
        ds = ds.split(*a.split.split(","))
    if not len(ds):
        raise ValueError(f"split {a.split!r} of {a.data} holds no images (splits: {ds.split_counts() or 'none'})")
    texts, owner = ds.captions()
    if model is not None:
        r = evaluate_model(model, ds, ties=a.ties)
        what = f"{model.name} ({a.checkpoint})"
    else:
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


def _models(a) -> int:
    from .checkpoint import checkpoint_dirs, find_checkpoint
    from .models.registry import list_models, model_config

    dirs = checkpoint_dirs()
    for name in list_models():
        ck = find_checkpoint(name, dirs) is not None
        print(f"{name:<16} {'[checkpoint] ' if ck else ''}{model_config(name).get('description', '')}")
    return 0


def _index(a) -> int:
    from .index import Retriever
    from .checkpoint import load_model

    if a.data is None and a.images is None:
        raise ValueError("give --images DIR (a folder of images) or --data SPEC (a dataset)")
    model = load_model(a.model, device=a.device)
    if a.data is not None:
        from .data.formats import open_dataset
        images = open_dataset(a.data, images=a.images)
    else:
        images = a.images
    t = time.perf_counter()
    r = Retriever.build(model, images, out=a.out, batch_size=a.batch_size, kind=a.kind, progress=not a.quiet,
                        resume=not a.no_resume, state=None if a.state == "none" else a.state)
    skipped, st = r.manifest["skipped"], r.manifest["state"]
    print(f"indexed {len(r)} images with {model.name} ({r.manifest['index']['kind']}) into {a.out} in "
          f"{time.perf_counter() - t:.1f} s; "
          + (f"image state {st['dtype']}, {st['bytes_per_image']:,} bytes per image" if st else "no image state")
          + (f"; skipped {len(skipped)} unreadable (see manifest.json)" if skipped else ""))
    return 0


def _search(a) -> int:
    from .index import Retriever, read_manifest

    if (a.text is None) == (a.image is None):
        raise ValueError("give either a query text or --image PATH")
    man = read_manifest(a.index)  # before loading a model: a wrong path fails fast
    from .checkpoint import load_model
    model = load_model(a.model or man.get("checkpoint") or man["model"], device=a.device)
    r = Retriever.load(a.index, model)
    hits = r.search_text(a.text, k=a.k) if a.image is None else r.search_image(a.image, k=a.k)
    if a.json:
        print(json.dumps(hits, indent=1))
    else:
        print(f"{'rank':>4}  {'score':>7}  path")
        for h in hits:
            print(f"{h['rank']:>4}  {h['score']:>7.4f}  {h['path']}")
    return 0


def _eval_explain(a) -> int:
    from .data.formats import open_dataset
    if a.real:
        return _eval_grounding(a)
    a.split = a.split or "test"
    from .faithfulness import evaluate_faithfulness, faithfulness_table, write_results
    from .checkpoint import catalogue, checkpoint_dirs, load_model
    from .models.registry import list_models

    dirs = checkpoint_dirs()
    names = a.models or sorted(m["name"] for m in catalogue(dirs) if m["name"] in list_models())
    if not names:
        raise ValueError(f"no models given and no checkpoints in {', '.join(map(str, dirs))}")
    models = {n: load_model(n, device=a.device) for n in names}   # a wrong name fails before any data work
    full = open_dataset(a.data, images=a.images)
    ds = full.split(*a.split.split(",")) if a.split != "all" else full
    if not len(ds):
        raise ValueError(f"split {a.split!r} of {a.data} holds no images (splits: {full.split_counts() or 'none'})")
    results = {}
    for name, model in models.items():
        t = time.perf_counter()
        results[name] = evaluate_faithfulness(model, ds, max_images=a.max_images, seed=a.seed)
        if not a.quiet:
            print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print(faithfulness_table(results))
    if a.write:
        # the command as rerunnable from the doc: only the options that differ from the defaults
        cmd = ["rsdemo eval-explain"] + (["--models", *a.models] if a.models else [])
        for opt, v, default in (("--data", a.data, "synthetic"), ("--split", a.split, "test"),
                                ("--max-images", a.max_images, None), ("--seed", a.seed, 0)):
            if v != default:
                cmd.append(f"{opt} {v}")
        print(f"wrote {write_results(results, a.data, a.split, ' '.join(cmd + ['--write']))}")
    return 0


def _eval_grounding(a) -> int:
    from . import grounding
    from .checkpoint import catalogue, checkpoint_dirs, load_model
    from .data.formats import open_dataset
    from .models.registry import list_models

    names = a.models or sorted(m["name"] for m in catalogue(checkpoint_dirs()) if m["name"].startswith("ucm/")
                               and m["name"].split("/")[-1] in list_models())
    if not names:
        raise ValueError("no models given and no ucm/ checkpoints found; pass --models")
    models = {n: load_model(n, device=a.device) for n in names}
    labels = grounding.load_multilabels(a.multilabels) if a.multilabels else None
    full = open_dataset(a.data if a.data != "synthetic" else "ucm", images=a.images)
    split = "train (dev blocks)" if a.dev_blocks else (a.split or "val")   # val: the AMFMN split's test images
    ds = grounding.dev_blocks(full) if a.dev_blocks else full.split(*split.split(","))
    if not len(ds):
        raise ValueError(f"split {split!r} of {a.data} holds no images (splits: {full.split_counts() or 'none'})")
    results = {}
    for name, model in models.items():
        t = time.perf_counter()
        results[name] = grounding.evaluate_grounding(model, ds, labels, mosaics=a.mosaics, images=a.rise_images,
                                                     per_object=a.per_object, seed=a.seed, image_size=a.image_size,
                                                     border=a.border, gradient=a.gradient)
        if not a.quiet:
            print(f"{name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    print(grounding.grounding_table(results))
    if a.write:
        if a.dev_blocks or a.image_size or a.border or a.gradient:
            raise ValueError("--write stores the val-split results at the models' own settings; --dev-blocks, "
                             "--image-size, --border and --gradient runs are for choosing levers (printed only)")
        # without --models: a run per model (--models M) writes the same rows as one run over all of them
        cmd = ["rsdemo eval-explain --real"]
        for opt, v, default in (("--data", a.data, "synthetic"), ("--images", a.images, None),
                                ("--multilabels", a.multilabels, None), ("--mosaics", a.mosaics, 100),
                                ("--rise-images", a.rise_images, 21), ("--per-object", a.per_object, 4),
                                ("--seed", a.seed, 0)):
            if v != default:
                cmd.append(f"{opt} {v}")
        setup = {"split": split, "seed": a.seed, "mosaics": a.mosaics, "per_object": a.per_object,
                 "images": a.rise_images, "image_size": a.image_size,
                 "object_mosaics": next(iter(next(iter(results.values()))["maps"].values())).get("object_n", 0)}
        for p in grounding.write_results(results, setup, " ".join(cmd + ["--write"])):
            print(f"wrote {p}")
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
    s.add_argument("--labels", help="CSV of id,class scene labels (default: labels.csv in the image folder or "
                   "beside the annotations; the UC Merced Land Use layout gives them too)")
    s.add_argument("--no-images", action="store_true", help="skip the duplicate-image check")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_data_report)

    s = sub.add_parser("eval", help="R@1/5/10 both ways and mR on a dataset split",
                       description="Evaluate retrieval on a split with the RS protocol (image->text hit if any of "
                                   "the image's captions is in the top K; text->image per caption; mR = mean of "
                                   "the six recalls). Scores come from a saved [images x captions] matrix (.npy, "
                                   "in the split's caption order) or a reference baseline.")
    s.add_argument("--data", default=None, help=DATA_HELP + " (default: the checkpoint's data, else synthetic)")
    s.add_argument("--images", help="image folder")
    s.add_argument("--split", default="test", help="split name(s), comma-separated, or 'all' (default test)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--checkpoint", help="a trained model: checkpoint .safetensors, or the name of a checkpoint (`rsdemo models`)")
    g.add_argument("--scores", help="similarity matrix .npy [n_images, n_captions]")
    g.add_argument("--baseline", default="keywords", choices=["random", "keywords"],
                   help="random scores, or the bag-of-scene-words matcher (default)")
    s.add_argument("--ties", default="pessimistic", choices=["pessimistic", "optimistic"],
                   help="how equal scores rank (default pessimistic: a tie counts against the query)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_eval)

    s = sub.add_parser("train", help="train a registered model on a dataset",
                       description="Train a registered model (see `rsdemo models`) on the train split; evaluate "
                                   "each epoch on val (else test); write OUT/best.safetensors, OUT/last.safetensors "
                                   "with model cards (metrics on val and test) and a resumable OUT/last.state.pt. "
                                   "Multi-GPU/CPU: torchrun --nproc_per_node=N -m rsdemo train ...")
    s.add_argument("--model", required=True, help="registered model name")
    s.add_argument("--data", default="synthetic", help=DATA_HELP + " (default synthetic)")
    s.add_argument("--images", help="image folder")
    s.add_argument("--out", help="output folder (default runs/MODEL)")
    s.add_argument("--epochs", type=int, help="default: the model config's")
    s.add_argument("--batch-size", type=int, help="global batch size (default: the model config's)")
    s.add_argument("--lr", type=float, help="learning rate (default: the model config's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="cpu / cuda (default: cuda when available)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/last.state.pt exactly")
    s.add_argument("--eval-split", help="split for per-epoch evaluation and best-checkpoint choice (default val)")
    s.add_argument("--max-minutes", type=float, help="stop (resumably) after this much training time")
    s.add_argument("--save-every", type=int, default=50, help="steps between resumable checkpoints (default 50)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set use_mvsa=false --set train.lr=1e-3 (repeatable)")
    s.add_argument("--init", metavar="CHECKPOINT", help="start from this checkpoint's weights (same architecture; "
                   "e.g. fine-tune the whole backbone, --set freeze=[\"text\"], from a heads-only run)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_train)

    s = sub.add_parser("index", help="embed a folder of images into a searchable FAISS index",
                       description="Embed every image under --images (recursively; or the images of --data) with a "
                                   "trained model and write OUT/index.faiss, OUT/embeddings.npy and "
                                   "OUT/manifest.json. Resumable: a rerun reuses the finished chunks in OUT/chunks. "
                                   "Unreadable images are skipped and listed in the manifest.")
    s.add_argument("--model", required=True, help="a trained model: checkpoint .safetensors, or the name of a checkpoint (`rsdemo models`)")
    s.add_argument("--images", help="image folder (with --data: where the dataset's images are)")
    s.add_argument("--data", help=DATA_HELP + " (index its images and keep its captions)")
    s.add_argument("--out", required=True, help="index folder")
    s.add_argument("--state", choices=["float16", "float32", "none"], default="float16",
                   help="precision of the model's cached image state (stage-2 rerank and explanations read it "
                        "instead of running the image backbone; default float16, scores within 1e-3; float32 "
                        "exact; none: rerank reloads the images)")
    s.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw"],
                   help="exact flat search, HNSW graph, or auto (flat below 50,000 images; default)")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", help="cpu / cuda (default cpu)")
    s.add_argument("--no-resume", action="store_true", help="recompute every chunk")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_index)

    s = sub.add_parser("search", help="query an index with text or an image",
                       description="Search an index built by `rsdemo index`: text -> images (reranked by the "
                                   "model's full score when it is not separable) or --image -> similar images. "
                                   "Refuses an index built with another model or over images that changed.")
    s.add_argument("index", help="index folder")
    s.add_argument("text", nargs="?", help="query text")
    s.add_argument("--image", help="query image instead of text")
    s.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    s.add_argument("--model", help="model to query with (default: the checkpoint the index was built with)")
    s.add_argument("--device", help="cpu / cuda (default cpu)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_search)

    s = sub.add_parser("eval-explain", help="heatmap faithfulness of trained models on the synthetic masks",
                       description="For each caption phrase that names objects (the synthetic world's token spans "
                                   "and instance masks), score every map of each model (its own maps, per-phrase "
                                   "word maps, the region-similarity and Grad-CAM baselines, a random floor and "
                                   "the mask's own ceiling at each resolution): pointing game (the map's maximum "
                                   "lies on the objects) and best IoU over thresholds. Prints a markdown table; "
                                   "--write stores it as results data (rsdemo/results/faithfulness.json) and "
                                   "regenerates docs/RESULTS.md.")
    s.add_argument("--models", nargs="+", metavar="MODEL",
                   help="checkpoint names or .safetensors files (default: every model with a checkpoint)")
    s.add_argument("--data", default="synthetic", help=DATA_HELP + " (needs masks and spans; default synthetic)")
    s.add_argument("--images", help="image folder")
    s.add_argument("--split", help="split name(s), comma-separated, or 'all' (default test; with --real: val)")
    s.add_argument("--max-images", type=int, help="evaluate the first N images of the split only")
    s.add_argument("--seed", type=int, default=0, help="seed of the random floor (--real: and of the draws)")
    s.add_argument("--device", help="cpu / cuda (default: cuda when available)")
    s.add_argument("--write", action="store_true", help="store the rows (rsdemo/results) and regenerate docs/RESULTS.md")
    s.add_argument("--quiet", action="store_true", help="no per-model timings on stderr")
    g = s.add_argument_group("real photos (--real: rsdemo/grounding.py; --data ucm:DIR --images DIR, split val)")
    g.add_argument("--real", action="store_true",
                   help="grounding on real UCM photos: grid pointing game on 2x2 mosaics, object-word queries, "
                        "deletion/insertion AUC (default models: every ucm/ checkpoint)")
    g.add_argument("--multilabels", metavar="PATH", help="UC Merced multi-labels (labels_by_id.csv or its folder): "
                   "object mosaics and object-word queries")
    g.add_argument("--mosaics", type=int, default=100, help="scene mosaics (default 100)")
    g.add_argument("--per-object", type=int, default=4, help="object mosaics per object (default 4)")
    g.add_argument("--rise-images", type=int, default=21, help="photos for deletion/insertion (default 21)")
    g.add_argument("--image-size", type=int, help="lever: run the models at this input size instead of their own")
    g.add_argument("--border", type=int, default=0, help="lever: the outer N cells of every model map are set to "
                   "its minimum before upsampling (edge/corner artefacts)")
    g.add_argument("--gradient", action="store_true", help="lever: add gradient x state maps (grad_x_*: what "
                   "changes the score, where the model's image state has spatial tensors the score reads)")
    g.add_argument("--dev-blocks", action="store_true",
                   help="evaluate on the train-id dev blocks (ids 70-79 of each class) instead of --split")
    s.set_defaults(func=_eval_explain)

    s = sub.add_parser("models", help="list the registered models",
                       description="List every registered model name with its description and whether a trained "
                                   "checkpoint is found (rsdemo/checkpoints/, or the folders in RSDEMO_CHECKPOINTS).")
    s.set_defaults(func=_models)

    # its options are the page's own (rsdemo.page.main parses them): main() hands everything after "serve" over
    sub.add_parser("serve", help="start the demo page (what app.py starts on a Space)", add_help=False,
                   description="rsdemo serve [--gallery DIR] [--data SPEC] [--split NAME] [--host H] [--port N]; "
                               "`rsdemo serve --help` lists them.")
    return p


def _serve(argv: list[str]) -> int:
    from .page import main as serve_page   # gradio: heavy, and only the page needs it

    serve_page(argv, prog="rsdemo serve")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
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
    except (ValueError, OSError, KeyError, FloatingPointError) as e:  # DataError is a ValueError
        if os.environ.get("RSDEMO_DEBUG"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"rsdemo {a.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
