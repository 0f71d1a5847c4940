"""UCM-captions on the real images, end to end: training recipes, evaluation, checkpoints, docs/RESULTS.md.

    python scripts/ucm.py all                 # every step below, in order; finished runs are kept (resumable)
    python scripts/ucm.py dev                 # pick each model's epoch count on per-class blocks of train ids
    python scripts/ucm.py final               # 3 seeds per model on the AMFMN split, evaluated on val and test
    python scripts/ucm.py zeroshot            # the synthetic-trained rsdemo/checkpoints/*.safetensors on UCM
    python scripts/ucm.py publish             # the best model's checkpoint + card into rsdemo/checkpoints/ucm/
    python scripts/ucm.py write               # the "UCM-captions (real images)" section of docs/RESULTS.md
    python scripts/ucm.py ground              # the grounding recipes (issue 19): dev choice, seeds, val, publish

The grounding recipes (`ground`): each seed model's dev-chosen recipe plus its score map ("score_map": true,
rsdemo/models/common.py) trained with the mosaic objective (train.mosaic_weight: a caption of one tile of a 2x2
mosaic of training photos must find that tile through the model's own score map; rsdemo.training.inputs.Mosaics,
rsdemo.losses.tile_loss). The weight (GROUND_WEIGHTS, 0 = the score map read from the old recipe) and the epoch
count are chosen on the dev blocks: dev mR and the grid pointing game of the own score map on the held-out dev
ids (grounding.dev_blocks), never val/test. Seeds train on the full train ids as rows "<model>+ground"; the seed-0
checkpoint of a recipe chosen on the model's own dev runs replaces rsdemo/checkpoints/ucm/<model> (val is measured
and reported beside the committed card's, not used to decide); a recipe whose weight was carried over from other
models replaces it only when its val mR is within GROUND_MR_SLACK of the committed card's and its best own map
points better on val (rsdemo/results/grounding.json). Levers on top of a recipe are tried on the dev blocks by
their own steps (ground-inputs, ground-objects, ground-tta, ground-blocks), each adopted only by its stated rule. Then that model's grounding rows are regenerated (what
`rsdemo eval-explain --real --models ucm/<model> --write` writes).

Every training is one public command, `rsdemo train --model M --data ucm:DIR --images DIR ...` (printed as it
runs); every number is `rsdemo eval --checkpoint ... --split val|test` of the saved checkpoint, so the table, the
cards and a user's rerun agree. Per-run metrics go to docs/ucm.json; `write` renders it.

Protocol (AMFMN's split): train on the 1,680 `train` ids, test on the 210 `val` ids (AMFMN's test set); the 210
`test` ids are a second column. Models are trained for a fixed number of epochs and the last checkpoint is kept:
nothing is chosen on val or test. The epoch count (the one hyper-parameter tuned) is the best epoch of a run on
the train ids minus the last 10 train ids of every class (1,470), scored on those 210 held-out ids (per-class
blocks, like val and test, which are ids 80-99 of each class). Ties are pessimistic (rsdemo.evaluate).
Data: --data (default ../shared/data/ucm_captions), --images (../shared/data/ucm_images; labels.csv there gives
the scene classes that feed the label-aware losses).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = Path(os.environ.get("RSDEMO_SHARED_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "runs" / "ucm"
RESULTS = ROOT / "docs" / "ucm.json"
CKPT = ROOT / "rsdemo" / "checkpoints" / "ucm"   # committed UCM checkpoints: names ucm/MODEL
SEEDS = (0, 1, 2)
KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr"]

# model -> (what it is, the most epochs tried on the dev blocks)
PRETRAINED = {
    "dual-lite0": ("frozen-feature baseline: Lite0 + MiniLM frozen, two linear projections (InfoNCE)", 12),
    "dual-label-lite0": ("dual encoder + scene-class agreement (class heads on both towers, labels.csv)", 12),
    # the seed-paper heads over frozen maps overfit within a few epochs (amfmn-lite0 peaked at epoch 1 of 12);
    # the base configs were tried up to 4 epochs (amfmn 12), the tune_top variants up to 6 (ccnet's 4: time)
    "amfmn-lite0": ("AMFMN heads on frozen Lite0 + MiniLM", 6),
    "ccnet-lite0": ("CCNet heads on frozen Lite0 + MiniLM", 4),
    "ssjdn-lite0": ("SSJDN heads on frozen Lite0 + MiniLM", 6),
    "dove-lite0": ("DOVE heads on frozen Lite0 + MiniLM", 6),
}
# random-init contrast: the same recipe on the slim CNN + BiGRU, a reduced budget (stated in the table)
RANDOM_INIT = {
    "amfmn-slim": ("AMFMN, random-init slim CNN (128 px) + BiGRU, all weights train (reduced budget: 3 epochs, "
                   "not tuned)", 8),
}

# Published rows (mR = mean of the six recalls), with their split.
PUBLISHED = [
    ("VSE++", "AMFMN", "12.38/44.76/65.71", "10.10/31.80/56.85", 36.93, "PE-RSITR (TGRS 2023) Table III"),
    ("LW-MCR-u", "AMFMN", "18.10/47.14/63.81", "13.14/50.38/79.52", 45.35, "PE-RSITR Table III"),
    ("AMFMN-soft", "AMFMN", "12.86/51.90/66.67", "14.19/51.71/78.48", 45.97, "PE-RSITR Table III"),
    ("AMFMN-fusion", "AMFMN", "16.67/45.71/68.57", "12.86/53.24/79.43", 46.08, "PE-RSITR Table III"),
    ("zero-shot CLIP ViT-B/32", "PE-RSITR's (1,890/210)", "10.95/34.76/55.71", "7.33/35.14/54.57", 33.08,
     "PE-RSITR Table III"),
    ("CLIP ViT-B/32 full fine-tune", "PE-RSITR's (1,890/210)", "17.14/55.24/79.52", "13.90/56.95/91.81", 52.43,
     "PE-RSITR Table III"),
    ("RemoteCLIP ViT-B/32 (CLIP + millions of RS pairs, UCM train included)", "its own `test` ids",
     "20.48/59.85/83.33", "18.67/61.52/94.29", 56.36, "RemoteCLIP (TGRS 2024) Table 2"),
]


# variants tried on the dev blocks besides the config's defaults (`--set KEY=VALUE`); the best dev mR is kept
# (tune_top: Lite0's layers after the stride-16 map train too, at 0.1x the heads' rate, over cached stride-16 maps)
GRID = {
    "dual-label-lite0": [{"class_weight": 0.3}, {"class_weight": 3.0}, {"multiscale": True}],
    "amfmn-lite0": [{"train.lr": 0.0001}, {"tune_top": True}],
    "ccnet-lite0": [{"tune_top": True}],
    "ssjdn-lite0": [{"tune_top": True}],
    "dove-lite0": [{"tune_top": True}],
}


# the grounding recipes (see the module docstring): weights tried on the dev blocks, epochs tried, the grounding
# measure used for the choice (scene mosaics of the dev blocks; no RISE, no object mosaics: CPU time)
GROUND_MODELS = ("amfmn-lite0", "ccnet-lite0", "ssjdn-lite0", "dove-lite0")
GROUND_WEIGHTS = (0.0, 0.5, 1.0, 2.0)
GROUND_EPOCHS = 3
GROUND_DEV_MOSAICS = 60
GROUND_MR_SLACK = 1.0        # retrieval mR a published grounding checkpoint may lose against the committed card
SCORE_MAPS = {"amfmn-lite0": "mvsa_score", "ccnet-lite0": "tam_cfm_score", "ssjdn-lite0": "bsd_score",
              "dove-lite0": "roam_score"}
# the module each seed model's own map comes from, switched off for its ablation row (recipe, epochs and mosaic
# objective otherwise the same; the map is then the plain split of the pooled score over positions, "score")
MODULE_OFF = {"amfmn-lite0": ("MVSA", {"use_mvsa": False}), "ccnet-lite0": ("TAM+CFM", {"use_tam": False,
                                                                                      "use_cfm": False}),
              "ssjdn-lite0": ("BSD", {"use_bsd": False}), "dove-lite0": ("ROAM", {"use_roam": False})}
# options that act only through that module: left out of the module-off row's set, so its run stays the same run
MODULE_ONLY = {"dove-lite0": ("roam_mosaic",)}
READOUT = "positive"     # own score maps as the page shows them: the positive part (rsdemo/models/common.py)
REFERENCE = ("dual-lite0", "patch_sim")   # the plain dual encoder and its patch-similarity map, beside every row
# the input levers (issue 19), each tried on the dev blocks against the same recipe without it, both up to
# GROUND_EPOCHS epochs (CPU time): "views", every pair sees one of the 8 dihedral views of its photo (captions
# naming an orientation keep the photo as it is); "224px", the photos at 224 px instead of the config's 128 (UCM
# photos are 256 px); "lite2-224px", EfficientNet-Lite2 (ImageNet, the same pip family, deeper and wider) at 224
# px; "finetune", all of Lite0 trains (at train.backbone_lr_scale of the heads' rate, BatchNorm statistics kept;
# the mosaics then run through it every step) for WARM_START epochs more, starting from the recipe's own dev run
# (`rsdemo train --init`: heads first, then the whole network; trained from the start, the heads being random,
# it stood at 36.0 dev mR after one epoch against 42.86); "text-top2", MiniLM's last 2 of 6 layers train (at
# train.backbone_lr_scale of the heads' rate, over cached hidden states of layer 4); "roam-mosaic" (DOVE only,
# rsdemo/models/dove.py: its regional share gets its own tile loss beside the split's). The best one is adopted
# for a model when its dev mR is higher than the recipe's without it and its own map's dev hits are not lower by
# more than LEVER_HIT_SLACK points; a warm-started lever is measured on the dev blocks only (ground-final does not
# train two-phase recipes)
INPUT_LEVERS = {"views": {"train.views": 8}, "224px": {"image_size": 224},
                "lite2-224px": {"backbone": "efficientnet_lite2", "image_size": 224},
                "finetune": {"freeze": ["text"], "tune_top": False}, "text-top2": {"text_top": 2},
                "roam-mosaic": {"roam_mosaic": True}}
LEVER_MODELS = {"roam-mosaic": ("dove-lite0",)}   # levers that are one model's option (others: every model)
# levers aimed at the maps rather than retrieval: adopted by the object lever's rule instead (the own map's dev hits
# rise, dev mR drops by at most GROUND_MR_SLACK), and only where no retrieval lever was adopted
GROUNDING_LEVERS = {"roam-mosaic"}
WARM_START = {"finetune": 2}
LEVER_TEXT = {"views": "dihedral views of the training photos", "224px": "224-px photos",
              "lite2-224px": "EfficientNet-Lite2 at 224 px",
              "finetune": f"all of Lite0 trained {WARM_START['finetune']} epochs more from the recipe's dev run",
              "text-top2": "MiniLM's last 2 layers trained",
              "roam-mosaic": "ROAM's own share of the split trained on the mosaics too (DOVE only)"}
LEVER_HIT_SLACK = 5.0
# the object lever (ground-objects): object mosaics from the UC Merced multi-labels join the grounding objective
# (train.object_mosaics per object word; an object word must find the one tile whose photo holds it, the others
# from its scene class where the labels allow). Tried on the dev blocks against the full recipe without it, both
# measured with scene and object mosaics of the dev ids (OBJECT_DEV_PER_WORD per object word); adopted when the own
# map's object hits rise, its scene hits drop by at most LEVER_HIT_SLACK and dev mR by at most GROUND_MR_SLACK
OBJECT_PER_WORD = 60
OBJECT_DEV_PER_WORD = 4
MULTILABELS = SHARED / "ucm_multilabels"


def object_lever() -> dict:
    # relative to the project, as the runs see it (cwd ROOT): recipes and cards name no machine's paths
    return {"train.object_mosaics": OBJECT_PER_WORD, "train.multilabels": os.path.relpath(MULTILABELS, ROOT)}


def _tag(variant: dict) -> str:
    return ",".join(f"{k}={json.dumps(v)}" for k, v in variant.items())


def _sets(variant: dict) -> list[str]:
    out = []
    for k, v in variant.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def open_ucm(args):
    from rsdemo.data.formats import open_dataset

    return open_dataset(f"ucm:{data_dir(args)}", images=images_dir(args))


def data_dir(args) -> Path:
    return Path(args.data) if args.data else SHARED / "ucm_captions"


def images_dir(args) -> Path:
    return Path(args.images) if args.images else SHARED / "ucm_images"


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}, "zeroshot": {}, "dev": {}}


def save_results(res: dict, section: str, key: str) -> None:
    """Writes one entry, re-reading the file first, so steps running side by side keep each other's entries; a
    model's "ground" entry key by key (ground-dev, -inputs, -objects, -tta ... each write their own keys of it)."""
    disk = load_results()
    new = res[section][key]
    old = disk.get(section, {}).get(key)
    if section == "ground" and isinstance(old, dict) and isinstance(new, dict):
        new = {**old, **new}
    disk.setdefault(section, {})[key] = new
    RESULTS.write_text(json.dumps(disk, indent=1, sort_keys=True) + "\n")


