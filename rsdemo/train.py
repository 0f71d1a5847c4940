"""Training engine for every registered model: one loop, the model supplies its loss.

- Data: the train split's (image, caption) pairs, every caption once per epoch; images decoded and resized once
  into an in-memory uint8 cache (RS tiles are small; decoding every epoch would dominate on CPU). A model whose
  config freezes its encoders ("freeze": ["image", "text"]) is fed their cached outputs instead (rsdemo.features:
  computed once per dataset and encoder, kept on disk), so only its heads run each step.
- Determinism: the epoch's pair order comes from a generator seeded by (seed, epoch), so a run resumed from a
  mid-epoch checkpoint replays exactly the batches the uninterrupted run would have seen.
- Checkpoints in OUT/: last.state.pt (model + optimizer + scheduler + position, every `save_every` steps and at
  each epoch end, loaded with weights_only=True), best.safetensors / last.safetensors with their model cards.
  Every write is atomic (rsdemo.checkpoint.atomic_write).
- AMP (bf16 autocast) on CUDA, gradient clipping, step or cosine LR schedule, periodic evaluation with
  rsdemo.evaluate, DDP under `torchrun --nproc_per_node=N` (nccl on CUDA, gloo on CPU).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .checkpoint import atomic_write, save
from .data.dataset import CaptionDataset
from .data.formats import open_dataset
from .data.transforms import norm_stats
from .evaluate import evaluate_model
from .models.factory import create_model
from .models.registry import model_config


@dataclass
class TrainArgs:
    model: str
    data: str = "synthetic"
    images: str | None = None
    out: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str | None = None
    resume: bool = False
    eval_split: str | None = None     # default: val if the data has one, else test
    eval_every: int = 1               # epochs
    save_every: int = 50              # steps between resumable checkpoints
    max_minutes: float | None = None  # stop cleanly (after a checkpoint) once over this budget
    overrides: dict = field(default_factory=dict)
    progress: bool = True
    half: bool = True                 # best/last .safetensors in fp16 (the resumable state stays fp32)


class ImageCache:
    """Every image of a split decoded once, resized to the model's input size, kept as uint8."""

    def __init__(self, ds: CaptionDataset, size: int, norm: str, progress: bool = False):
        from PIL import Image

        from .data.dataset import load_rgb

        self.data = torch.empty(len(ds), 3, size, size, dtype=torch.uint8)
        it = range(len(ds))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="images", unit="img", leave=False)
        for i in it:
            im = load_rgb(ds.image_path(i))
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            self.data[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        mean, std = norm_stats(norm)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def batch(self, idx) -> torch.Tensor:
        return (self.data[idx].float() / 255 - self.mean) / self.std


def _dist():
    """(rank, world) under torchrun, initialising the process group once; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def code_version() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"rsdemo {__version__}" + (f" ({rev})" if rev else "")


def _optimizer(model, tcfg: dict, lr: float):
    # pretrained layers that train (a model's "tune_top") move at a fraction of the heads' rate
    scale = float(tcfg.get("backbone_lr_scale", 0.1))
    tuning = getattr(model, "tune_top", False)
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    heads = [p for k, p in named if not (tuning and k.startswith("backbone."))]
    tuned = [p for k, p in named if tuning and k.startswith("backbone.")]
    params = [{"params": heads}] + ([{"params": tuned, "lr": lr * scale}] if tuned else [])
    if tcfg.get("optimizer", "adam") == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=float(tcfg.get("weight_decay", 0.1)))
    return torch.optim.Adam(params, lr=lr, weight_decay=float(tcfg.get("weight_decay", 0.0)))


def _schedule(opt, tcfg: dict, epochs: int, steps_per_epoch: int):
    """Per-step LambdaLR: 'step' (x gamma every step_epochs epochs, AMFMN's) or 'cosine' with linear warmup."""
    total = max(1, epochs * steps_per_epoch)
    if tcfg.get("schedule", "step") == "cosine":
        warm = int(tcfg.get("warmup_steps", min(100, total // 10)))

        def f(step):
            if step < warm:
                return (step + 1) / max(1, warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    else:
        every, gamma = int(tcfg.get("step_epochs", 20)), float(tcfg.get("gamma", 0.7))

        def f(step):
            return gamma ** ((step // steps_per_epoch) // every)
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _order(n_pairs: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n_pairs, generator=g)


def train(a: TrainArgs) -> dict:
    """Trains, evaluates each `eval_every` epochs, writes checkpoints and cards; returns the final card."""
    rank, world = _dist()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    out = Path(a.out or f"runs/{a.model}")

    cfg = model_config(a.model)
    overrides = dict(a.overrides or {})
    tcfg = {**cfg.get("train", {}), **overrides.pop("train", {})}
    epochs = int(a.epochs or tcfg.get("epochs", 10))
    bs = int(a.batch_size or tcfg.get("batch_size", 64))
    lr = float(a.lr or tcfg.get("lr", 2e-4))

    ds = open_dataset(a.data, images=a.images)
    train_ds = ds.split("train")
    if not len(train_ds):
        raise ValueError(f"{a.data}: no 'train' split (splits: {ds.split_counts()})")
    eval_split = a.eval_split or ("val" if "val" in ds.split_counts() else "test")
    eval_ds = ds.split(eval_split)

    vocab = None
    if cfg.get("arch") != "clip":  # word-level text encoders get a vocabulary of the training captions
        from .data.text import Vocab
        vocab = Vocab.build(c for r in train_ds.records for c in r.captions)
    from .models.factory import build, merge
    known = sorted({r.label for r in train_ds.records if r.label})
    if known:  # label-aware modules (LSD, CD, STL) get the training data's scene classes
        overrides.setdefault("classes", known)
    model = build(merge(cfg, overrides), a.model, vocab=vocab).to(device)

    size, norm = int(model.config.get("image_size", 256)), model.config.get("normalize", "imagenet")
    from . import features
    freeze = features.frozen(model)
    t_cache = time.perf_counter()
    views = int(tcfg.get("views", 1))
    if views > 1 and "image" not in freeze:
        raise ValueError("train.views needs a frozen image backbone (the views' features are cached)")
    if "image" in freeze:
        maps = features.image_features(model, train_ds, a.progress and rank == 0, views=views)

        def batch_images(idx):
            return features.batch_images(maps, idx)
    else:
        cache = ImageCache(train_ds, size, norm, a.progress and rank == 0)

        def batch_images(idx):
            return cache.batch(idx).to(device)
    words = (features.WordCache(model, [c for r in train_ds.records for c in r.captions], a.progress and rank == 0)
             if "text" in freeze else None)
    cache_seconds = round(time.perf_counter() - t_cache, 1) if freeze else None
    pairs = [(i, c) for i, r in enumerate(train_ds.records) for c in r.captions]
    labels = [r.label for r in train_ds.records]
    if views > 1:  # a pair may take any view unless its caption states an orientation (then view 0 only)
        from .data.transforms import oriented
        n_views = torch.tensor([1 if oriented(c) else views for _, c in pairs])
    steps_per_epoch = max(1, len(pairs) // bs)  # drop the last partial batch: every step sees bs pairs

    opt = _optimizer(model, tcfg, lr)
    sched = _schedule(opt, tcfg, epochs, steps_per_epoch)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None, find_unused_parameters=True)

    state_path = out / "last.state.pt"
    start_epoch, start_step, best, history, elapsed = 0, 0, -1.0, [], 0.0
    if a.resume and state_path.is_file():
        try:  # tensors and plain containers only: a pickle that would build other objects is refused
            st = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - UnpicklingError, zip/EOF errors of a damaged file
            from .files import reason as _reason
            raise ValueError(f"{state_path}: refused to resume from it: not a plain training state "
                             f"(torch.load(weights_only=True): {_reason(e)})") from None
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, start_step = int(st["epoch"]), int(st["step"])
        best, elapsed = float(st["best"]), float(st["elapsed"])
        history = json.loads(st["history"])
        if rank == 0:
            print(f"resuming {out} at epoch {start_epoch} step {start_step}", file=sys.stderr)

    card_base = {"model": a.model, "arch": model.arch, "description": cfg.get("description", ""),
                 "config": model.config, "train_settings": tcfg, "data": a.data, "train_split": "train",
                 "eval_split": eval_split,
                 "train_images": len(train_ds), "train_pairs": len(pairs), "eval_images": len(eval_ds),
                 "epochs": epochs, "batch_size": bs, "lr": lr, "seed": a.seed, "world_size": world,
                 "params": sum(p.numel() for p in model.parameters()), "device": str(device), "cpus": os.cpu_count(),
                 "torch": torch.__version__, "code_version": code_version(),
                 # frozen encoders: time to compute (or read back) their cached outputs, not in train_seconds
                 **({"feature_cache_seconds": cache_seconds} if freeze else {}),
                 "command": "rsdemo train " + " ".join(_cli_args(a, epochs, bs, lr))}

    def checkpoint(epoch, step):
        if rank != 0:
            return
        st = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
              "epoch": epoch, "step": step, "best": best, "elapsed": elapsed + time.perf_counter() - t0,
              "history": json.dumps(history)}
        atomic_write(state_path, lambda tmp: torch.save(st, tmp))

    amp = device.type == "cuda" and tcfg.get("amp", True)
    t0 = time.perf_counter()
    stopped = False
    for epoch in range(start_epoch, epochs):
        model.train()
        order = _order(len(pairs), a.seed, epoch)[: steps_per_epoch * bs]
        first = start_step if epoch == start_epoch else 0
        it = range(first, steps_per_epoch)
        if a.progress and rank == 0:
            from tqdm import tqdm
            it = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", unit="step", initial=first, total=steps_per_epoch)
        for step in it:
            idx = order[step * bs:(step + 1) * bs][rank::world]  # each rank its share of the global batch
            img_idx = [pairs[k][0] for k in idx.tolist()]
            caps = [pairs[k][1] for k in idx.tolist()]
            if views > 1:  # the view of each pair: fixed by (seed, epoch, step), so a resumed run repeats it
                g = torch.Generator().manual_seed((a.seed * 100003 + epoch) * 100019 + step)
                v = (torch.rand(len(idx), generator=g) * n_views[idx]).long()
                images = batch_images([int(x) * len(train_ds) + i for x, i in zip(v.tolist(), img_idx)])
            else:
                images = batch_images(img_idx)
            texts = words.batch(caps) if words is not None else caps
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out_ = net(images, texts, caps, [labels[i] for i in img_idx], img_idx)
            loss = out_["loss"].float()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1} step {step}: "
                                         f"lower the learning rate ({lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.get("grad_clip", 2.0):
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg.get("grad_clip", 2.0)))
            opt.step()
            sched.step()
            if a.progress and rank == 0 and hasattr(it, "set_postfix"):
                it.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if (step + 1) % a.save_every == 0 and step + 1 < steps_per_epoch:
                checkpoint(epoch, step + 1)
            if a.max_minutes and (elapsed + time.perf_counter() - t0) / 60 > a.max_minutes:
                checkpoint(epoch, step + 1)
                stopped = True
                break
        if stopped:
            break
        metrics = None
        if rank == 0 and ((epoch + 1) % a.eval_every == 0 or epoch + 1 == epochs) and len(eval_ds):
            metrics = evaluate_model(model, eval_ds, batch_size=64)
            history.append({"epoch": epoch + 1, **{k: round(v, 2) for k, v in metrics.items()
                                                   if k in ("mr", "mr_embed")}})
            if metrics["mr"] > best:
                best = metrics["mr"]
                card = {**card_base, "best_epoch": epoch + 1, "steps": sched.last_epoch, "history": history,
                        "train_seconds": round(elapsed + time.perf_counter() - t0, 1)}
                save(model, out / "best.safetensors", card, half=a.half)
            if a.progress:
                from .evaluate import format_recall
                print(f"epoch {epoch + 1}: {eval_split} {format_recall(metrics)}", file=sys.stderr)
        checkpoint(epoch + 1, 0)
        if world > 1:
            torch.distributed.barrier()

    final = {**card_base, "steps": sched.last_epoch, "history": history, "stopped_early": stopped,
             "train_seconds": round(elapsed + time.perf_counter() - t0, 1)}
    if rank == 0:
        save(model, out / "last.safetensors", final, half=a.half)
        if not stopped:  # the cards report what the saved (fp16) files give, so `rsdemo eval` reproduces them
            if (out / "best.safetensors").is_file():
                card_metrics(out / "best.safetensors", ds, eval_split)
            final = card_metrics(out / "last.safetensors", ds, eval_split)
    if world > 1:
        torch.distributed.barrier()
    return final


def card_metrics(path: Path, ds: CaptionDataset, eval_split: str) -> dict:
    """Evaluates a saved checkpoint on the eval split and on test, and writes those metrics into its card."""
    from .checkpoint import load, write_card

    model = load(path)
    metrics = {}
    for split in dict.fromkeys([eval_split, "test"]):
        part = ds.split(split)
        if len(part):
            metrics[split] = evaluate_model(model, part, batch_size=64)
    card = {**model.card, "metrics": metrics}
    write_card(path, card)
    return card


def _cli_args(a: TrainArgs, epochs, bs, lr) -> list[str]:
    args = ["--model", a.model, "--data", a.data, "--epochs", str(epochs), "--batch-size", str(bs),
            "--lr", str(lr), "--seed", str(a.seed)]
    if a.images:
        args += ["--images", a.images]
    for k, v in (a.overrides or {}).items():
        args += ["--set", f"{k}={json.dumps(v)}"]
    return args
