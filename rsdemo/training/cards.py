"""Model cards of a training run: what was trained on what, how, by which code (card()), and the metrics of the
saved files themselves (card_metrics: evaluated from the fp16 .safetensors, so `rsdemo eval` reproduces them)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch

from ..version import __version__
from ..checkpoint import load, write_card
from ..data.dataset import CaptionDataset
from ..evaluate import evaluate_model
from ..files import file_sha256
from ..kernels import kernel_setting


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"rsdemo {__version__}" + (f" ({rev})" if rev else "")


def card(a, model, opts, batches, eval_split: str, n_eval: int, epochs: int, bs: int, lr: float, world: int,
         dev) -> dict:
    """The card fields every checkpoint of the run shares (a: the run's TrainArgs)."""
    return {"model": a.model, "arch": model.arch, "description": opts.description,
            "config": model.config.as_dict(), "train_settings": opts.train.as_dict(), "data": a.data,
            "train_split": "train", "eval_split": eval_split,
            "train_images": len(batches.ds), "train_pairs": len(batches.pairs), "eval_images": n_eval,
            "epochs": epochs, "batch_size": bs, "lr": lr, "seed": a.seed, "world_size": world,
            "params": sum(p.numel() for p in model.parameters()), "device": str(dev), "cpus": os.cpu_count(),
            "torch": torch.__version__, "code_version": code_version(),
            # the float kernels that wrote the card: there its numbers reproduce exactly (docs/REPRODUCIBILITY.md)
            "kernels": kernel_setting(),
            # frozen encoders: time to compute (or read back) their cached outputs, not in train_seconds
            **({"feature_cache_seconds": batches.cache_seconds} if batches.cache_seconds is not None else {}),
            **({"init": {"checkpoint": str(a.init), "sha256": file_sha256(a.init)}} if a.init else {}),
            "command": "rsdemo train " + " ".join(cli_args(a, epochs, bs, lr))}


def card_metrics(path: Path, ds: CaptionDataset, eval_split: str) -> dict:
    """Evaluates a saved checkpoint on the eval split and on test, and writes those metrics into its card."""
    model = load(path)
    metrics = {}
    for split in dict.fromkeys([eval_split, "test"]):
        part = ds.split(split)
        if len(part):
            metrics[split] = evaluate_model(model, part, batch_size=64)
    out = {**model.card, "metrics": metrics}
    write_card(path, out)
    return out


def cli_args(a, epochs, bs, lr) -> list[str]:
    args = ["--model", a.model, "--data", a.data, "--epochs", str(epochs), "--batch-size", str(bs),
            "--lr", str(lr), "--seed", str(a.seed)]
    if a.images:
        args += ["--images", a.images]
    for k, v in (a.overrides or {}).items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    if a.init:
        args += ["--init", str(a.init)]
    return args