def rsdemo(*argv: str, log: Path | None = None) -> str:
    """Runs `python -m rsdemo ARGV` (the public command line), echoing the command; returns its stdout."""
    cmd = [sys.executable, "-m", "rsdemo", *argv]
    print("$ rsdemo " + " ".join(argv), flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(p.stdout + p.stderr)
    if p.returncode:
        raise RuntimeError(f"rsdemo {' '.join(argv)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p.stdout


def rel(p: Path) -> str:
    try:
        return os.path.relpath(p, ROOT)
    except ValueError:
        return str(p)


# ---- the dev split: per-class blocks of train ids -----------------------------------------------------------

def make_dev(args, block: int = 7) -> Path:
    """runs/ucm/dev: data_train_UCM.json = train ids minus ids 70-79 of each class; data_val_UCM.json = those.
    Another block (ids 10*block .. 10*block+9 of each class, all train ids): runs/ucm/dev-b<block>."""
    src = data_dir(args) / "data_train_UCM.json"
    d = json.loads(src.read_text())
    held = {im["id"] for im in d["images"] if 10 * block <= (int(im["id"]) - 1) % 100 < 10 * block + 10}
    out = RUNS / ("dev" if block == 7 else f"dev-b{block}")
    out.mkdir(parents=True, exist_ok=True)
    for name, keep in (("data_train_UCM.json", lambda i: i not in held), ("data_val_UCM.json", lambda i: i in held)):
        part = json.dumps(dict(d, images=[im for im in d["images"] if keep(im["id"])],
                               annotations=[a for a in d["annotations"] if keep(a["image_id"])]))
        if not (out / name).is_file() or (out / name).read_text() != part:   # runs side by side may be reading it
            (out / name).write_text(part)
    return out


def train_cmd(model: str, data: Path, images: Path, out: Path, seed: int, epochs: int, eval_split: str) -> list[str]:
    return ["train", "--model", model, "--data", f"ucm:{rel(data)}", "--images", rel(images), "--out", rel(out),
            "--seed", str(seed), "--epochs", str(epochs), "--eval-split", eval_split, "--quiet",
            # runs are minutes long: resumable mid-epoch states (the whole model, ~100 MB) are not worth writing
            "--save-every", "1000000"]


def models(args) -> dict:
    allm = {**PRETRAINED, **RANDOM_INIT}
    return {m: allm[m] for m in (args.models or allm)}


def dev(args) -> None:
    """One run per model (and per GRID variant) on the dev split; the best dev mR picks the variant, and its best
    dev epoch becomes the model's epoch count."""
    res = load_results()
    data = make_dev(args)
    for m, (_, max_epochs) in models(args).items():
        if m not in res["dev"] or args.force:
            out = RUNS / f"dev-{m}"
            t = time.perf_counter()
            rsdemo(*train_cmd(m, data, images_dir(args), out, 0, max_epochs, "val"), log=out / "train.log")
            card = json.loads((out / "best.json").read_text())
            res["dev"][m] = {"best_epoch": card["best_epoch"], "dev_mr": card["metrics"]["val"]["mr"],
                             "history": card.get("history"), "max_epochs": max_epochs,
                             "seconds": round(time.perf_counter() - t)}
            save_results(res, "dev", m)
            print(f"{m}: best dev epoch {card['best_epoch']} (dev mR {card['metrics']['val']['mr']:.2f})", flush=True)
        if m not in GRID:
            continue
        entry = res["dev"][m]
        base = entry.setdefault("base", {"best_epoch": entry["best_epoch"], "dev_mr": entry["dev_mr"]})
        grid = entry.setdefault("grid", {})
        for variant in GRID[m]:
            tag = _tag(variant)
            out = RUNS / f"devgrid-{m}-{tag}"
            card_path = out / "best.json"
            done = card_path.is_file() and "metrics" in json.loads(card_path.read_text())
            if not done or args.force:
                rsdemo(*train_cmd(m, data, images_dir(args), out, 0, max_epochs, "val"), *_sets(variant),
                       log=out / "train.log")
            card = json.loads(card_path.read_text())
            grid[tag] = {"set": variant, "best_epoch": card["best_epoch"], "dev_mr": card["metrics"]["val"]["mr"]}
            print(f"{m} {tag}: best dev epoch {card['best_epoch']} (dev mR {grid[tag]['dev_mr']:.2f})", flush=True)
        best = max(grid.values(), key=lambda g: g["dev_mr"])
        if best["dev_mr"] > base["dev_mr"]:
            entry.update(best_epoch=best["best_epoch"], dev_mr=best["dev_mr"], set=best["set"])
        else:
            entry.update(best_epoch=base["best_epoch"], dev_mr=base["dev_mr"], set={})
        save_results(res, "dev", m)


def evaluate(ck: Path, args, split: str, ties: str = "pessimistic") -> dict:
    out = rsdemo("eval", "--checkpoint", rel(ck), "--data", f"ucm:{rel(data_dir(args))}", "--images",
                 rel(images_dir(args)), "--split", split, "--json", "--ties", ties)
    return json.loads(out)


def amfmn_code_recall(sim, owner) -> dict:
    """Recalls ranked the way AMFMN's released evaluation code does (numpy argsort, highest first), so tied scores
    are ordered by caption/image position rather than counted against the query: for comparison with published
    rows only; the project's numbers use the pessimistic rule."""
    import numpy as np

    sim, owner = np.asarray(sim), np.asarray(owner)
    n_img = sim.shape[0]
    i2t = np.empty(n_img)
    for i in range(n_img):
        inds = np.argsort(sim[i])[::-1]
        i2t[i] = min(np.where(inds == j)[0][0] for j in np.flatnonzero(owner == i))
    t2i = np.empty(sim.shape[1])
    for j in range(sim.shape[1]):
        inds = np.argsort(sim[:, j])[::-1]
        t2i[j] = np.where(inds == owner[j])[0][0]
    out = {f"{n}_r{k}": 100.0 * float(np.mean(r < k)) for n, r in (("i2t", i2t), ("t2i", t2i)) for k in (1, 5, 10)}
    out["mr"] = float(np.mean(list(out.values())))
    return out


def argsort_metrics(ck: Path, args, split: str = "val") -> dict:
    import torch

    from rsdemo.evaluate import model_scores
    from rsdemo.checkpoint import load_model

    torch.set_num_threads(1)
    ds = open_ucm(args).split(split)
    full, _ = model_scores(load_model(str(ck)), ds)
    return amfmn_code_recall(full, ds.captions()[1])


def argsort_step(args) -> None:
    """Adds the AMFMN-code ranking of val to every finished run that lacks it."""
    res = load_results()
    for key, r in res["runs"].items():
        if "val_amfmn_code" in r and not args.force:
            continue
        r["val_amfmn_code"] = argsort_metrics(ROOT / r["checkpoint"], args)
        save_results(res, "runs", key)
        print(f"{key}: val mR by AMFMN's ranking code {r['val_amfmn_code']['mr']:.2f}", flush=True)


def final(args) -> None:
    res = load_results()
    for m in models(args):
        if m not in res["dev"]:
            print(f"{m}: no dev run yet, skipped", flush=True)
            continue
        epochs = max(1, int(res["dev"][m]["best_epoch"]))
        for seed in SEEDS[: args.seeds]:
            key = f"{m}/s{seed}"
            variant = res["dev"][m].get("set") or {}
            old = res["runs"].get(key)
            if old and not args.force and (old.get("set") or {}) == variant and old["epochs"] == epochs:
                continue   # done with the recipe the dev blocks chose (a changed choice reruns)
            final_run(args, res, key, m, m, seed, epochs, variant, RUNS / f"{m}-s{seed}")


def final_run(args, res: dict, key: str, row: str, m: str, seed: int, epochs: int, variant: dict, out: Path) -> None:
    """Trains model m on the full train ids (`--set` variant) and stores the run as res["runs"][key] (table row
    `row`): the card's val metrics, test, optimistic val."""
    # eval split "val" only reports per-epoch numbers; the checkpoint used is the last one (fixed epochs)
    rsdemo(*train_cmd(m, data_dir(args), images_dir(args), out, seed, epochs, "val"), *_sets(variant),
           log=out / "train.log")
    card = json.loads((out / "last.json").read_text())
    ck = out / "last.safetensors"
    res["runs"][key] = {"model": row, "seed": seed, "epochs": epochs, "checkpoint": rel(ck), "set": variant,
                        "params": card.get("params"), "trainable": card.get("trainable_params"),
                        "train_seconds": card.get("train_seconds"), "run_seconds": card.get("run_seconds"),
                        "device": card.get("device"), "cpus": card.get("cpus"),
                        # the card's metrics: evaluate_model of the saved checkpoint, as `rsdemo eval` does
                        **{sp: card["metrics"].get(sp) or evaluate(ck, args, sp) for sp in ("val", "test")},
                        # for context only: the same scores with ties broken in the model's favour
                        "val_optimistic": evaluate(ck, args, "val", "optimistic")}
    save_results(res, "runs", key)
    print(f"{key}: val mR {res['runs'][key]['val']['mr']:.2f}, test mR {res['runs'][key]['test']['mr']:.2f}",
          flush=True)


def zeroshot(args) -> None:
    """The committed synthetic-world checkpoints, unchanged, on UCM val and test."""
    res = load_results()
    for ck in sorted(CKPT.parent.glob("*.safetensors")):
        card = json.loads(ck.with_suffix(".json").read_text())
        if not str(card.get("data", "")).startswith("synthetic"):
            continue
        if ck.stem in res["zeroshot"] and not args.force:
            continue
        res["zeroshot"][ck.stem] = {"val": evaluate(ck, args, "val"), "test": evaluate(ck, args, "test"),
                                    "params": card.get("params")}
        save_results(res, "zeroshot", ck.stem)
        print(f"zero-shot {ck.stem}: val mR {res['zeroshot'][ck.stem]['val']['mr']:.2f}", flush=True)


# ---- summaries -----------------------------------------------------------------------------------------------

def summary(res: dict) -> dict:
    """model -> mean and spread (sample std) over seeds, for val and test, plus params and time."""
    out = {}
    for r in res["runs"].values():
        out.setdefault(r["model"], []).append(r)
    table = {}
    for m, runs in out.items():
        row = {"seeds": sorted(r["seed"] for r in runs), "epochs": runs[0]["epochs"], "params": runs[0]["params"],
               "set": runs[0].get("set") or {},
               # the run's own file, else its published copy (seed 0 of each row: the same weights)
               "trainable": (runs[0].get("trainable") or _stored_params(ROOT / runs[0]["checkpoint"])
                             or _stored_params(CKPT / f"{m}.safetensors")),
               "train_minutes": statistics.mean(r["train_seconds"] or 0 for r in runs) / 60}
        for split in ("val", "test"):
            for k in KEYS:
                vals = [r[split][k] for r in runs]
                row[f"{split}_{k}"] = statistics.mean(vals)
                row[f"{split}_{k}_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        opt = [r["val_optimistic"]["mr"] for r in runs if r.get("val_optimistic")]
        row["val_opt_mr"] = statistics.mean(opt) if opt else None
        code = [r["val_amfmn_code"]["mr"] for r in runs if r.get("val_amfmn_code")]
        row["val_code_mr"] = statistics.mean(code) if code else None
        row["val_code_mr_sd"] = statistics.stdev(code) if len(code) > 1 else 0.0
        table[m] = row
    return table


def _stored_params(ck: Path) -> int | None:
    """Parameters stored in a checkpoint: the trained ones (frozen pip backbones are left out of the file)."""
    if not ck.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(ck), framework="pt") as f:
        return sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel") else
                   __import__("math").prod(f.get_slice(k).get_shape()) for k in f.keys())


def best_model(res: dict) -> str | None:
    """The model with the best dev-block mR among those with final runs: chosen without val or test."""
    have = {r["model"] for r in res["runs"].values()}
    cands = [m for m in res["dev"] if m in have]
    return max(cands, key=lambda m: res["dev"][m]["dev_mr"]) if cands else None


def publish(args) -> None:
    """rsdemo/checkpoints/ucm/<model>.safetensors: seed 0 of the best model (by dev mR) and of every other trained model
    whose file is small; the card states data, split, seeds, and the val/test metrics the eval reproduces."""
    res = load_results()
    table = summary(res)
    best = best_model(res)
    CKPT.mkdir(parents=True, exist_ok=True)
    for m, row in table.items():
        key = f"{m}/s0"
        card = CKPT / f"{m}.json"
        if key not in res["runs"] or card.is_file() and json.loads(card.read_text()).get("recipe"):
            # a grounding recipe replaced this model's checkpoint (its card says so, also while its run is being
            # retrained with another recipe): `ground` publishes it
            continue
        publish_run(m, res["runs"][key], row, m == best)


def publish_run(m: str, r: dict, row: dict, best: bool, extra: dict | None = None) -> bool:
    """Copies run r's checkpoint to rsdemo/checkpoints/ucm/<m> with its card (the row's seed summary, the
    reproduce command); False when the file is over 25 MB."""
    src = ROOT / r["checkpoint"]
    if src.stat().st_size > 25 * 2**20:
        print(f"{m}: {src.stat().st_size / 2**20:.0f} MB, over 25 MB: not published")
        return False
    card = json.loads(src.with_suffix(".json").read_text())
    card.update({
        "data": "ucm:../shared/data/ucm_captions", "images": "../shared/data/ucm_images",
        "split": "AMFMN protocol: trained on the 1,680 train ids; metrics on the 210 val ids (AMFMN's test) "
                 "and the 210 test ids",
        "seed": 0, "seeds_in_results": row["seeds"], "epochs": r["epochs"],
        "epochs_chosen_on": "best epoch on the last 10 train ids of each class (210), model trained on the rest",
        "metrics": {"val": r["val"], "test": r["test"]},
        "seed_mean": {s: {k: row[f"{s}_{k}"] for k in KEYS} for s in ("val", "test")},
        "seed_spread": {s: row[f"{s}_mr_sd"] for s in ("val", "test")},
        "best_ucm_model": best, "ties": "pessimistic",
        "reproduce": f"rsdemo eval --checkpoint ucm/{m} --data "
                     f"ucm:../shared/data/ucm_captions --images ../shared/data/ucm_images --split val",
        **(extra or {}),
    })
    if r.get("set") and "--set" not in card.get("description", ""):
        # the config's description states its defaults (input size, what trains): say what this run changed
        card["description"] = f"{card.get('description', '').rstrip('.')}. This checkpoint: --set {_tag(r['set'])}"
    card.pop("history", None)
    shutil.copyfile(src, CKPT / f"{m}.safetensors")
    (CKPT / f"{m}.json").write_text(json.dumps(card, indent=1, default=str) + "\n")
    print(f"published rsdemo/checkpoints/ucm/{m}.safetensors ({src.stat().st_size / 2**20:.1f} MB)")
    return True


# ---- the grounding recipes (issue 19) -------------------------------------------------------------------------

def ground_models(args) -> list[str]:
    return [m for m in GROUND_MODELS if not args.models or m in args.models]


def ground_variant(res: dict, m: str, weight: float) -> dict:
    """The model's dev-chosen `--set` plus its score map and the mosaic objective at `weight`."""
    return {**(res["dev"].get(m, {}).get("set") or {}), "score_map": True, "train.mosaic_weight": weight}


def own_maps(maps: dict) -> dict:
    """The model's own maps of a grounding result (no baselines, no random map, no centre prior)."""
    return {k: v for k, v in maps.items() if not k.startswith("baseline_") and k not in ("random", "centre")}


def best_own(maps: dict) -> tuple[str, dict]:
    """(name, row) of the own map with the most scene hits (then energy)."""
    own = own_maps(maps)
    k = max(own, key=lambda k: (own[k]["hit"], own[k]["energy"]))
    return k, own[k]


def grounding_of(ck: Path, args, split: str, **kw) -> dict:
    """rsdemo.grounding.evaluate_grounding of a checkpoint on the dev blocks (split "dev") or a split."""
    import torch

    from rsdemo import grounding
    from rsdemo.checkpoint import load_model

    torch.set_num_threads(1)
    full = open_ucm(args)
    ds = grounding.dev_blocks(full) if split == "dev" else full.split(split)
    return grounding.evaluate_grounding(load_model(str(ck)), ds, **kw)


def dev_result(m: str, tag: str, out: Path, variant: dict, args) -> dict:
    """A finished dev run's entry: its best epoch and dev mR (the whole run's per-epoch history) and the grid
    pointing of its own score map on the dev blocks (GROUND_DEV_MOSAICS scene mosaics), every map's beside it."""
    card = json.loads((out / "best.json").read_text())
    last = out / "last.json"
    maps = grounding_of(out / "best.safetensors", args, "dev", mosaics=GROUND_DEV_MOSAICS, images=0)["maps"]
    own = maps[SCORE_MAPS[m]]
    print(f"{m} {tag}: best dev epoch {card['best_epoch']} (dev mR {card['metrics']['val']['mr']:.2f}); dev blocks "
          f"{SCORE_MAPS[m]} hit {own['hit']:.1f}% energy {own['energy']:.1f}%", flush=True)
    return {"set": variant, "best_epoch": card["best_epoch"], "dev_mr": card["metrics"]["val"]["mr"],
            "history": (json.loads(last.read_text()) if last.is_file() else card).get("history"),
            "hit": own["hit"], "energy": own["energy"], "readout": READOUT,
            "maps": {k: {"hit": v["hit"], "energy": v["energy"]} for k, v in maps.items()}}


def ground_dev(args) -> None:
    """Per model and mosaic weight: a run on the dev split (GROUND_EPOCHS), its dev mR and the grid pointing of
    its own score map on the dev blocks (scene mosaics); the choice: the most dev hits among the weights whose dev
    mR is within GROUND_MR_SLACK of weight 0's."""
    res = load_results()
    for m in ground_models(args):
        for w in (args.weights or GROUND_WEIGHTS):
            tag = f"w={w:g}"
            variant = ground_variant(res, m, w)
            out = RUNS / f"devground-{m}-{tag}"
            old = res.get("ground", {}).get(m, {}).get("dev", {}).get(tag)
            if old and not args.force:
                # the run stands; its maps are re-measured when they were read out another way (signed split)
                if old.get("readout") == READOUT or not (out / "best.safetensors").is_file():
                    continue
            recipe = {"set": variant, "epochs": GROUND_EPOCHS}
            t, seconds = time.perf_counter(), (old or {}).get("seconds")
            if not old or args.force:
                got_dir = dev_train(m, out, recipe, args)
                seconds = round(time.perf_counter() - t) if got_dir == out else None
                out = got_dir
            got = {**dev_result(m, tag, out, variant, args), "seconds": seconds, "run": rel(out)}
            res = load_results()      # a ground-dev side by side (--weights) may have added its runs meanwhile
            res.setdefault("ground", {}).setdefault(m, {}).setdefault("dev", {})[tag] = got
            save_results(res, "ground", m)
        res = load_results()
        entry = res.get("ground", {}).get(m, {})
        dev_runs = entry.get("dev", {})
        base = dev_runs.get("w=0")
        if base is None or any(f"w={w:g}" not in dev_runs for w in GROUND_WEIGHTS):
            print(f"{m}: not every mosaic weight has its dev run yet; no choice", flush=True)
            continue
        ok = {t: d for t, d in dev_runs.items() if d["dev_mr"] >= base["dev_mr"] - GROUND_MR_SLACK}
        entry["chosen"] = max(ok, key=lambda t: (ok[t]["hit"], ok[t]["energy"]))
        save_results(res, "ground", m)
        print(f"{m}: chosen {entry['chosen']}", flush=True)


def finished_run(m: str, recipe: dict) -> Path | None:
    """A finished dev run of model m (any dev step's directory) that trained exactly `recipe` ({set, epochs}) on
    the dev blocks, so a step needing the same run reads it instead of training it again."""
    for d in sorted(RUNS.glob(f"dev*-{m}-*")):
        if finished(d, recipe):
            return d
    return None


def finished(d: Path, recipe: dict) -> bool:
    """Run directory d trained exactly `recipe` to its end (recipe.json, best and last checkpoints written)."""
    r = d / "recipe.json"
    return (r.is_file() and (d / "best.safetensors").is_file() and (d / "last.json").is_file()
            and json.loads(r.read_text()) == recipe)


def dev_train(m: str, out: Path, recipe: dict, args, init: list[str] | None = None) -> Path:
    """The run directory of a dev run of model m that trained `recipe` ({set, epochs, ...}) on the dev blocks:
    a finished run of the same recipe (any dev step's) is read, otherwise `rsdemo train` runs it in out."""
    same = None if args.force else finished_run(m, recipe)
    if same is not None:
        print(f"{m}: the same recipe ran in {rel(same)}; read, not retrained", flush=True)
        return same
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe))
    (out / "last.json").unlink(missing_ok=True)
    data = make_dev(args, recipe.get("block", 7))
    rsdemo(*train_cmd(m, data, images_dir(args), out, 0, recipe["epochs"], "val"), *_sets(recipe["set"]),
           *(init or []), log=out / "train.log")
    return out


