"""The training step's module: the model's forward and the loss registered for its architecture.

What we decided: DistributedDataParallel syncs the gradients of whatever its wrapped module's forward computes, so
the module DDP wraps must compute the loss. The model's own forward only gives outputs (scores, embeddings, maps);
TrainStep holds the model as a submodule (the same parameters, so nothing is copied) and calls model then loss.
Checkpoints save the model, never this wrapper, so state-dict key names stay the model's.
optimise() is one optimisation step around it (autocast, backward, clipping, optimiser and schedule).
"""
from __future__ import annotations

import torch
from torch import nn

from .. import losses
from ..models.base import Pairs, RetrievalModel
from ..models.registry import loss_for


class TrainStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = loss_for(model.arch)
        if model.config.train.word_weight > 0 and type(model).word_regions is RetrievalModel.word_regions:
            raise ValueError(f"train.word_weight: {model.arch} has no word-region similarity to contrast (ccnet has); "
                             f"leave it at 0 for this model")

    def forward(self, images, texts, captions: list[str], labels=None, image_ids=None, mosaics=None) -> dict:
        """{"loss": scalar, parts...} of one batch of matched pairs (image i <-> captions[i]); texts are the
        captions or their cached encoder outputs. mosaics: (mosaic images, texts, target tiles) adds the grounding
        objective (losses.tile_loss on each of the model's grounding_maps) with weight train.mosaic_weight;
        train.word_weight adds the token-level contrast (losses.word_contrast on the model's word_regions)."""
        res = self.loss_fn(self.model, self.model(images, texts), Pairs(list(captions), labels, image_ids))
        tcfg = self.model.config.train
        if mosaics is not None:
            maps = self.model.grounding_maps(mosaics[0], mosaics[1])
            tiles = [losses.tile_loss(m.float(), mosaics[2], tcfg.mosaic_scale) for m in maps]
            res["loss"] = res["loss"] + tcfg.mosaic_weight * sum(tiles)
            res["mosaic"] = tiles[0].detach()
            if len(tiles) > 1:
                res["mosaic_module"] = sum(tiles[1:]).detach()
        if tcfg.word_weight > 0:
            sim, mask = self.model.word_regions(images, texts)
            dup = losses.duplicate_mask(list(captions), image_ids).to(sim.device)
            word = losses.word_contrast(sim.float(), mask, tcfg.word_scale, dup)
            res["loss"] = res["loss"] + tcfg.word_weight * word
            res["word"] = word.detach()
        return res


def optimise(net: nn.Module, model: nn.Module, opt, sched, batch, grad_clip: float | None, amp: bool,
             device_type: str, where: str, lr: float) -> torch.Tensor:
    """One optimisation step on batch = (images, texts, captions, labels, image ids): the loss (bf16 autocast on
    `device_type` when `amp`) through `net` (TrainStep, or DDP around it), backward, gradient clipping, optimiser
    and schedule steps. Returns the loss; a non-finite one stops training with advice instead of corrupting the
    weights."""
    images, texts, caps, labels, img_idx, *mosaics = batch
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
        res = net(images, texts, caps, labels, img_idx, *mosaics)
    loss = res["loss"].float()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} at {where}: lower the learning rate ({lr})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss
