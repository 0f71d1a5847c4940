"""The training loop for every registered model: the model supplies outputs and its registered loss.

What we decided:
- The model is built from its config plus the run's overrides, validated (unknown keys fail before any data is
  read), with what the data gives it: the training captions' vocabulary where the model uses one
  (uses_vocabulary hook) and the training labels' scene classes (the shared `classes` option).
- Checkpoints in OUT/: last.state.pt (rsdemo.training.state: every `save_every` steps, at each epoch end, and when
  `max_minutes` is spent), best.safetensors / last.safetensors with their model cards (rsdemo.training.cards).
  Every write is atomic.
- One optimisation step (rsdemo.training.step.optimise): AMP (bf16 autocast) on CUDA (train.amp), gradient
  clipping (train.grad_clip). Periodic evaluation with rsdemo.evaluate; DDP under `torchrun --nproc_per_node=N`
  (rsdemo.training.distributed).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import load, save
from ..data.formats import open_dataset
from ..data.text import Vocab
from ..evaluate import evaluate_model, format_recall
from ..models.factory import build, merge, options
from ..models.registry import arch_class, model_config
from . import distributed, optim, state
from .cards import card, card_metrics
from .inputs import Batches
from .step import TrainStep, optimise


@dataclass
class TrainArgs:
    model: str
    data: str = "synthetic"
    images: str | None = None
    out: str | None = None
    epochs: int | None = None         # default: the config's train.epochs (likewise batch_size, lr)
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    device: str | None = None
    resume: bool = False
    eval_split: str | None = None     # default: val if the data has one, else test
    eval_every: int = 1               # epochs
    save_every: int = 50              # steps between resumable checkpoints
    max_minutes: float | None = None  # stop cleanly (after a checkpoint) once over this budget
    overrides: dict = field(default_factory=dict)   # config keys, e.g. {"use_mvsa": False, "train": {"lr": 1e-3}}
    init: str | None = None           # a checkpoint of the same architecture whose weights start the run (warm start)
    progress: bool = True
    half: bool = True                 # best/last .safetensors in fp16 (the resumable state stays fp32)


def model_for(name: str, overrides: dict, train_ds=None):
    """(model, its options) as training builds it: the config plus overrides, the training data's scene classes
    (unless overridden) and, where the model uses one, the training captions' vocabulary."""
    over = dict(overrides or {})
    if train_ds is not None:
        known = sorted({r.label for r in train_ds.records if r.label})
        if known:  # label-aware modules (LSD, CD, STL, class heads) get the training data's scene classes
            over.setdefault("classes", known)
    opts = options(merge(model_config(name), over), name)
    vocab = None
    if train_ds is not None and arch_class(opts.arch, name).uses_vocabulary(opts):
        vocab = Vocab.build(c for r in train_ds.records for c in r.captions)
    return build(opts, name, vocab=vocab), opts


def warm_start(model, path: str) -> None:
    """The weights of checkpoint `path` copied into `model` (same architecture and shapes; its config may differ in
    what trains: e.g. the whole backbone fine-tuned from a run that trained only the heads on cached features)."""
    src = load(path, device="cpu")
    if src.arch != model.arch:
        raise ValueError(f"--init {path}: a {src.arch!r} checkpoint cannot start a {model.arch!r} model")
    if type(model).uses_vocabulary(model.config):
        model.vocab = src.vocab   # its word table is indexed by the checkpoint's vocabulary: the run keeps it
    try:
        model.load_state_dict(src.state_dict(), strict=True)
    except RuntimeError as e:
        raise ValueError(f"--init {path} does not fit {model.name}'s config (a different size, module switch or "
                         f"vocabulary?): {'; '.join(x.strip() for x in str(e).splitlines()[1:3])}") from None