def ground_recipe(res: dict, m: str, inputs: bool = True, objects: bool = True) -> tuple[int, dict] | None:
    """(epochs, --set) of the model's grounding recipe: its dev-chosen mosaic weight (or the weight carried over
    from other models, with its old recipe's dev epochs), plus the input lever the dev blocks adopted, if any
    (inputs=False: without it, and without the next), plus the object mosaics where ground-objects adopted them
    on top of this very recipe (objects=False: without)."""
    g = res.get("ground", {}).get(m, {})
    if "chosen" in g:
        ch = g["dev"][g["chosen"]]
        epochs, variant = max(1, int(ch["best_epoch"])), ch["set"]
    elif "transfer" in g:
        epochs, variant = g["transfer"]["epochs"], ground_variant(res, m, g["transfer"]["weight"])
    else:
        return None
    a = g.get("inputs", {})
    if inputs and a.get("adopted"):
        epochs, variant = max(1, int(a["runs"][a["adopted"]]["best_epoch"])), {**variant, **INPUT_LEVERS[a["adopted"]]}
    o = g.get("objects", {})
    if inputs and objects and o.get("adopted") and o["runs"]["base"]["set"] == variant:
        # only on top of the recipe they were tried on: a recipe changed since needs ground-objects again
        epochs, variant = max(1, int(o["runs"]["objects"]["best_epoch"])), {**variant, **object_lever()}
    return epochs, variant


