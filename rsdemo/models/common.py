"""What the seed-paper models (AMFMN, CCNet, SSJDN, DOVE) share: a CNN with multi-scale maps, a text encoder giving
word features (BiGRU over the project's vocabulary, or MiniLM), region features, and the bookkeeping around them.
Each paper's modules live in its file.

Options declared here (SeedOptions, shared by every seed model): "backbone" (slim, resnet18, efficientnet_lite0),
"pretrained" (image weights), "text" (gru, minilm), "freeze" (a list of "image" / "text": those encoders keep their
pretrained weights, and the trainer feeds their cached outputs, rsdemo.features, instead of running them every
step), "tune_top" (with a frozen image backbone: its layers after the stride-16 map train all the same; the trainer
caches the maps below them and runs those layers every step: for Lite0, blocks 5-6 and the 1280-channel head conv,
2.6M of its 3.4M weights), "word_dim" (BiGRU word embedding), "max_words", "margin" (the triplet margin the seed
papers' losses start from).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import nn

from ..data.captions import vocabulary
from ..data.text import tokenize
from .backbones import (CachedImages, CachedWords, ImageBackbone, MiniLMText, TextBackbone, encode_batch,
                        masked_mean)
from .base import CamTarget, RetrievalModel
from .options import Options


class TextState(NamedTuple):
    """The text side computed once (text_state): word features [M, T, d], mask [M, T], masked mean [M, d]."""
    words: torch.Tensor
    mask: torch.Tensor
    mean: torch.Tensor


@dataclass(kw_only=True)
class SeedOptions(Options):
    """Options of every seed-paper model (see the module docstring)."""
    backbone: Literal["slim", "resnet18", "efficientnet_lite0"] = "resnet18"
    text: Literal["gru", "minilm"] = "gru"
    freeze: list[Literal["image", "text"]] = field(default_factory=list)
    tune_top: bool = False
    word_dim: int = 300
    max_words: int = 48
    margin: float = 0.2


class SeedModel(RetrievalModel):
    """Backbone + BiGRU. Subclasses implement image_state, score_state, explain_state and forward (with the loss
    registered beside them) with their modules."""
    config_class = SeedOptions

    def __init__(self, config: dict | SeedOptions, name: str | None = None, vocab=None):
        super().__init__(config, name)
        config = self.config
        if vocab is None:
            vocab = vocabulary()
        self.vocab = vocab
        freeze = set(config.freeze)
        if "text" in freeze and config.text != "minilm":
            raise ValueError(f"freeze {sorted(freeze)}: 'text' only with \"text\": \"minilm\" (a pretrained "
                             f"encoder)")
        self.backbone = ImageBackbone(config.backbone, config.pretrained, freeze="image" in freeze)
        self.tune_top = config.tune_top
        if self.tune_top:
            if "image" not in freeze:
                raise ValueError('"tune_top" needs "freeze": ["image", ...] (without it every layer trains anyway)')
            self.backbone.tune_top()
        if config.text == "minilm":
            self.text = MiniLMText(self.embed_dim, config.max_words, freeze="text" in freeze)
        else:
            self.text = TextBackbone(len(vocab), self.embed_dim, config.word_dim)
        # scene classes (written into the config by the trainer from the training labels) for label-aware modules
        self.classes = list(config.classes)

    @classmethod
    def uses_vocabulary(cls, config) -> bool:
        return True   # the BiGRU's; a MiniLM model keeps one too (its checkpoints store it), unused

    def frozen_encoders(self) -> dict[str, nn.Module]:
        # the config decides (not the modules' flags): evaluating through a frozen backbone stays possible
        enc = {"image": self.backbone, "text": self.text}
        return {k: enc[k] for k in self.config.freeze}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        named = [(k, p) for k, p in self.named_parameters() if p.requires_grad]
        tuned = [p for k, p in named if self.tune_top and k.startswith("backbone.")]
        return {"heads": [p for k, p in named if not (self.tune_top and k.startswith("backbone."))],
                "pretrained": tuned}

    def position_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """global_fc on each stride-32 position: global_fc is linear, so their mean is the projected pooled
        feature (the global embedding decomposed per position)."""
        f = self.backbone(x)[-1]                                            # [N, C, h, w]
        return self.global_fc(f.permute(0, 2, 3, 1))

    def cam_target(self) -> CamTarget:
        return CamTarget(self.backbone, False, lambda out: out[-1], lambda t: t)

    def tokenize(self, texts):
        if self.text.kind == "minilm":
            return self.text.tokenize(list(texts))
        return encode_batch(self.vocab, list(texts), self.config.max_words)

    def _feats(self, images):
        """Backbone maps [f8, f16, f32] of images (PIL, tensors) or the cached maps the trainer passes."""
        if isinstance(images, CachedImages):
            maps = [f.to(self.device, torch.float32) for f in images]
            if self.tune_top:  # the cached f32 came from the weights before tuning: recompute it
                maps[2] = self.backbone.top(maps[1])
            return maps
        return self.backbone(self._images(images))

    def _words(self, texts):
        """Word features [M, T, d], mask [M, T], global text feature [M, d] (masked mean)."""
        if isinstance(texts, TextState):
            return texts
        if isinstance(texts, CachedWords):
            raw, mask = texts
            words, mask = self.text.project(raw.to(self.device, torch.float32), mask.to(self.device))
            return words, mask, masked_mean(words, mask)
        return self.recall_text(texts, self._encode_words)

    def _encode_words(self, texts):
        ids, second = self._texts(texts)   # lengths (GRU, stay on CPU for packing) or attention mask
        words, mask = self.text(ids.to(self.device), second)
        return TextState(words, mask, masked_mean(words, mask))

    def text_state(self, texts) -> TextState:
        return TextState(*self._words(texts))

    def rebuilt_at_load(self) -> list[str]:
        """State-dict prefixes a checkpoint leaves out: frozen pretrained encoders, rebuilt from their pip packages
        when the checkpoint is loaded (rsdemo.checkpoint), so only the trained heads are stored."""
        out = []
        if self.backbone.frozen and self.backbone.kind == "efficientnet_lite0" and self.backbone.pretrained:
            if self.tune_top:  # the tuned top layers are stored; everything below them is rebuilt
                out += ["backbone." + p for p in self.backbone.below_top_prefixes()]
            else:
                out.append("backbone.")
        if self.text.frozen:
            out.append("text.bert.")
        return out

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

    @staticmethod
    def activation(last: torch.Tensor) -> torch.Tensor:
        """The last feature map's channel norm [N, h, w]: the spatial signal left when a model's own maps are
        switched off (kept in the image state as "activation")."""
        return last.norm(dim=1)

    def tokens(self, text: str, mask: torch.Tensor) -> list[str]:
        """The words behind the word features (WordPieces for MiniLM), as many as the mask keeps."""
        words = self.text.tokens(text) if self.text.kind == "minilm" else tokenize(text)
        return words[: int(mask.sum())] or ["<unk>"]


def region_proj(cin: int, d: int) -> nn.Module:
    """1x1 conv mapping a feature map into the joint space: each position becomes a region feature."""
    return nn.Conv2d(cin, d, 1)


def regions(fmap: torch.Tensor) -> torch.Tensor:
    """[N, d, h, w] -> [N, h*w, d]"""
    return fmap.flatten(2).transpose(1, 2)
