"""AMFMN: asymmetric multimodal feature matching network (Yuan et al., TGRS 2022; seed 003).

What the paper fixes: multi-scale visual self-attention (MVSA) extracts the salient features of the image; the
visual feature guides the text representation; a triplet loss whose margin varies with the prior similarity of
the sample pair. Public facts of the released code: ResNet-18 at 256 px, MVSA gates a 512-d global feature, cosine
score, a fixed margin 0.2 summed over in-batch negatives, Adam 2e-4 decayed x0.7 every 20 epochs.

What we decided (the abstract leaves it open):
- MVSA: the stride-8/16/32 maps are projected to `mvsa_dim` channels, resized to the stride-16 grid, fused by a
  3x3 conv, and passed through one softmax self-attention over positions. The attention each position receives
  (mean over queries) is the saliency map that `explain` returns as "mvsa"; the saliency-weighted attended feature
  is projected to 512-d and, through a sigmoid, gates the global (pooled stride-32) feature channel-wise.
- Vision-guided text: the text's global feature is the masked mean of BiGRU word features; the image feature is a
  query over the words (scaled dot product), and the attended word context is added to the global text feature
  (residual) before the cosine. The score is therefore not separable: encode_text (unguided) serves stage 1 and
  score() reranks.
- Dynamic margin: margin_ij = base - (base - low) * prior_ij, with prior_ij from rsdemo.losses.prior_similarity
  (idf-weighted bag-of-words cosine of the two captions, averaged with scene-label agreement when labels exist):
  pairs that look alike before learning, common in RS data, are pushed apart less. "use_dynamic_margin": false gives
  the released code's fixed margin.
- Score map ("score_map": true, models/common.py): the gated image feature is sigmoid(gate) * global_fc(mean of
  the stride-32 positions), so it is the sum over positions of sigmoid(gate) * global_fc(position) / count; each
  position's dot product with the (vision-guided) text feature, over the image feature's norm, is its share of the
  score: "mvsa_score" ("score" with MVSA off), a map of the query that MVSA's gate weights channel by channel.
  The "mvsa" saliency stays: it is MVSA's own read-out and does not depend on the query.
Switches: use_mvsa, use_vgt (vision-guided text), use_dynamic_margin (AMFMNOptions; the demo checkpoint
amfmn-slim stored the last one as "dynamic_margin", read as its old name).
The loss (amfmn_loss, registered for the arch) reads forward()'s full score matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from .base import Explanation
from .base import Pairs
from .common import SeedModel, SeedOptions, global_positions, paired_dot
from .registry import register, register_loss


@dataclass(kw_only=True)
class AMFMNOptions(SeedOptions):
    mvsa_dim: int = 256
    use_mvsa: bool = True
    use_vgt: bool = True
    use_dynamic_margin: bool = True
    margin_low: float = 0.05                   # the dynamic margin's value for identical-looking pairs
    hardest: bool = False                      # hardest negative only (VSE++) instead of the sum over negatives
    reduction: Literal["mean", "sum"] = "mean"
    renamed = {"dynamic_margin": "use_dynamic_margin"}


@register("amfmn")
class AMFMN(SeedModel):
    summary = ("AMFMN looks at the image at several scales, keeps its most salient parts and lets them guide "
               "how the description is read.")  # one plain sentence for the page
    config_class = AMFMNOptions

    def __init__(self, config: dict | AMFMNOptions, name: str | None = None, vocab=None):
        super().__init__(config, name, vocab)
        config = self.config
        d = self.embed_dim
        self.use_mvsa = config.use_mvsa
        self.use_vgt = config.use_vgt
        self.separable = not self.use_vgt
        c = self.backbone.channels
        self.global_fc = nn.Linear(c[-1], d)
        h = config.mvsa_dim
        if self.use_mvsa:
            self.lat = nn.ModuleList([nn.Conv2d(ci, h, 1) for ci in c])
            self.fuse = nn.Sequential(nn.Conv2d(3 * h, h, 3, padding=1, bias=False), nn.BatchNorm2d(h), nn.ReLU(True))
            self.qkv = nn.Conv2d(h, 3 * h, 1)
            self.gate = nn.Linear(h, d)
        if self.use_vgt:
            self.vq, self.wk, self.wo = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    # ---- image -------------------------------------------------------------------------------------
    def _mvsa(self, feats):
        """Fused multi-scale map -> self-attention -> (attended salient feature [N, h], saliency [N, H, W])."""
        size = feats[1].shape[-2:]
        z = torch.cat([F.interpolate(l(f), size=size, mode="bilinear", align_corners=False)
                       for l, f in zip(self.lat, feats)], 1)
        z = self.fuse(z)
        q, k, v = self.qkv(z).flatten(2).chunk(3, 1)                 # [N, h, HW] each
        att = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(q.shape[1]), -1)   # [N, HW, HW]
        out = v @ att.transpose(1, 2)                                 # [N, h, HW]
        sal = att.mean(1)                                             # attention received per position
        solo = (out * sal.unsqueeze(1)).sum(-1)                       # saliency-weighted
        return solo, sal.view(-1, *size)

    def _visual(self, images, positions: bool = False):
        """(image feature [N, d], MVSA saliency or None, per-position shares [N, h, w, d] of the feature or None)."""
        feats = self._feats(images)
        g = self.global_fc(feats[-1].mean((2, 3)))
        sal = pos = None
        if positions:
            pos = global_positions(self.global_fc, feats[-1])
        if self.use_mvsa:
            solo, sal = self._mvsa(feats)
            gate = torch.sigmoid(self.gate(solo))
            g = g * gate
            if pos is not None:
                pos = pos * gate[:, None, None]
        return g, sal, pos

    def encode_image(self, images):
        return self.normalize(self._visual(images)[0])

    # ---- matching ----------------------------------------------------------------------------------
    def _guided(self, v, words, mask, t):
        """Text features guided by each image: [N, M, d] (and the word weights [N, M, T])."""
        q = self.vq(v)                                                # [N, d]
        k = self.wk(words)                                            # [M, T, d]
        att = torch.einsum("nd,mtd->nmt", q, k) / math.sqrt(q.shape[-1])
        att = att.masked_fill(~mask[None], float("-inf")).softmax(-1)
        ctx = torch.einsum("nmt,mtd->nmd", att, words)
        return t[None] + self.wo(ctx), att

    def _score(self, v, words, mask, t):
        if not self.use_vgt:
            return self.normalize(v) @ self.normalize(t).T
        out = []
        for i in range(0, v.shape[0], 64):  # bounded memory: [64, M, d] at a time
            g, _ = self._guided(v[i:i + 64], words, mask, t)
            out.append((self.normalize(v[i:i + 64]).unsqueeze(1) * self.normalize(g)).sum(-1))
        return torch.cat(out)

    def _state(self, images, positions):
        """{"global": the (MVSA-gated) image feature [N, d], "mvsa": saliency [N, h, w] (MVSA on), "positions":
        the feature's per-position shares [N, h, w, d] (with positions)}."""
        v, sal, pos = self._visual(images, positions)
        st = {"global": v}
        if sal is not None:
            st["mvsa"] = sal
        if pos is not None:
            st["positions"] = pos
        return st

    def _paired_text(self, v, words, mask, t):
        """The text feature of pair i (vision-guided by image i where VGT is on): [N, d]."""
        if not self.use_vgt:
            return t
        q = self.vq(v)
        att = torch.einsum("nd,ntd->nt", q, self.wk(words)) / math.sqrt(q.shape[-1])
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        return t + self.wo(torch.einsum("nt,ntd->nd", att, words))

    def score_map_state(self, state, texts):
        st = self.state_tensors(state)
        if "positions" not in st:
            return None
        v = st["global"]
        g = self._paired_text(v, *self._words(texts))
        return paired_dot(st["positions"], self.normalize(g)) / v.norm(dim=-1).clamp(min=1e-12)[:, None, None]

    def score_state(self, state, texts):
        return self._score(self.state_tensors(state)["global"], *self._words(texts))

    def forward(self, images, texts):
        v, _, _ = self._visual(images)
        return {"scores": self._score(v, *self._words(texts))}

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        st = self.state_tensors(state)
        v = st["global"][:1]
        words, mask, t = self._words([text])
        s = float(self._score(v, words, mask, t)[0, 0])
        maps, notes = {}, {}
        if "mvsa" in st:
            maps["mvsa"] = st["mvsa"][0].cpu().numpy()
        self._with_score_map(maps, st, text, "mvsa_score" if self.use_mvsa else "score")
        if self.use_vgt:
            _, att = self._guided(v, words, mask, t)
            notes["word_weights"] = att[0, 0, : int(mask.sum())].cpu().numpy()
        return Explanation(maps, self.tokens(text, mask), s, notes=notes)


@register_loss("amfmn")
def amfmn_loss(model: AMFMN, out: dict, pairs: Pairs) -> dict:
    """Bidirectional triplet on the full scores, margin dynamic (prior similarity of the pairs) or fixed."""
    s, cfg = out["scores"], model.config
    if cfg.use_dynamic_margin:
        margin = losses.dynamic_margin(losses.prior_similarity(pairs.captions, pairs.labels).to(s.device),
                                       cfg.margin, cfg.margin_low)
    else:
        margin = cfg.margin
    mask = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
    loss = losses.triplet(s, margin, hardest=cfg.hardest, mask=mask, reduction=cfg.reduction)
    return {"loss": loss, "triplet": loss.detach()}