def retire(res: dict, key: str) -> None:
    """A run about to be retrained with another recipe: its row (and its val grounding) kept under "superseded",
    named by its recipe, so the before/after comparison stays in docs/ucm.json."""
    old = dict(res["runs"][key])
    if key in res.get("grounding", {}):
        old["grounding"] = res["grounding"][key]
    name = f"{key} ({_tag(old.get('set') or {})}, {old['epochs']} epochs)"
    res.setdefault("superseded", {})[name] = old
    save_results(res, "superseded", name)


def ground_inputs(args) -> None:
    """The input levers on the dev blocks (INPUT_LEVERS, or those named by --levers): per model, a dev run of its
    grounding recipe with each lever beside one without it (the weight's own grounding dev run where there is one,
    otherwise a run of GROUND_EPOCHS); dev mR and the grid pointing of the own score map on the dev blocks, as
    ground-dev measures; the choice by the rule at INPUT_LEVERS, among the levers run so far. Kept in
    docs/ucm.json (ground.<model>.inputs); a finished run directory with the same recipe is read, not retrained."""
    res = load_results()
    for m in ground_models(args):
        got = ground_recipe(res, m, inputs=False)
        if got is None:
            print(f"{m}: no grounding recipe yet, skipped", flush=True)
            continue
        g = res["ground"][m]
        a = g.setdefault("inputs", {})
        runs = a.setdefault("runs", {})
        base_set = got[1]
        todo = [("base", base_set)] + [(k, {**base_set, **INPUT_LEVERS[k]}) for k in (args.levers or INPUT_LEVERS)
                                       if m in LEVER_MODELS.get(k, (m,))]
        for tag, variant in todo:
            old = runs.get(tag)
            if old and old.get("set") == variant and not args.force:
                continue
            if tag == "base" and g.get("chosen") and g["dev"][g["chosen"]]["set"] == variant and not args.force:
                runs[tag] = {**g["dev"][g["chosen"]], "from": f"ground-dev {g['chosen']}"}
                save_results(res, "ground", m)
                continue
            recipe, init = {"set": variant, "epochs": WARM_START.get(tag, GROUND_EPOCHS)}, []
            if tag in WARM_START:
                start = base_dev_dir(res, m) / "last.safetensors"
                recipe["init"], init = rel(start), ["--init", rel(start)]
            t = time.perf_counter()
            out = dev_train(m, RUNS / f"devinputs-{m}-{tag}", recipe, args, init)
            runs[tag] = {**dev_result(m, tag, out, variant, args), "seconds": round(time.perf_counter() - t)}
            save_results(res, "ground", m)
        b = runs["base"]
        ok = {k: r for k, r in runs.items() if k != "base" and k not in WARM_START and k not in GROUNDING_LEVERS
              and r["dev_mr"] > b["dev_mr"] and r["hit"] >= b["hit"] - LEVER_HIT_SLACK}
        maps = {k: r for k, r in runs.items() if k in GROUNDING_LEVERS and r["hit"] > b["hit"]
                and r["dev_mr"] >= b["dev_mr"] - GROUND_MR_SLACK}
        a["adopted"] = (max(ok, key=lambda k: ok[k]["dev_mr"]) if ok else
                        max(maps, key=lambda k: (maps[k]["hit"], maps[k]["dev_mr"])) if maps else None)
        save_results(res, "ground", m)
        print(f"{m}: " + ", ".join(f"{k} dev mR {r['dev_mr']:.2f} hits {r['hit']:.0f}" for k, r in runs.items())
              + f"; adopted: {a['adopted']}", flush=True)


def ground_final(args) -> None:
    """The chosen recipe on the full train ids, seeds SEEDS[:--seeds], as rows "<model>+ground"."""
    res = load_results()
    for m in ground_models(args):
        g = res.setdefault("ground", {}).setdefault(m, {})
        if "chosen" not in g and "transfer" not in g and args.ground_weight is not None and m in res["dev"]:
            # no dev runs of its own (CPU time): the weight other models' dev blocks chose, the epochs this
            # model's own dev run of the old recipe chose
            g["transfer"] = {"weight": args.ground_weight, "epochs": max(1, int(res["dev"][m]["best_epoch"])),
                             "from": sorted(k for k, v in res["ground"].items() if v.get("chosen"))}
            save_results(res, "ground", m)
        got = ground_recipe(res, m)
        if got is None:
            print(f"{m}: no grounding dev choice yet (or --ground-weight), skipped", flush=True)
            continue
        epochs, variant = got
        for seed in ([args.seed] if args.seed is not None else SEEDS[: args.seeds]):
            key = f"{m}+ground/s{seed}"
            old = res["runs"].get(key)
            if old and not args.force and (old.get("set") or {}) == variant and old["epochs"] == epochs:
                continue
            if old:
                retire(res, key)
            out = RUNS / f"{m}+ground-s{seed}"
            if g.get("published") == rel(out / "last.safetensors"):
                # new weights at the published run's path: the committed copy stays until ground_publish decides
                g["published"] = None
                save_results(res, "ground", m)
            final_run(args, res, key, f"{m}+ground", m, seed, epochs, variant, out)
    argsort_step(args)


def ablation_row(m: str) -> str:
    return f"{m}+ground -{MODULE_OFF[m][0]}"


def ground_ablate(args) -> None:
    """Each grounding recipe with its map's module off (MODULE_OFF): same set, epochs and mosaic weight, seeds
    SEEDS[:--ablation-seeds] (or --seed alone: two processes side by side), rows "<model>+ground -<module>"
    (retrieval as every run; grounding in ground_val)."""
    res = load_results()
    for m in ground_models(args):
        base = res["runs"].get(f"{m}+ground/s0")
        if base is None:
            print(f"{m}: no grounding recipe run yet, no ablation", flush=True)
            continue
        name, off = MODULE_OFF[m]
        variant = {k: v for k, v in {**base["set"], **off}.items() if k not in MODULE_ONLY.get(m, ())}
        for seed in ([args.seed] if args.seed is not None else SEEDS[: args.ablation_seeds]):
            key = f"{ablation_row(m)}/s{seed}"
            old = res["runs"].get(key)
            if old and not args.force and old.get("set") == variant and old["epochs"] == base["epochs"]:
                continue
            if old:
                retire(res, key)
            out = RUNS / f"{m}+ground-no-{name.lower()}-s{seed}"
            final_run(args, res, key, ablation_row(m), m, seed, base["epochs"], variant, out)
    argsort_step(args)


def grounding_runs(res: dict, models: list[str]) -> list[str]:
    """Run keys whose grounding ground_val measures: every seed of the recipes and of their ablations."""
    rows = {f"{m}+ground" for m in models} | {ablation_row(m) for m in models}
    return sorted(k for k, r in res["runs"].items() if r["model"] in rows)


def measured(res: dict, key: str) -> bool:
    """Run `key` has a val grounding measurement of its current weights, recipe and deletion canvas."""
    from rsdemo import grounding

    r, old = res["runs"][key], res.get("grounding", {}).get(key, {})
    # a run retrained with another recipe writes to the same path: the recipe is part of what was measured
    same_run = old.get("set", r.get("set")) == r.get("set") and old.get("epochs", r["epochs"]) == r["epochs"]
    return old.get("checkpoint") == r["checkpoint"] and same_run and old.get("deletion") == grounding.DELETION


