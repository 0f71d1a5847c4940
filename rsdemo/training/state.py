"""The resumable training state, OUT/last.state.pt: model, optimiser and scheduler state plus where the run is
(epoch, step within it, best eval mR so far, training seconds so far, the eval history).

Written atomically (rsdemo.files.atomic_write) every `save_every` steps and at each epoch end, so a run killed
at any moment (SIGKILL included) resumes from the last whole file; read with torch.load(weights_only=True), so a
file that would build other objects than tensors and plain containers is refused, never run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import atomic_write, load_plain


@dataclass
class Progress:
    epoch: int = 0           # the epoch to run next (or the one a mid-epoch state is in)
    step: int = 0            # the first step of `epoch` still to run
    best: float = -1.0       # best eval mR so far (what best.safetensors holds)
    elapsed: float = 0.0     # training seconds before this process started
    history: list = field(default_factory=list)


def save(path: Path, model, opt, sched, p: Progress) -> None:
    st = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
          "epoch": p.epoch, "step": p.step, "best": p.best, "elapsed": p.elapsed, "history": json.dumps(p.history)}
    atomic_write(path, lambda tmp: torch.save(st, tmp))


def load(path: Path, model, opt, sched) -> Progress:
    """Restores model, optimiser and scheduler from `path`; ValueError for a file that is not a plain state."""
    st = load_plain(path, "plain training state")   # tensors and plain containers only, else ValueError
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    return Progress(int(st["epoch"]), int(st["step"]), float(st["best"]), float(st["elapsed"]),
                    json.loads(st["history"]))
