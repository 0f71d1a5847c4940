"""The training step's module: the model's forward and the loss registered for its architecture.

What we decided: DistributedDataParallel syncs the gradients of whatever its wrapped module's forward computes, so
the module DDP wraps must compute the loss. The model's own forward only gives outputs (scores, embeddings, maps);
TrainStep holds the model as a submodule (the same parameters, so nothing is copied) and calls model then loss.
Checkpoints save the model, never this wrapper, so state-dict key names stay the model's.
"""
from __future__ import annotations

from torch import nn

from ..models.base import Pairs
from ..models.registry import loss_for


class TrainStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.loss_fn = loss_for(model.arch)

    def forward(self, images, texts, captions: list[str], labels=None, image_ids=None) -> dict:
        """{"loss": scalar, parts...} of one batch of matched pairs (image i <-> captions[i]); texts are the
        captions or their cached encoder outputs."""
        return self.loss_fn(self.model, self.model(images, texts), Pairs(list(captions), labels, image_ids))