def ground_val(args) -> None:
    """Every measure of rsdemo.grounding (the setup `rsdemo eval-explain --real` writes) of each grounding run
    (all seeds, and the module-off rows) on val, kept in docs/ucm.json ("grounding", by run key); a measurement
    is redone when its checkpoint or the deletion canvas (grounding.DELETION) changed. A published seed-0
    checkpoint's rows of rsdemo/results/grounding.json are rewritten from its new measurement."""
    from rsdemo import grounding

    res = load_results()
    labels = grounding.load_multilabels(SHARED / "ucm_multilabels")
    for key in grounding_runs(res, ground_models(args)):
        if measured(load_results(), key) and not args.force:
            continue
        lock = RUNS / f".measuring-{key.replace('/', '-').replace(' ', '_')}"
        try:       # a second ground-val side by side takes the next run instead of measuring this one again
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            print(f"{key}: being measured by another ground-val ({rel(lock)}; delete it if none runs); skipped",
                  flush=True)
            continue
        try:
            res = load_results()        # another ground-val may have measured it meanwhile
            if measured(res, key) and not args.force:
                continue
            r = res["runs"][key]
            got = grounding_of(ROOT / r["checkpoint"], args, "val", labels=labels)
        finally:
            lock.unlink()
        res.setdefault("grounding", {})[key] = {"checkpoint": r["checkpoint"], "set": r.get("set"),
                                                "epochs": r["epochs"], "deletion": grounding.DELETION,
                                                "maps": got["maps"], "objects": got["objects"]}
        save_results(res, "grounding", key)
        k, own = best_own(got["maps"])
        print(f"{key} on val: best own map {k} hit {own['hit']:.1f}% energy {own['energy']:.1f}%", flush=True)
        m = r["model"].removesuffix("+ground")
        if r["seed"] == 0 and res.get("ground", {}).get(m, {}).get("published") == r["checkpoint"]:
            write_grounding(m, res["grounding"][key], args)


def ground_publish(args) -> None:
    """Seed 0 of a grounding row replaces rsdemo/checkpoints/ucm/<model> when the model's mosaic weight was chosen
    on its own dev runs (ground-dev): the recipe is the dev blocks' choice, and val only reports it. A recipe whose
    weight was carried over from other models ("transfer") replaces it when its val mR is within GROUND_MR_SLACK
    of the committed card's and its best own map points better (more hits and more energy) than the committed
    checkpoint's best own map in rsdemo/results/grounding.json, or when its val mR is higher and its best own map
    meets the grounding goals (GOALS). Then the model's grounding rows are regenerated."""
    from rsdemo import results

    res = load_results()
    table = summary(res)
    stored = {}
    for row in results.rows("grounding"):
        stored.setdefault(row["model"], {})[row["map"]] = row
    for m in ground_models(args):
        g = res.get("ground", {}).get(m, {})
        r = res["runs"].get(f"{m}+ground/s0")
        val = res.get("grounding", {}).get(f"{m}+ground/s0")
        if r is None or val is None or val["checkpoint"] != r["checkpoint"]:
            continue
        old_card = json.loads((CKPT / f"{m}.json").read_text())
        if g.get("published") == r["checkpoint"] and old_card.get("recipe") and not args.force:
            continue
        if "backbone" in (r.get("set") or {}):
            # ucm/<m> names its config's backbone; another one needs its own name and its pip package at run time
            print(f"{m}: seed 0 trained on {r['set']['backbone']}, not the {m} config's backbone: not published as "
                  f"ucm/{m} (the committed checkpoint stays)", flush=True)
            continue
        old_mr, new_mr = old_card["metrics"]["val"]["mr"], r["val"]["mr"]
        old_k, old = best_own(stored.get(f"ucm/{m}", {}))
        new_k, new = best_own(val["maps"])
        # a recipe that grounds better for at most GROUND_MR_SLACK mR, or one that retrieves better while its map
        # still meets the grounding goals (an input lever adopted on the dev blocks)
        ok = "chosen" in g or \
            (new_mr >= old_mr - GROUND_MR_SLACK and new["hit"] > old["hit"] and new["energy"] > old["energy"]) or \
            (new_mr > old_mr and new["hit"] >= GOALS["hit"] and new["energy"] >= GOALS["energy"])
        g["decision"] = {"rule": "dev" if "chosen" in g else "val gate", "old_mr": old_mr, "new_mr": new_mr,
                         "old_map": old_k, "old_hit": old["hit"],
                         "old_energy": old["energy"], "new_map": new_k, "new_hit": new["hit"],
                         "new_energy": new["energy"], "published": ok}
        print(f"{m}: val mR {old_mr:.2f} -> {new_mr:.2f}; best own map {old_k} {old['hit']:.0f}/{old['energy']:.1f} "
              f"-> {new_k} {new['hit']:.0f}/{new['energy']:.1f}: {'publish' if ok else 'keep the committed one'}",
              flush=True)
        if ok and publish_run(m, r, table[f"{m}+ground"], bool(old_card.get("best_ucm_model")), {
                "recipe": f"grounding recipe (scripts/ucm.py ground): --set {_tag(r['set'])}",
                "epochs_chosen_on": "best epoch and mosaic weight on the last 10 train ids of each class (210): "
                                    "dev mR and the grid pointing of the own score map there"
                                    + ("; object mosaics adopted there too (ground-objects: object and scene "
                                       "mosaics of those ids)" if (r.get("set") or {}).get("train.object_mosaics")
                                       else "")}):
            g["published"] = r["checkpoint"]
            write_grounding(m, val, args)
        save_results(res, "ground", m)


def write_grounding(m: str, val: dict, args) -> None:
    """The published checkpoint's rows of rsdemo/results/grounding*.json (and docs/RESULTS.md) from ground_val's
    measurement of the same weights (a byte copy): what `rsdemo eval-explain --real --models ucm/<m> --write`
    writes, without measuring twice."""
    from rsdemo import grounding

    setup = {"split": "val", "seed": 0, "mosaics": 100, "per_object": 4, "images": 21, "image_size": None,
             "object_mosaics": next(iter(val["maps"].values())).get("object_n", 0)}
    cmd = (f"rsdemo eval-explain --real --data ucm:{rel(data_dir(args))} --images {rel(images_dir(args))} "
           f"--multilabels {rel(SHARED / 'ucm_multilabels')} --write")
    maps = {k: val["maps"][k] for k in sorted(val["maps"], key=grounding._order)}   # own maps first (json sorted)
    for p in grounding.write_results({f"ucm/{m}": {"maps": maps, "objects": val["objects"]}}, setup, cmd):
        print(f"wrote {rel(p)}", flush=True)


def _spread(vals: list) -> tuple[float | None, float | None]:
    vals = [v for v in vals if v is not None and v == v]
    if not vals:
        return None, None
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None


def _ground_row(label: str, recipe: str, runs: list[dict], measured: list[dict], own: str) -> dict:
    """One row of the "ucm_grounding" section: retrieval over `runs`, grounding of map `own` over `measured`
    (per-seed measurements of the same runs), Grad-CAM of the same checkpoints beside it."""
    def field(name, key):
        return _spread([g["maps"].get(name, {}).get(key) for g in measured])
    row = {"model": label, "recipe": recipe, "seeds": len(runs), "map": own, "measured": len(measured)}
    row["val_mr"], row["val_mr_sd"] = _spread([r["val"]["mr"] for r in runs])
    row["code_mr"], row["code_mr_sd"] = _spread([(r.get("val_amfmn_code") or {}).get("mr") for r in runs])
    for key in ("hit", "energy", "object_hit", "deletion", "insertion"):
        row[key], row[f"{key}_sd"] = field(own, key)
    row["gc_deletion"], _ = field("baseline_gradcam", "deletion")
    row["gc_insertion"], _ = field("baseline_gradcam", "insertion")
    return row


def _pm(field: str, digits: int = 1) -> list[str]:
    return [f"{{{field}:.{digits}f}} ± {{{field}_sd:.{digits}f}}", f"{{{field}:.{digits}f}}"]


GROUND_COLUMNS = [["model", "{model}"], ["recipe", "{recipe}"], ["seeds (retrieval / maps)", "{seeds} / {measured}"],
                  ["val mR, pessimistic", _pm("val_mr", 2)], ["val mR, AMFMN's code", _pm("code_mr", 2)],
                  ["map", "`{map}`"], ["scene hits %", _pm("hit")], ["scene energy %", _pm("energy")],
                  ["object hits %", _pm("object_hit")],
                  ["deletion % (lower better): map / Grad-CAM", ["{deletion:.1f} / {gc_deletion:.1f}", "{deletion:.1f}"]],
                  ["insertion % (higher better): map / Grad-CAM",
                   ["{insertion:.1f} / {gc_insertion:.1f}", "{insertion:.1f}"]]]
# the goals for each seed model's recipe (AMFMN split, val), checked in the prose under the table
GOALS = {"hit": 85.0, "energy": 50.0, "code_mr": 53.0, "best_code_mr": 56.4, "over_baseline": 3.0}


def recipe_label(st: dict | None) -> str:
    """", mosaic weight 0.5, Lite2, 224 px": what a grounding run's --set changes, for the table."""
    st = st or {}
    out = f", mosaic weight {st.get('train.mosaic_weight', 0):g}"
    if st.get("train.views", 1) > 1:
        out += ", dihedral views"
    if "backbone" in st:
        out += f", {st['backbone'].replace('efficientnet_lite', 'Lite')}"
    if "image_size" in st:
        out += f", {st['image_size']} px"
    if "freeze" in st and "image" not in st["freeze"]:
        out += ", whole backbone trained"
    if st.get("train.object_mosaics"):
        out += ", object mosaics"
    if st.get("text_top"):
        out += f", MiniLM top {st['text_top']} trained"
    if st.get("roam_mosaic"):
        out += ", ROAM's share on mosaics"
    return out


