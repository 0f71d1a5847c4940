"""A CLIP-style dual encoder over the shared backbones: image tower (e.g. EfficientNet-Lite0) and text tower (e.g.
MiniLM), each followed by a linear projection into the joint space, trained with the symmetric InfoNCE loss and
a learnable temperature (as CLIP).

- Image embedding: `global_fc` (linear) of the mean-pooled stride-32 map. Because the projection is linear, the
  embedding is the mean of the projected positions, so each position's projection is its share of the score:
  `explain` gives "patch_sim" (cosine of the text embedding with each position, [h, w]) and "word_sim" (cosine of
  each word's projected feature with each position, [T, h, w], one map per WordPiece of `tokens`).
- Text embedding: masked mean of the projected word features (the text tower's projection).
- Score: cosine of the two embeddings (separable; stage 1 is exact).
Options (DualOptions): the seed models' shared ones plus "temperature" (the initial InfoNCE temperature; the
learned logit scale starts at its inverse). The loss (dual_loss, registered for the arch) reads forward()'s scores
and logit scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from .base import Explanation
from .base import Pairs
from .common import SeedModel, SeedOptions
from .registry import register, register_loss


@dataclass(kw_only=True)
class DualOptions(SeedOptions):
    temperature: float = 0.07


@register("dual")
class DualEncoder(SeedModel):
    summary = ("A two-tower model in the style of CLIP: the image and the description each become one vector, "
               "and the nearest vectors match.")  # one plain sentence for the page
    config_class = DualOptions

    def __init__(self, config: dict | DualOptions, name: str | None = None, vocab=None):
        super().__init__(config, name, vocab)
        self.global_fc = nn.Linear(self.backbone.channels[-1], self.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / self.config.temperature)))

    def _visual(self, images):
        f = self._feats(images)[-1]
        return self.global_fc(f.mean((2, 3))), f

    def encode_image(self, images):
        return self.normalize(self._visual(images)[0])

    def forward(self, images, texts):
        v, _ = self._visual(images)
        _, _, t = self._words(texts)
        # CLIP clamps the scale at 100 so the logits cannot blow up
        return {"scores": self.normalize(v) @ self.normalize(t).T,
                "logit_scale": self.logit_scale.clamp(max=math.log(100))}

    def image_state(self, images):
        """{"global": [N, d], "positions": [N, h, w, d] each position through global_fc (explain's maps)}."""
        v, f = self._visual(images)
        return {"global": v, "positions": self.global_fc(f.permute(0, 2, 3, 1))}

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        st = self.state_tensors(state)
        words, mask, t = self._words([text])
        pos = F.normalize(st["positions"][0], dim=-1)                                     # [h, w, d]
        T = int(mask.sum())
        w = F.normalize(words[0, :T].float(), dim=-1)                                   # [T, d]
        maps = {"patch_sim": (pos @ self.normalize(t)[0]).cpu().numpy(),
                "word_sim": torch.einsum("hwd,td->thw", pos, w).cpu().numpy()}
        s = float((self.normalize(st["global"][:1]) @ self.normalize(t).T)[0, 0])  # dual-label: its fused score
        return Explanation(maps, self.tokens(text, mask), s)


@register_loss("dual")
def dual_loss(model: DualEncoder, out: dict, pairs: Pairs) -> dict:
    """Symmetric InfoNCE with the learned temperature; identical captions of other images are no negatives."""
    s = out["scores"]
    mask = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
    nce = losses.infonce(s, logit_scale=out["logit_scale"], mask=mask)
    return {"loss": nce, "infonce": nce.detach()}