def train(a: TrainArgs) -> dict:
    """Trains, evaluates each `eval_every` epochs, writes checkpoints and cards; returns the final card."""
    options(merge(model_config(a.model), a.overrides or {}), a.model)   # a bad key fails before any data work
    rank, world = distributed.setup()
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    dev = distributed.device(a.device, world)
    out = Path(a.out or f"runs/{a.model}")

    ds = open_dataset(a.data, images=a.images)
    train_ds = ds.split("train")
    if not len(train_ds):
        raise ValueError(f"{a.data}: no 'train' split (splits: {ds.split_counts()})")
    eval_split = a.eval_split or ("val" if "val" in ds.split_counts() else "test")
    eval_ds = ds.split(eval_split)

    model, opts = model_for(a.model, a.overrides, train_ds)
    if a.init:
        warm_start(model, a.init)
    model = model.to(dev)
    tcfg = opts.train
    epochs, bs, lr = int(a.epochs or tcfg.epochs), int(a.batch_size or tcfg.batch_size), float(a.lr or tcfg.lr)
    batches = Batches(model, train_ds, bs, a.seed, tcfg.views, dev, a.progress and rank == 0)
    steps_per_epoch = batches.steps_per_epoch

    opt = optim.optimizer(model, tcfg, lr)
    sched = optim.schedule(opt, tcfg, epochs, steps_per_epoch)
    net = distributed.wrap(TrainStep(model), dev, world)

    state_path = out / "last.state.pt"
    prog = state.Progress()
    if a.resume and state_path.is_file():
        prog = state.load(state_path, model, opt, sched)
        if rank == 0:
            print(f"resuming {out} at epoch {prog.epoch} step {prog.step}", file=sys.stderr)
    base = card(a, model, opts, batches, eval_split, len(eval_ds), epochs, bs, lr, world, dev)
    before = prog.elapsed   # training seconds of earlier processes of this run
    t0 = time.perf_counter()

    def seconds() -> float:
        return before + time.perf_counter() - t0

    def checkpoint(epoch: int, step: int) -> None:
        if rank == 0:
            prog.epoch, prog.step, prog.elapsed = epoch, step, seconds()
            state.save(state_path, model, opt, sched, prog)

    amp = dev.type == "cuda" and tcfg.amp   # bf16 autocast
    start_epoch, start_step = prog.epoch, prog.step
    stopped = False
    for epoch in range(start_epoch, epochs):
        model.train()
        first = start_step if epoch == start_epoch else 0
        it = range(first, steps_per_epoch)
        if a.progress and rank == 0:
            from tqdm import tqdm  # progress bars only when asked for
            it = tqdm(it, desc=f"epoch {epoch + 1}/{epochs}", unit="step", initial=first, total=steps_per_epoch)
        for step in it:
            loss = optimise(net, model, opt, sched, batches.step(epoch, step, rank, world), tcfg.grad_clip, amp,
                            dev.type, where=f"epoch {epoch + 1} step {step}", lr=lr)
            if a.progress and rank == 0 and hasattr(it, "set_postfix"):
                it.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if (step + 1) % a.save_every == 0 and step + 1 < steps_per_epoch:
                checkpoint(epoch, step + 1)
            if a.max_minutes and seconds() / 60 > a.max_minutes:
                checkpoint(epoch, step + 1)
                stopped = True
                break
        if stopped:
            break
        if rank == 0 and ((epoch + 1) % a.eval_every == 0 or epoch + 1 == epochs) and len(eval_ds):
            metrics = evaluate_model(model, eval_ds, batch_size=64)
            prog.history.append({"epoch": epoch + 1, **{k: round(v, 2) for k, v in metrics.items()
                                                        if k in ("mr", "mr_embed")}})
            if metrics["mr"] > prog.best:
                prog.best = metrics["mr"]
                save(model, out / "best.safetensors", {**base, "best_epoch": epoch + 1, "steps": sched.last_epoch,
                                                       "history": prog.history,
                                                       "train_seconds": round(seconds(), 1)}, half=a.half)
            if a.progress:
                print(f"epoch {epoch + 1}: {eval_split} {format_recall(metrics)}", file=sys.stderr)
        checkpoint(epoch + 1, 0)
        distributed.barrier(world)

    final = {**base, "steps": sched.last_epoch, "history": prog.history, "stopped_early": stopped,
             "train_seconds": round(seconds(), 1)}
    if rank == 0:
        save(model, out / "last.safetensors", final, half=a.half)
        if not stopped:  # the cards report what the saved (fp16) files give, so `rsdemo eval` reproduces them
            if (out / "best.safetensors").is_file():
                card_metrics(out / "best.safetensors", ds, eval_split)
            final = card_metrics(out / "last.safetensors", ds, eval_split)
    distributed.barrier(world)
    return final