def ground_write(args) -> None:
    """The "ucm_grounding" section of rsdemo/results (and docs/RESULTS.md): each seed model's grounding recipe
    over its seeds beside its module-off row and the plain dual encoder, both measures (retrieval on val by both
    tie rules; grid pointing, object pointing and deletion/insertion of its own score map on val)."""
    from rsdemo import results

    res = load_results()
    measured = res.get("grounding", {})
    by_row: dict[str, list[str]] = {}
    for key, r in res["runs"].items():
        by_row.setdefault(r["model"], []).append(key)
    rows = []
    for m in GROUND_MODELS:
        for row, recipe, own in ((f"{m}+ground", "full", SCORE_MAPS[m]),
                                 (ablation_row(m), f"{MODULE_OFF[m][0]} off", "score")):
            keys = sorted(by_row.get(row, []))
            if not keys:
                continue
            rows.append(_ground_row(f"`{m}`", recipe + recipe_label(res["runs"][keys[0]].get("set")),
                                    [res["runs"][k] for k in keys], [measured[k] for k in keys if k in measured], own))
        # the full recipe's earlier input settings (retired by ground-final when a lever was adopted), all seeds
        earlier: dict[str, list[dict]] = {}
        for name, r in sorted(res.get("superseded", {}).items()):
            if name.startswith(f"{m}+ground/") and r.get("grounding"):    # one row per recipe and epoch count
                earlier.setdefault(recipe_label(r["set"]) + f", {r['epochs']} epochs", []).append(r)
        for label, runs in earlier.items():
            rows.append(_ground_row(f"`{m}`", "full" + label + " (earlier)", runs, [r["grounding"] for r in runs],
                                    SCORE_MAPS[m]))
    ref, ref_map = REFERENCE
    ref_runs = [res["runs"][k] for k in sorted(by_row.get(ref, []))]
    ref_maps = {r["map"]: r for r in results.rows("grounding") if r["model"] == f"ucm/{ref}"}
    if ref_runs:
        rows.append(_ground_row(f"`{ref}` (reference)", "no paper module",
                                ref_runs, [{"maps": ref_maps}] if ref_maps else [], ref_map))
    if not rows:
        print("no grounding runs yet: nothing to write", flush=True)
        return
    before = [
        "`python scripts/ucm.py ground` (per-run numbers: docs/ucm.json). Each seed model's grounding recipe (its "
        "own score map, `score_map`, trained with the mosaic objective where the weight is not 0; see the UCM "
        "section) over its seeds, beside the same recipe with the module its map comes from switched off (the map "
        "is then the pooled score split over positions, `score`) and beside the plain dual encoder (its committed "
        "seed-0 checkpoint's patch-similarity map). Retrieval: val (AMFMN's test set), mean ± sd over seeds. Maps: "
        "every seed's checkpoint measured on val as the grounding section describes (100 scene mosaics, 68 object "
        "mosaics, 21 photos for deletion/insertion against a blurred copy); mean ± sd over the checkpoints "
        "measured; Grad-CAM of the same checkpoints beside the map's deletion/insertion."]
    levers = res.get("levers", {})
    if levers:
        before.append(
            "The maps are the positive part of each model's score split (the positions that add to the score), "
            "chosen on the dev blocks (`python scripts/ucm.py ground-levers`, dev-run checkpoints, "
            f"{GROUND_DEV_MOSAICS} scene mosaics of the held-out train ids): " + "; ".join(
                f"{k}: {v['map']} {v['maps'][v['map'] + '_signed']['hit']:.0f}% hits / "
                f"{v['maps'][v['map'] + '_signed']['energy']:.1f}% energy signed -> {v['maps'][v['map']]['hit']:.0f}% / "
                f"{v['maps'][v['map']]['energy']:.1f}% positive part" for k, v in sorted(levers.items())
                if v["map"] + "_signed" in v["maps"]) + ".")
    tried = {m: res["ground"][m]["inputs"] for m in GROUND_MODELS
             if len(res.get("ground", {}).get(m, {}).get("inputs", {}).get("runs", {})) > 1}
    if tried:
        before.append(
            "Input levers (`python scripts/ucm.py ground-inputs`: " + "; ".join(
                f"{LEVER_TEXT[k]}, `" + " ".join(f"--set {a}={b if isinstance(b, str) else json.dumps(b)}"
                                                 for a, b in v.items()) + "`" for k, v in INPUT_LEVERS.items())
            + "), each tried on the dev blocks against the "
            "same recipe without it; the best is adopted where dev mR rises and the own map loses at most "
            f"{LEVER_HIT_SLACK:g} dev hits (a lever for the maps, {', '.join(sorted(GROUNDING_LEVERS))}: where no "
            f"other is, when the own map's dev hits rise and dev mR drops by at most {GROUND_MR_SLACK:g}): "
            + "; ".join(
                f"`{m}` dev mR {a['runs']['base']['dev_mr']:.2f} / hits {a['runs']['base']['hit']:.0f}% without, "
                + ", ".join(f"{k} {r['dev_mr']:.2f} / {r['hit']:.0f}%"
                            + (f" (best epoch {r['best_epoch']})" if r.get("best_epoch", GROUND_EPOCHS) != GROUND_EPOCHS
                               else "") for k, r in a["runs"].items() if k != "base")
                + f" (adopted: {a.get('adopted') or 'none'})" for m, a in tried.items()) + ".")
    objs = {m: res["ground"][m]["objects"] for m in GROUND_MODELS
            if "base" in res.get("ground", {}).get(m, {}).get("objects", {}).get("runs", {})
            and "objects" in res["ground"][m]["objects"]["runs"]}
    if objs:
        before.append(
            f"Object mosaics (`python scripts/ucm.py ground-objects`: {OBJECT_PER_WORD} mosaics per object word of "
            "the UC Merced multi-labels join the mosaic objective, the word as the caption, its target the one tile "
            "whose photo holds the object, the others from that photo's scene class where the labels allow; a dev "
            "run of the full recipe with them beside one without, both measured on the dev blocks with "
            f"{GROUND_DEV_MOSAICS} scene mosaics and {OBJECT_DEV_PER_WORD} object mosaics per object word; adopted "
            f"when the own map's object hits rise, its scene hits drop by at most {LEVER_HIT_SLACK:g} and dev mR by "
            f"at most {GROUND_MR_SLACK:g}): " + "; ".join(
                f"`{m}` without: dev mR {o['runs']['base']['dev_mr']:.2f}, scene hits {o['runs']['base']['hit']:.0f}%, "
                f"object hits {o['runs']['base']['object_hit']:.0f}%; with: {o['runs']['objects']['dev_mr']:.2f}, "
                f"{o['runs']['objects']['hit']:.0f}%, {o['runs']['objects']['object_hit']:.0f}% "
                f"({'adopted' if o.get('adopted') else 'not adopted'})" for m, o in objs.items()) + ".")
    tta = {m: res["ground"][m]["tta"]["views"] for m in GROUND_MODELS if "tta" in res.get("ground", {}).get(m, {})}
    if tta:
        before.append(
            "Test-time dihedral averaging (`python scripts/ucm.py ground-tta`: each dev image's full score averaged "
            "over its 8 rotations and mirrors; measured with the base dev runs, part of no recipe): " + "; ".join(
                f"`{m}` dev mR {v['none']['dev_mr']:.2f} -> {v['all8']['dev_mr']:.2f} "
                f"({v['none']['code_mr']:.2f} -> {v['all8']['code_mr']:.2f} by AMFMN's code)" for m, v in tta.items())
            + ".")
    blocks = [(m, b, v) for m in GROUND_MODELS
              for b, v in sorted(res.get("ground", {}).get(m, {}).get("inputs", {}).get("blocks", {}).items())
              if "base" in v and len(v) > 1]
    if blocks:
        before.append(
            "The adopted lever on a second dev block (`python scripts/ucm.py ground-blocks`: ids 10b to 10b+9 of "
            "each class held out instead of 70-79; dev mR only, one seed; reported, not a choice): " + "; ".join(
                f"`{m}` ids {10 * int(b)}-{10 * int(b) + 9}: " + ", ".join(
                    f"{k} {r['dev_mr']:.2f}" for k, r in v.items()) for m, b, v in blocks) + ".")
    full = {r["model"]: r for r in rows if r["recipe"].startswith("full") and not r["recipe"].endswith("(earlier)")}
    base = next((r for r in rows if r["model"].endswith("(reference)")), None)
    notes = []
    for name, r in full.items():
        off = next((o for o in rows if o["model"] == name and not o["recipe"].startswith("full")), None)
        got = []
        for key, goal, unit in (("hit", GOALS["hit"], "% hits"), ("energy", GOALS["energy"], "% energy"),
                                ("code_mr", GOALS["code_mr"], " mR (AMFMN's code)")):
            if r.get(key) is not None:
                got.append(f"{r[key]:.1f}{unit} ({r[key] - goal:+.1f} vs the goal {goal:g})")
        if base and base.get("code_mr") is not None and r.get("code_mr") is not None:
            got.append(f"{r['code_mr'] - base['code_mr']:+.2f} mR over the frozen-feature baseline (goal "
                       f"+{GOALS['over_baseline']:g})")
        if base and base.get("hit") is not None and r.get("hit") is not None:
            got.append(f"map {r['hit'] - base['hit']:+.1f} hits vs the dual encoder's {ref_map}")
        if r.get("deletion") is not None and r.get("gc_deletion") is not None:
            beats = r["deletion"] < r["gc_deletion"] and r["insertion"] > r["gc_insertion"]
            got.append(f"{'beats' if beats else 'does not beat'} Grad-CAM on both deletion and insertion")
        same = off and off["recipe"].split(",", 1)[1:] == r["recipe"].split(",", 1)[1:]
        if off and not same:
            got.append(f"module-off row not retrained with this recipe ({off['recipe']}): not compared")
        elif off and off.get("hit") is not None and r.get("hit") is not None:
            got.append(f"module off: {off['hit'] - r['hit']:+.1f} hits, {off['energy'] - r['energy']:+.1f} energy, "
                       f"{off['val_mr'] - r['val_mr']:+.2f} val mR")
        notes.append(f"{name}: " + "; ".join(got))
    after = ["Against the goals of issue 19: " + ". ".join(notes) + "." if notes else ""]
    section = {"title": "Seed models on real photos: grounding recipes, their ablations, the dual encoder",
               "before": before, "columns": GROUND_COLUMNS, "rows": rows, "after": [a for a in after if a]}
    results.save("ucm_grounding", section)
    print(results.markdown(section))


def ground_levers(args) -> None:
    """Read-out levers of the own score maps, chosen on the dev blocks: each grounding dev run's checkpoint (trained
    on the other 1,470 train ids) measured with its signed score split beside the shown positive part
    (grounding.evaluate_grounding(signed=True): GROUND_DEV_MOSAICS scene mosaics of the dev ids), kept in
    docs/ucm.json ("levers")."""
    res = load_results()
    for m in ground_models(args):
        for ck in sorted(RUNS.glob(f"devground-{m}-w=*/best.safetensors")):
            tag = ck.parent.name.removeprefix(f"devground-{m}-")
            key = f"{m} {tag}"
            if key in res.get("levers", {}) and not args.force:
                continue
            maps = grounding_of(ck, args, "dev", mosaics=GROUND_DEV_MOSAICS, images=0, signed=True)["maps"]
            own = SCORE_MAPS[m]
            res.setdefault("levers", {})[key] = {
                "checkpoint": rel(ck), "map": own,
                "maps": {k: {"hit": v["hit"], "energy": v["energy"]} for k, v in maps.items()}}
            save_results(res, "levers", key)
            pos, sig = maps[own], maps.get(f"{own}_signed", {})
            print(f"{key}: {own} positive part {pos['hit']:.0f}% hits / {pos['energy']:.1f}% energy; signed "
                  f"{sig.get('hit', float('nan')):.0f}% / {sig.get('energy', float('nan')):.1f}%", flush=True)


def ground(args) -> None:
    for step in (ground_dev, ground_levers, ground_inputs, ground_final, ground_ablate, ground_val, ground_publish,
                 ground_write):
        step(args)


def _split_cols(split: str, label: str) -> list:
    i2t = "/".join(f"{{{split}_i2t_r{k}:.2f}}" for k in (1, 5, 10))
    t2i = "/".join(f"{{{split}_t2i_r{k}:.2f}}" for k in (1, 5, 10))
    return [[f"{label}i2t R@1/5/10", i2t], ["t2i R@1/5/10", t2i],
            ["mR ± sd", [f"**{{{split}_mr:.2f}}** ± {{{split}_mr_sd:.2f}}", f"{{{split}_mr:.2f}}"]]]


