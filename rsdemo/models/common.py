"""What the seed-paper models (AMFMN, CCNet, SSJDN, DOVE) share: a CNN with multi-scale maps, a text encoder giving
word features (BiGRU over the project's vocabulary, or MiniLM), region features, and the bookkeeping around them.
Each paper's modules live in its file.

Options declared here (SeedOptions, shared by every seed model): "backbone" (slim, resnet18, efficientnet_lite0),
"pretrained" (image weights), "text" (gru, minilm), "freeze" (a list of "image" / "text": those encoders keep their
pretrained weights, and the trainer feeds their cached outputs, rsdemo.features, instead of running them every
step), "tune_top" (with a frozen image backbone: its layers after the stride-16 map train all the same; the trainer
caches the maps below them and runs those layers every step: for Lite0, blocks 5-6 and the 1280-channel head conv,
2.6M of its 3.4M weights), "text_top" (with a frozen MiniLM: its last text_top of 6 layers train all the same,
at train.backbone_lr_scale of the heads' rate; the trainer caches the hidden states below them and runs those layers
every step: 1.8M weights each), "word_dim" (BiGRU word embedding), "max_words", "margin" (the triplet margin the seed
papers' losses start from), "score_map" (see below).

Score maps ("score_map": true; what we decided). Every seed model's image embedding is, up to a normalisation, a sum
over image positions: global_fc is linear, so the pooled feature is the mean of global_fc at each stride-32 position,
and the paper modules add position sums of their own (SSJDN's clues, DOVE's and CCNet's region pooling). Each
model therefore splits its own score exactly over positions: the map "<module>_score" (plain "score" with the
modules off) holds each position's share of the model's score for this query, and its sum is the score
(tests/test_models.py checks it). It is the model's own evidence read from its effect on the score, not attention
and not a baseline, and it depends on the query. The explanation (the page, rsdemo.grounding) shows its positive
part: the positions that add to the score, as Grad-CAM shows positive evidence. A min-max normalised signed map
paints the evidence against the query at mid intensity, spreading it over the other tiles: on the UCM dev
blocks (scripts/ucm.py ground-levers) the positive part kept the hits and raised the energy share in the
tile named from 44% to 69% (AMFMN, mosaic weight 2). score_map_state keeps the signed split (its sum is the
score): the mosaic objective trains it. The image side lives in the state ("positions": the per-position
joint-space vectors, batch first, channel last); the text side is applied in score_map_state, so a cached state
explains as the pixels do. Off by default: the state stays small and the synthetic checkpoints keep their maps;
the UCM grounding recipes (scripts/ucm.py) turn it on and train it with train.mosaic_weight (rsdemo.training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import torch
from torch import nn

from ..data.captions import vocabulary
from ..data.text import tokenize
from .backbones import (LITE, CachedImages, CachedWords, ImageBackbone, MiniLMText, TextBackbone, encode_batch,
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
    backbone: Literal["slim", "resnet18", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = "resnet18"
    text: Literal["gru", "minilm"] = "gru"
    freeze: list[Literal["image", "text"]] = field(default_factory=list)
    tune_top: bool = False
    text_top: int = 0
    word_dim: int = 300
    max_words: int = 48
    margin: float = 0.2
    score_map: bool = False                   # per-position shares of the score in the state and explain


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
        if config.text_top:
            if config.text != "minilm" or "text" not in freeze:
                raise ValueError('"text_top" needs "text": "minilm" and "freeze": ["text", ...] (without a frozen '
                                 'MiniLM every text layer trains anyway)')
            self.text.tune_top(config.text_top)
        # scene classes (written into the config by the trainer from the training labels) for label-aware modules
        self.classes = list(config.classes)
        if config.score_map and not self.has_score_maps():
            raise ValueError(f'"score_map": {self.arch} has no score maps (the seed-paper models have: amfmn, '
                             f'ccnet, ssjdn, dove)')

    @classmethod
    def has_score_maps(cls) -> bool:
        """Whether the architecture splits its score over positions (implements _state and score_map_state)."""
        return cls._state is not SeedModel._state

    @classmethod
    def uses_vocabulary(cls, config) -> bool:
        return True   # the BiGRU's; a MiniLM model keeps one too (its checkpoints store it), unused

    def frozen_encoders(self) -> dict[str, nn.Module]:
        # the config decides (not the modules' flags): evaluating through a frozen backbone stays possible
        enc = {"image": self.backbone, "text": self.text}
        return {k: enc[k] for k in self.config.freeze}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        # pretrained image layers that train (tune_top's top layers, or a whole pretrained backbone left unfrozen)
        # take train.backbone_lr_scale of the rate: the heads start from scratch, these do not
        # and so do MiniLM's tuned top layers (text_top)
        pre = self.tune_top or (bool(self.config.pretrained) and not self.backbone.frozen)
        prefixes = ("backbone.",) * pre + ("text.bert.",) * bool(self.config.text_top)   # () matches no name
        named = [(k, p) for k, p in self.named_parameters() if p.requires_grad]
        return {"heads": [p for k, p in named if not k.startswith(prefixes)],
                "pretrained": [p for k, p in named if k.startswith(prefixes)]}

    def position_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        """global_fc on each stride-32 position: global_fc is linear, so their mean is the projected pooled
        feature (the global embedding decomposed per position)."""
        f = self.backbone(x)[-1]                                            # [N, C, h, w]
        return self.global_fc(f.permute(0, 2, 3, 1))

    def image_state(self, images):
        return self._state(images, self.config.score_map)

    def _state(self, images, positions: bool) -> dict:
        """The image state; with positions, also the per-position shares the score maps read."""
        raise NotImplementedError

    def score_maps(self, images, texts) -> torch.Tensor:
        return self.score_map_state(self._state(images, True), texts)

    def _with_score_map(self, maps: dict, st: dict, text: str, name: str) -> None:
        """Adds the score map of the first image of state st for text, as maps[name], where st has positions."""
        if "positions" in st:
            split = self.score_map_state({k: v[:1] for k, v in st.items()}, [text])[0]
            maps[name] = split.clamp(min=0).cpu().numpy()     # the positive part (module docstring)

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
        if self.backbone.frozen and self.backbone.kind in LITE and self.backbone.pretrained:
            if self.tune_top:  # the tuned top layers are stored; everything below them is rebuilt
                out += ["backbone." + p for p in self.backbone.below_top_prefixes()]
            else:
                out.append("backbone.")
        if self.text.frozen:
            if self.text.tuned:   # (a frozen text encoder is MiniLM) the tuned top layers are stored, the rest rebuilt
                out += ["text.bert." + p for p in self.text.below_top_prefixes()]
            else:
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


def spread(x: torch.Tensor, size) -> torch.Tensor:
    """[..., h, w] -> [..., H, W] keeping the total: a cell moves whole to the target cell holding its centre
    (coarser target) or splits evenly over the target cells whose centres it holds (finer target). Score maps of
    several resolutions are summed on one grid this way without changing their sum."""
    H, W = int(size[0]), int(size[1])
    a = _spread_matrix(x.shape[-2], H, x)
    b = _spread_matrix(x.shape[-1], W, x)
    return torch.einsum("Hh,...hw,Ww->...HW", a, x, b)


def _spread_matrix(n: int, m: int, like: torch.Tensor) -> torch.Tensor:
    """[m, n], every column summing to 1 (see spread)."""
    a = torch.zeros(m, n, dtype=like.dtype, device=like.device)
    if m >= n:
        src = ((torch.arange(m) + 0.5) * n / m).long().clamp(max=n - 1)
        a[torch.arange(m), src] = 1.0
        a = a / a.sum(0, keepdim=True).clamp(min=1)
    else:
        dst = ((torch.arange(n) + 0.5) * m / n).long().clamp(max=m - 1)
        a[dst, torch.arange(n)] = 1.0
    return a


def global_positions(fc: nn.Linear, last: torch.Tensor) -> torch.Tensor:
    """fc at each position of the last map [N, C, h, w], divided by the position count: [N, h, w, d] whose sum
    over positions is fc(mean over positions) (fc is linear), the pooled global feature decomposed."""
    return fc(last.permute(0, 2, 3, 1)) / (last.shape[-2] * last.shape[-1])


def paired_dot(positions: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """[N, h, w, d] . [N, d] -> [N, h, w]: pair i's positions against pair i's direction."""
    return torch.einsum("nhwd,nd->nhw", positions, direction)


def region_proj(cin: int, d: int) -> nn.Module:
    """1x1 conv mapping a feature map into the joint space: each position becomes a region feature."""
    return nn.Conv2d(cin, d, 1)


def regions(fmap: torch.Tensor) -> torch.Tensor:
    """[N, d, h, w] -> [N, h*w, d]"""
    return fmap.flatten(2).transpose(1, 2)
