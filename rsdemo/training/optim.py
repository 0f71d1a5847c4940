"""Optimiser and learning-rate schedule, from the config's `train` section (rsdemo.models.options.TrainOptions).

- Parameter groups come from the model (parameter_groups hook): "heads" at the learning rate, "pretrained"
  (pretrained layers that train, e.g. a frozen backbone's tuned top) at lr x backbone_lr_scale.
- adam (weight decay 0 unless given) or adamw (0.1 unless given).
- Per-step LambdaLR: "step" (x gamma every step_epochs epochs, AMFMN's) or "cosine" with linear warmup
  (warmup_steps, default min(100, a tenth of all steps)).
"""
from __future__ import annotations

import math

import torch

from ..models.options import TrainOptions


def optimizer(model, tcfg: TrainOptions, lr: float) -> torch.optim.Optimizer:
    groups = model.parameter_groups()
    params = [{"params": groups["heads"]}]
    if groups.get("pretrained"):
        params.append({"params": groups["pretrained"], "lr": lr * tcfg.backbone_lr_scale})
    if tcfg.optimizer == "adamw":
        wd = 0.1 if tcfg.weight_decay is None else tcfg.weight_decay
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=0.0 if tcfg.weight_decay is None else tcfg.weight_decay)


def schedule(opt, tcfg: TrainOptions, epochs: int, steps_per_epoch: int):
    total = max(1, epochs * steps_per_epoch)
    if tcfg.schedule == "cosine":
        warm = tcfg.warmup_steps if tcfg.warmup_steps is not None else min(100, total // 10)

        def f(step):
            if step < warm:
                return (step + 1) / max(1, warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    else:
        every, gamma = tcfg.step_epochs, tcfg.gamma

        def f(step):
            return gamma ** ((step // steps_per_epoch) // every)
    return torch.optim.lr_scheduler.LambdaLR(opt, f)