# the table's columns as templates over the rows write() stores (rsdemo.results renders them)
COLUMNS = [["model", "{label}"], ["split", "{split}"], *_split_cols("val", ""), *_split_cols("test", "test ids: "),
           ["params (trained)", ["{params_m:.1f}M ({trainable_m:.2f}M)", "{params_m:.1f}M", "{params_unknown}"]],
           ["epochs, min/run", ["{epochs}, {train_minutes:.1f}", "{epochs_note}"]],
           ["AMFMN split, mR by AMFMN's ranking code", "{val_code_mr:.2f} ± {val_code_mr_sd:.2f}"],
           ["AMFMN split, mR with optimistic ties", "{val_opt_mr:.2f}"]]


def write(args) -> dict:
    """The "ucm" results section (rsdemo/results/ucm.json, then docs/RESULTS.md) from docs/ucm.json's runs."""
    from rsdemo import results

    res = load_results()
    table = summary(res)
    best = best_model(res)
    before = [
        "`python scripts/ucm.py all` (per-run numbers: docs/ucm.json; checkpoints and cards: rsdemo/checkpoints/ucm/). "
        "2,100 real aerial images (UC Merced Land Use), 5 captions each. **AMFMN split**: train = the 1,680 "
        "`train` ids, test = the 210 `val` ids (AMFMN's test set); **test ids**: the 210 `test` ids, a second "
        "column. Each trained row: mean ± sample standard deviation of mR over seeds "
        f"{', '.join(map(str, SEEDS))} (recalls are seed means). Epoch counts were chosen on per-class blocks of "
        "train ids (the last 10 of each class held out), never on val or test; the last checkpoint is used. "
        "**Ties are pessimistic**: a wrong candidate scoring exactly the positive's score counts as ranked above it "
        "(UCM repeats captions heavily, so optimistic or order-dependent tie breaking would move i2t R@1). "
        "Identical caption strings of other images are masked out of the negatives in training "
        "(rsdemo.losses.duplicate_mask). Scene labels (labels.csv) feed the label-aware losses. Times: "
        "training minutes per run on this machine's CPU (2 cores, shared), frozen features cached once."]
    rows = []
    order = [m for base in list(PRETRAINED) + list(RANDOM_INIT) for m in (base, f"{base}+ground") if m in table]
    for m in order:
        row = table[m]
        base = m.removesuffix("+ground")
        what = {**PRETRAINED, **RANDOM_INIT}[base][0]
        if m != base:
            g = res.get("ground", {}).get(base, {})
            w = (row["set"] or {}).get("train.mosaic_weight", 0)
            how = ("chosen on the dev blocks" if g.get("chosen") else
                   "no dev runs of its own: the weight fixed beforehand, its old recipe's dev epochs")
            what += (" with its score map read out (`score_map`; the dev blocks chose mosaic weight 0: the old "
                     "recipe's weights)" if not w else
                     f" + its score map trained on 2x2 mosaics (mosaic weight {w:g}, {how}; `python scripts/ucm.py "
                     "ground`)")
            row = dict(row, set={})    # the recipe is said above
        mark = " (best by dev mR; rsdemo/checkpoints/ucm)" if m == best else ""
        if row["set"]:
            what += f" (`--set {_tag(row['set'])}`, chosen on the dev blocks)"
        if len(row["seeds"]) < len(SEEDS):
            what += f" ({len(row['seeds'])} seed{'s' if len(row['seeds']) > 1 else ''} only, for time)"
        out = {"model": m, "kind": "trained", "best": m == best, "label": f"`{m}`{mark}: {what}", "split": "AMFMN",
               "seeds": row["seeds"], "params_m": row["params"] / 1e6 if row["params"] else None,
               "params_unknown": None if row["params"] else "?",
               "trainable_m": row["trainable"] / 1e6 if row["params"] and row.get("trainable") else None,
               "epochs": row["epochs"], "train_minutes": row["train_minutes"],
               "val_code_mr": row.get("val_code_mr"),
               "val_code_mr_sd": row["val_code_mr_sd"] if row.get("val_code_mr") is not None else None,
               "val_opt_mr": row.get("val_opt_mr")}
        out.update({f"{sp}_{k}": row[f"{sp}_{k}"] for sp in ("val", "test") for k in KEYS})
        out.update({f"{sp}_mr_sd": row[f"{sp}_mr_sd"] for sp in ("val", "test")})
        rows.append(out)
    for m, z in sorted(res["zeroshot"].items()):
        out = {"model": m, "kind": "zero-shot",
               "label": f"`{m}` trained on the synthetic world only, zero-shot (domain gap)", "split": "AMFMN",
               "params_m": z["params"] / 1e6 if z.get("params") else None,
               "params_unknown": None if z.get("params") else "?", "epochs_note": "-"}
        out.update({f"{sp}_{k}": z[sp][k] for sp in ("val", "test") for k in KEYS})
        rows.append(out)
    for name, split, i2t, t2i, mr, src in PUBLISHED:
        out = {"model": name, "kind": "published", "source": src, "label": f"published: {name} ({src})",
               "split": split, "val_mr": mr}
        out.update(zip([f"val_i2t_r{k}" for k in (1, 5, 10)], map(float, i2t.split("/"))))
        out.update(zip([f"val_t2i_r{k}" for k in (1, 5, 10)], map(float, t2i.split("/"))))
        rows.append(out)
    lines = []  # the prose after the table
    if table:
        ours = {m: table[m]["val_mr"] for m in order}   # the rows shown (module-off rows: ucm_grounding)
        top = max(ours, key=ours.get)
        am = ours.get("amfmn-lite0")
        codes = {m: table[m]["val_code_mr"] for m in order if table[m].get("val_code_mr") is not None}
        am_code = codes.get("amfmn-lite0")
        r10 = [table[m]["val_t2i_r10"] for m in order if "-lite0" in m]
        lines.append(
            f"On the AMFMN split: our AMFMN (`amfmn-lite0`) {'%.2f' % am if am is not None else 'n/a'} mR vs the "
            f"published AMFMN-fusion 46.08 ({'%+.2f' % (am - 46.08) if am is not None else 'n/a'}); the best row "
            f"by val mR (`{top}`, {ours[top]:.2f}) vs RemoteCLIP ViT-B/32's 56.36 ({ours[top] - 56.36:+.2f}; "
            f"RemoteCLIP's own split). The best checkpoint is chosen by dev-block mR (`{best}`), not by val. "
            "A perfect model is capped at mR 78.1 on the AMFMN split: the 1,050 captions hold only 391 distinct "
            "strings, and an identical string of another image ties exactly with the image's own caption, which the "
            "pessimistic rule counts against the image query. That is where most of the distance to the published "
            "i2t R@1 lies. The last two columns score the same checkpoints with AMFMN's released ranking code "
            "(numpy argsort: tied captions ordered by position, how the published rows were most likely computed)"
            + (f", where `amfmn-lite0` reaches {am_code:.2f} ({am_code - 46.08:+.2f} vs AMFMN-fusion) and the best "
               f"row {max(codes.values()):.2f} ({max(codes.values()) - 56.36:+.2f} vs RemoteCLIP)"
               if am_code is not None else "") +
            ", and with ties broken in the model's favour (an upper bound). "
            + (f"Frozen ImageNet/sentence features put nearly every caption's image class right (t2i R@10 of "
               f"{min(r10):.0f}-{max(r10):.0f} for the pretrained rows) but separate images within a class little "
               if r10 else "") +
            "(t2i R@1 near the 10% of a random pick among a class's 10 test images). Rows marked `tune_top=true` "
            "also train Lite0's layers after the stride-16 map (blocks 5-6 and the head conv, 2.7M weights, at 0.1x "
            "the heads' rate, over cached stride-16 maps; BatchNorm statistics stay ImageNet's), where the dev "
            "blocks preferred it to heads only; the baseline stays frozen by definition. Closing the rest of the gap "
            "needs the whole backbones fine-tuned on RS pairs with augmentation (not affordable on 2 CPU cores in "
            "this budget; no GPU was lent to this task) or RS-pretrained weights.")
    devs = []
    for m, d in res["dev"].items():
        if m not in table:
            continue
        txt = f"`{m}` epoch {d['best_epoch']} (dev mR {d['dev_mr']:.2f})"
        if d.get("grid"):
            txt += "; also tried " + ", ".join(f"{t}: {g['dev_mr']:.2f}" for t, g in d["grid"].items())
            txt += f" (base config: {d['base']['dev_mr']:.2f})"
        if d.get("note"):
            txt += f"; {d['note']}"
        devs.append(txt)
    if devs:
        lines += ["", "Dev-block choices (train on 1,470 train ids, score the held-out 210; heads-only configs tried "
                  "up to 4 epochs, AMFMN's and the dual encoders' up to 12, the tune_top variants up to 6, CCNet's 4; "
                  "the best epoch is kept): " + "; ".join(devs) + "."]
    grounds = []
    for m, g in res.get("ground", {}).items():
        if g.get("dev"):
            txt = f"`{m}`: " + ", ".join(
                f"mosaic weight {d['set'].get('train.mosaic_weight', 0):g}: dev mR {d['dev_mr']:.2f}, {SCORE_MAPS[m]} "
                f"{d['hit']:.0f}% hits / {d['energy']:.1f}% energy (best epoch {d['best_epoch']})"
                for d in g["dev"].values())
            if g.get("chosen"):
                txt += f"; chosen {g['chosen']}"
        elif g.get("transfer"):
            tr = g["transfer"]
            txt = (f"`{m}`: no dev runs of its own (CPU time): mosaic weight {tr['weight']:g} fixed beforehand (not "
                   f"a dev choice), {tr['epochs']} epochs as its old recipe's dev run")
        else:
            continue
        dec = g.get("decision")
        if dec:
            txt += (f"; publish step, seed 0 on val as measured then: mR {dec['old_mr']:.2f} -> {dec['new_mr']:.2f}, "
                    f"best own map {dec['old_map']} "
                    f"{dec['old_hit']:.0f}%/{dec['old_energy']:.1f}% -> {dec['new_map']} {dec['new_hit']:.0f}%/"
                    f"{dec['new_energy']:.1f}% (hits/energy): "
                    + (f"published as rsdemo/checkpoints/ucm/{m}" + (" (a recipe chosen on its own dev runs: val "
                                                                      "reports it, it is not a gate)"
                                                                      if dec.get("rule") == "dev" else "")
                       if dec["published"] else "not published"))
        grounds.append(txt)
    if grounds:
        lines += ["", f"Grounding recipes (`python scripts/ucm.py ground`; dev blocks: {GROUND_EPOCHS} epochs, the grid "
                  f"pointing game on {GROUND_DEV_MOSAICS} scene mosaics of the held-out dev ids; a weight is chosen "
                  f"by dev hits among those within {GROUND_MR_SLACK:g} dev mR of weight 0, which is the old recipe "
                  "with its score map read out): " + "; ".join(grounds) + "."]
    cards = sorted(CKPT.glob("*.json"))
    if cards:
        lines += ["", "Committed checkpoints (seed 0 of each row; the *-lite0 files hold the heads only, the frozen "
                  "Lite0/MiniLM weights come from their pip packages at load). `rsdemo eval --checkpoint ucm/M --data "
                  "ucm:../shared/data/ucm_captions --images ../shared/data/ucm_images --split val` prints the card's "
                  "numbers (tests/test_ucm.py checks the best one):", ""]
        for c in cards:
            card = json.loads(c.read_text())
            size = c.with_suffix(".safetensors").stat().st_size / 2**20
            lines.append(f"- `rsdemo/checkpoints/ucm/{c.stem}.safetensors` ({size:.1f} MB"
                         f"{', the best model by dev-block mR' if card.get('best_ucm_model') else ''}): "
                         f"val mR {card['metrics']['val']['mr']:.2f}, test mR {card['metrics']['test']['mr']:.2f}")
    section = {"title": "UCM-captions (real images)", "before": before, "columns": COLUMNS, "rows": rows,
               "after": ["\n".join(lines)] if lines else []}
    results.save("ucm", section)
    print(results.markdown(section))
    return section


