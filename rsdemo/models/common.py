"""What the seed-paper models (AMFMN, CCNet, SSJDN, DOVE) share: a CNN with multi-scale maps, a BiGRU over the
project's vocabulary, region features, and the bookkeeping around them. Each paper's modules live in its file.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.text import tokenize
from .backbones import ImageBackbone, TextBackbone, encode_batch, masked_mean
from .base import RetrievalModel


class SeedModel(RetrievalModel):
    """Backbone + BiGRU. Subclasses implement _visual and score/loss/explain with their modules."""

    def __init__(self, config: dict, name: str | None = None, vocab=None):
        super().__init__(config, name)
        if vocab is None:
            from ..data.synthetic import vocabulary
            vocab = vocabulary()
        self.vocab = vocab
        self.backbone = ImageBackbone(config.get("backbone", "resnet18"), config.get("pretrained"))
        self.text = TextBackbone(len(vocab), self.embed_dim, int(config.get("word_dim", 300)))
        # scene classes (written into the config by the trainer from the training labels) for label-aware modules
        self.classes = list(config.get("classes") or [])

    def tokenize(self, texts):
        return encode_batch(self.vocab, list(texts), int(self.config.get("max_words", 48)))

    def _words(self, texts):
        """Word features [M, T, d], mask [M, T], global text feature [M, d] (masked mean)."""
        ids, lengths = self._texts(texts)
        words, mask = self.text(ids.to(self.device), lengths)
        return words, mask, masked_mean(words, mask)

    def encode_text(self, texts):
        return self.normalize(self._text_global(*self._words(texts)))

    def _text_global(self, words, mask, t):
        return t

    def label_ids(self, labels) -> torch.Tensor | None:
        """Scene labels -> class indices (-1 unknown), or None when the model has no classes or no labels."""
        if not self.classes or labels is None:
            return None
        index = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([index.get(l, -1) for l in labels], device=self.device)

    def one_image(self, image) -> torch.Tensor:
        """explain() takes one PIL image or a preprocessed [1, 3, H, W] tensor."""
        return self._images(image if torch.is_tensor(image) else [image])

    def activation_map(self, x: torch.Tensor):
        """The last feature map's channel norm: the spatial signal left when a model's own maps are switched off."""
        return self.backbone(x)[-1][0].norm(dim=0).cpu().numpy()

    @staticmethod
    def tokens(text: str, mask: torch.Tensor) -> list[str]:
        return tokenize(text)[: int(mask.sum())] or ["<unk>"]


def region_proj(cin: int, d: int) -> nn.Module:
    """1x1 conv mapping a feature map into the joint space: each position becomes a region feature."""
    return nn.Conv2d(cin, d, 1)


def regions(fmap: torch.Tensor) -> torch.Tensor:
    """[N, d, h, w] -> [N, h*w, d]"""
    return fmap.flatten(2).transpose(1, 2)
