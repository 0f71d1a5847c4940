"""Training, apart from the models (as open_clip keeps its training package apart from its model code).

A model gives outputs (forward) and registers its loss beside it; everything here is architecture-blind and talks
to the model only through the contract's hooks (rsdemo.models.base):

- loop.py: TrainArgs and train(): the epoch/step loop, periodic evaluation, best/last checkpoints.
- step.py: TrainStep, the module DDP wraps: the model's forward plus its registered loss; optimise(), one step.
- optim.py: the optimiser (parameter groups from the model) and the per-step learning-rate schedule.
- distributed.py: torchrun set-up (rank, world, device), the DDP wrapper, barriers.
- inputs.py: the training pairs and their per-step batches: images decoded once, or frozen encoders' cached
  outputs (rsdemo.features), dihedral views; the (seed, epoch)-seeded order that makes resume exact.
- state.py: the resumable training state (last.state.pt), written atomically and read with weights_only=True.
- cards.py: model cards: what a run records, and the metrics of the saved (fp16) files.
"""
from __future__ import annotations

from .loop import TrainArgs, train

__all__ = ["TrainArgs", "train"]