def ground_blocks(args) -> None:
    """The adopted input lever against the recipe without it on a second dev block (--block, default ids 60-69 of
    each class; training on the other train ids): is the dev choice more than one block's noise? Dev mR only (no
    grid pointing: CPU time); kept in docs/ucm.json (ground.<model>.inputs.blocks), reported, not a choice."""
    res = load_results()
    for m in ground_models(args):
        a = res.get("ground", {}).get(m, {}).get("inputs", {})
        base = ground_recipe(res, m, inputs=False)
        if not a.get("adopted") or base is None:
            print(f"{m}: no adopted input lever, skipped", flush=True)
            continue
        got = a.setdefault("blocks", {}).setdefault(str(args.block), {})
        todo = {tag: variant for tag, variant in (("base", base[1]),
                                                  (a["adopted"], {**base[1], **INPUT_LEVERS[a["adopted"]]}))
                if args.force or got.get(tag, {}).get("set") != variant}

        def run(tag: str) -> Path:
            out = RUNS / f"devblock{args.block}-{m}-{tag}"
            # the block is part of the recipe: finished_run never mistakes these runs for the default block's
            return dev_train(m, out, {"set": todo[tag], "epochs": GROUND_EPOCHS, "block": args.block}, args)

        make_dev(args, args.block)            # once, before the two threads read it
        with ThreadPoolExecutor(2) as pool:   # the two runs side by side, one thread each
            outs = dict(zip(todo, pool.map(run, todo)))
        for tag, variant in todo.items():
            out = outs[tag]
            card = json.loads((out / "best.json").read_text())
            got[tag] = {"set": variant, "best_epoch": card["best_epoch"], "dev_mr": card["metrics"]["val"]["mr"],
                        "history": json.loads((out / "last.json").read_text()).get("history")}
            save_results(res, "ground", m)
            print(f"{m} block {args.block} {tag}: best dev epoch {card['best_epoch']} (dev mR "
                  f"{got[tag]['dev_mr']:.2f})", flush=True)


def base_dev_dir(res: dict, m: str) -> Path | None:
    """The dev run of the model's grounding recipe without an input lever (ground-inputs' "base")."""
    base = res.get("ground", {}).get(m, {}).get("inputs", {}).get("runs", {}).get("base")
    src = (base or {}).get("from", "")
    if src.startswith("ground-dev"):
        return RUNS / f"devground-{m}-{src.split()[-1]}"
    out, got = RUNS / f"devinputs-{m}-base", ground_recipe(res, m, inputs=False)
    recipe = out / "recipe.json"
    # a finished base run ground-inputs has not read yet counts when it was trained with today's recipe
    if base or (got and recipe.is_file() and json.loads(recipe.read_text()) == {"set": got[1], "epochs": GROUND_EPOCHS}):
        return out
    return None


TTA_VIEWS = {"flip": (0, 4), "rot4": (0, 1, 2, 3), "all8": tuple(range(8))}


def ground_tta(args) -> None:
    """Test-time dihedral averaging (issue 19's last lever), on the dev blocks with each model's base dev run: the
    full score of every dev image averaged over the views of TTA_VIEWS, against the photo as it is; both tie rules.
    Kept in docs/ucm.json (ground.<model>.tta); measured, not adopted into any recipe by itself."""
    import numpy as np
    import torch

    from rsdemo import features
    from rsdemo.checkpoint import load_model
    from rsdemo.data.formats import open_dataset
    from rsdemo.evaluate import recall, same_text_same_score

    torch.set_num_threads(1)
    res = load_results()
    # the dev blocks as the dev runs scored them (the same file, so tied scores keep their order for AMFMN's code)
    ds = open_dataset(f"ucm:{make_dev(args)}", images=images_dir(args)).split("val")
    texts, owner = ds.captions()
    for m in ground_models(args):
        run = base_dev_dir(res, m)
        if run is None or not (run / "best.safetensors").is_file():
            print(f"{m}: no base dev run (python scripts/ucm.py ground-inputs first), skipped", flush=True)
            continue
        model = load_model(str(run / "best.safetensors")).eval()
        maps = features.image_features(model, ds, views=8)
        words = features.WordCache(model, texts).batch(texts)
        n = len(ds)
        with torch.no_grad():
            per = [torch.cat([model.score(features.batch_images(maps, [v * n + j for j in range(a, min(a + 64, n))]),
                                          words).float() for a in range(0, n, 64)]).numpy() for v in range(8)]
        out = {}
        for name, views in {"none": (0,), **TTA_VIEWS}.items():
            sim = same_text_same_score(np.mean([per[v] for v in views], 0), texts)
            out[name] = {"dev_mr": recall(sim, owner)["mr"], "code_mr": amfmn_code_recall(sim, owner)["mr"]}
        res["ground"][m]["tta"] = {"run": rel(run), "views": out}
        save_results(res, "ground", m)
        print(f"{m} ({rel(run)}): " + ", ".join(f"{k} {v['dev_mr']:.2f} ({v['code_mr']:.2f} by AMFMN's code)"
                                                for k, v in out.items()), flush=True)


def ground_objects(args) -> None:
    """The object lever on the dev blocks (see OBJECT_PER_WORD): per model, a dev run of its full grounding recipe
    with object mosaics beside the recipe's own dev run (read where it finished), both measured on the dev blocks
    with scene and object mosaics; kept in docs/ucm.json (ground.<model>.objects), the choice by the rule there.
    A finished dev run of the same recipe is read, not retrained."""
    from rsdemo.data.labels import load_multilabels

    res = load_results()
    labels = load_multilabels(MULTILABELS)
    for m in ground_models(args):
        base = ground_recipe(res, m, objects=False)
        if base is None:
            print(f"{m}: no grounding recipe yet, skipped", flush=True)
            continue
        o = res["ground"][m].setdefault("objects", {})
        runs = o.setdefault("runs", {})
        for tag, variant in (("base", base[1]), ("objects", {**base[1], **object_lever()})):
            old = runs.get(tag)
            if old and old.get("set") == variant and not args.force:
                continue
            t = time.perf_counter()
            out = dev_train(m, RUNS / f"devobjects-{m}-{tag}", {"set": variant, "epochs": GROUND_EPOCHS}, args)
            card = json.loads((out / "best.json").read_text())
            got = grounding_of(out / "best.safetensors", args, "dev", labels=labels, mosaics=GROUND_DEV_MOSAICS,
                               images=0, per_object=OBJECT_DEV_PER_WORD)
            own = got["maps"][SCORE_MAPS[m]]
            runs[tag] = {"set": variant, "run": rel(out), "best_epoch": card["best_epoch"],
                         "dev_mr": card["metrics"]["val"]["mr"], "hit": own["hit"], "energy": own["energy"],
                         "object_hit": own["object_hit"], "object_energy": own["object_energy"],
                         "object_ap": got["objects"]["ap"] if got["objects"] else None,
                         "seconds": round(time.perf_counter() - t)}
            res = _merge_ground(res, m, "objects", o)
            print(f"{m} objects {tag}: dev mR {runs[tag]['dev_mr']:.2f}; {SCORE_MAPS[m]} scene hits "
                  f"{own['hit']:.1f}%, object hits {own['object_hit']:.1f}%", flush=True)
        b, x = runs["base"], runs["objects"]
        o["adopted"] = bool(x["object_hit"] > b["object_hit"] and x["hit"] >= b["hit"] - LEVER_HIT_SLACK
                            and x["dev_mr"] >= b["dev_mr"] - GROUND_MR_SLACK)
        res = _merge_ground(res, m, "objects", o)
        print(f"{m}: object mosaics {'adopted' if o['adopted'] else 'not adopted'}", flush=True)


def _merge_ground(res: dict, m: str, key: str, value) -> dict:
    """res with ground.<m>.<key> = value saved, on top of docs/ucm.json as it is now (another step side by side may
    have saved its own entries meanwhile)."""
    now = load_results()
    now.setdefault("ground", {}).setdefault(m, {})[key] = value
    save_results(now, "ground", m)
    return now


# the command line's steps, in the order `all` runs the first six
STEPS = {"dev": dev, "final": final, "argsort": argsort_step, "zeroshot": zeroshot, "publish": publish,
         "write": write, "ground": ground, "ground-dev": ground_dev, "ground-levers": ground_levers,
         "ground-inputs": ground_inputs, "ground-final": ground_final, "ground-ablate": ground_ablate,
         "ground-val": ground_val, "ground-publish": ground_publish, "ground-write": ground_write,
         "ground-tta": ground_tta, "ground-blocks": ground_blocks, "ground-objects": ground_objects}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["all", *STEPS])
    p.add_argument("--data", help="UCM-captions annotation folder (default ../shared/data/ucm_captions)")
    p.add_argument("--images", help="UCM image folder (default ../shared/data/ucm_images)")
    p.add_argument("--models", nargs="+", help="only these models (default: all)")
    p.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds per model (default 3)")
    p.add_argument("--seed", type=int, choices=SEEDS, help="ground-final, ground-ablate: only this seed (two processes side by side)")
    p.add_argument("--ablation-seeds", type=int, default=1, help="seeds per module-off row (default 1: CPU time)")
    p.add_argument("--force", action="store_true", help="redo finished runs")
    p.add_argument("--weights", nargs="+", type=float, choices=GROUND_WEIGHTS, metavar="W",
                   help=f"ground-dev: only these mosaic weights (of {', '.join(f'{w:g}' for w in GROUND_WEIGHTS)}; "
                        "two processes side by side); the choice waits until every weight has its run")
    p.add_argument("--levers", nargs="+", choices=sorted(INPUT_LEVERS), help="ground-inputs: only these levers")
    p.add_argument("--block", type=int, default=6, choices=range(8), metavar="0-7",
                   help="ground-blocks: the second dev block, ids 10*B .. 10*B+9 of each class (default 6)")
    p.add_argument("--ground-weight", type=float, help="ground-final for a model without grounding dev runs: this "
                   "mosaic weight (chosen on other models' dev blocks) and its old recipe's dev epochs")
    args = p.parse_args(argv)
    for s in list(STEPS)[:6] if args.step == "all" else [args.step]:
        STEPS[s](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
