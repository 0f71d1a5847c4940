"""The one model contract every registered model implements (seed papers and CLIP alike).

encode_image / encode_text give L2-normalised global embeddings comparable by dot product (stage 1, FAISS);
score gives the model's full matching score (equal to the dot product for separable models, the paper's
cross-modal score otherwise, used to rerank); explain gives the model's own named maps; loss trains it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Explanation:
    """Maps at feature resolution: name -> [h, w] (one map) or [T, h, w] (one per token)."""
    maps: dict[str, np.ndarray]
    tokens: list[str]
    score: float
    cfm: np.ndarray | None = None       # [T, h*w] word x region co-occurrence, where the model has one
    notes: dict = field(default_factory=dict)


class RetrievalModel(nn.Module):
    arch = "base"
    separable = True                    # score(i, t) == encode_image(i) @ encode_text(t).T

    def __init__(self, config: dict, name: str | None = None):
        super().__init__()
        self.config = config
        self.name = name or config.get("arch", self.arch)
        self.embed_dim = int(config.get("embed_dim", 512))

    # ---- inputs ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, images) -> torch.Tensor:
        """PIL images (or one) -> normalised batch tensor for this model, on its device."""
        from ..data.transforms import image_transform

        tf = image_transform(self.config.get("image_size", 256), self.config.get("normalize", "imagenet"))
        if not isinstance(images, (list, tuple)):
            images = [images]
        return torch.stack([tf(im) for im in images]).to(self.device)

    def tokenize(self, texts: list[str]):
        raise NotImplementedError

    def _images(self, images) -> torch.Tensor:
        return images.to(self.device) if torch.is_tensor(images) else self.preprocess(images)

    def _texts(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenize(texts) if isinstance(texts, (list, tuple)) else texts

    # ---- contract ----------------------------------------------------------------------------------
    def encode_image(self, images) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts) -> torch.Tensor:
        raise NotImplementedError

    def score(self, images, texts) -> torch.Tensor:
        return self.encode_image(images) @ self.encode_text(texts).T

    def explain(self, image, text: str) -> Explanation:
        raise NotImplementedError

    def loss(self, images, texts, captions: list[str], labels: list | None = None, image_ids=None) -> dict:
        """Training loss of one batch of matched pairs (image i <-> captions[i]); returns {"loss": ..., parts}.

        labels: scene label per pair (or None); image_ids: which image each pair comes from, so two captions of
        one image in a batch are not treated as negatives of each other."""
        raise NotImplementedError

    def forward(self, images, texts, captions, labels=None, image_ids=None) -> dict:
        # forward() is the loss so DistributedDataParallel (which hooks forward) syncs gradients
        return self.loss(images, texts, captions, labels, image_ids=image_ids)

    # ---- helpers -----------------------------------------------------------------------------------
    def switches(self) -> dict[str, bool]:
        """The config's module switches (use_*), for ablations and model cards."""
        return {k: bool(v) for k, v in self.config.items() if k.startswith("use_")}

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)
