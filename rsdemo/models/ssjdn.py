"""SSJDN: Scale-Semantic Joint Decoupling Network (Zheng et al., ACM 2023; seed 001).

What the abstract fixes: a Bidirectional Scale Decoupling (BSD) module whose Salience Extraction Map (SEM) and
Salience Suppression Map (SSM) units adaptively extract potential features and suppress cumbersome features at
other scales, in a bidirectional pattern, to yield different scale clues; a Label-supervised Semantic Decoupling
(LSD) module that uses scene-category labels as prior knowledge to supervise images and texts; and a
Semantic-guided Triple Loss (STL) that adaptively generates a constant to adjust the loss, raising the chance of
matching same-semantics image and text and shortening convergence.

What we decided:
- BSD: the stride-8/16/32 maps are projected to `bsd_dim` channels. Fine-to-coarse pass: at each scale an SEM unit
  (3x3 conv + sigmoid) gives a salience map m; the extracted clue is the map-weighted feature, and the next
  (coarser) scale is multiplied by the SSM, 1 - m resized, so it looks for what the finer scale did not take.
  Coarse-to-fine pass: the same with its own SEM units, suppressing the finer scales. Each scale's clue is the
  sum of its two passes' pooled extracted features; the three clues are concatenated and projected to the joint
  space, added to the pooled stride-32 global feature. `explain` gives per scale "sem{stride}" (mean of the two
  passes' salience maps) and "ssm{stride}" (how strongly that scale was suppressed: 1 - the multiplier SSM put on
  it, which is the other scale's salience resized). A map named for suppression is bright where it suppresses, as
  the page's legend says; until state_version 2 it showed the multiplier, bright where nothing was suppressed, and
  so pointed away from the objects the other scale had taken (synthetic val, ssjdn-lite0: ssm32 3.1% pointing
  against a 6.4% random floor).
- LSD: a linear scene classifier on the image embedding and one on the text embedding, cross-entropy on the
  scene labels (weight `lsd_weight`); pairs without a known label are ignored. The class list is written into
  the config at training time (the synthetic scenes by default).
- STL: the bidirectional triplet whose margin for same-label negatives shrinks by a batch-set constant
  (rsdemo.losses.semantic_margin); off = the fixed margin.
- Score: cosine of the global embeddings (separable; stage 1 is exact).
- Score map ("score_map": true, models/common.py): the embedding is global_fc(mean of stride-32 positions) plus the
  clue projection of the per-scale means of the extracted (SEM-weighted, SSM-suppressed) features, all linear in
  the positions; each scale's per-position contributions are moved onto the stride-16 grid without changing their
  sum (common.spread), the biases shared evenly, and each position's dot product with the text feature over the
  embedding's norm is its share of the cosine: "bsd_score" ("score" with BSD off), where the extracted clues and
  the global feature agree with the query. SEM/SSM stay as the paper's read-outs (they do not see the query).
Switches: use_bsd, use_lsd, use_stl (SSJDNOptions). The loss (ssjdn_loss, registered for the arch) reads
forward()'s global embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from ..data.world import SCENES
from .base import Explanation
from .base import Pairs
from .common import SeedModel, SeedOptions, global_positions, paired_dot, spread
from .registry import register, register_loss


class SEM(nn.Module):
    """Salience Extraction Map unit: a [N, 1, h, w] salience map of a scale's features."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1), nn.ReLU(True), nn.Conv2d(c // 2, 1, 1))

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def ssm(m: torch.Tensor, size) -> torch.Tensor:
    """Salience Suppression Map: what one scale took, suppressed at another scale's resolution."""
    return 1 - F.interpolate(m, size=size, mode="bilinear", align_corners=False)


@dataclass(kw_only=True)
class SSJDNOptions(SeedOptions):
    bsd_dim: int = 128
    use_bsd: bool = True
    use_lsd: bool = True
    use_stl: bool = True
    lsd_weight: float = 0.2
    margin_low: float = 0.05                   # STL's margin for same-label negatives when all of them share it


@register("ssjdn")
class SSJDN(SeedModel):
    summary = ("SSJDN separates what a scene holds from the scale it is seen at, with the scene labels guiding "
               "both image and text.")  # one plain sentence for the page
    config_class = SSJDNOptions
    state_version = 2   # "ssm*" became the suppression's strength (was the multiplier: module docstring)

    def __init__(self, config: dict | SSJDNOptions, name: str | None = None, vocab=None):
        super().__init__(config, name, vocab)
        config = self.config
        if not self.classes:
            self.classes = sorted(SCENES)
        d, c = self.embed_dim, self.backbone.channels
        self.use_bsd = config.use_bsd
        self.use_lsd = config.use_lsd
        self.use_stl = config.use_stl
        self.global_fc = nn.Linear(c[-1], d)
        if self.use_bsd:
            h = config.bsd_dim
            self.proj = nn.ModuleList([nn.Conv2d(ci, h, 1) for ci in c])
            self.sem_up = nn.ModuleList([SEM(h) for _ in c])      # fine -> coarse
            self.sem_down = nn.ModuleList([SEM(h) for _ in c])    # coarse -> fine
            self.clues = nn.Linear(3 * h, d)
        if self.use_lsd:
            self.cls_img = nn.Linear(d, len(self.classes))
            self.cls_txt = nn.Linear(d, len(self.classes))

    def _pass(self, ps, sems, order):
        """One direction of BSD: extracted features per scale ([N, h, H, W]: their mean is the clue), salience and
        suppression maps."""
        ps = list(ps)
        clues, sal, sup = [None] * 3, [None] * 3, [None] * 3
        for k, i in enumerate(order):
            m = sems[i](ps[i])
            clues[i] = ps[i] * m
            sal[i] = m
            if k + 1 < len(order):
                j = order[k + 1]
                sup[j] = ssm(m, ps[j].shape[-2:])
                ps[j] = ps[j] * sup[j]
        return clues, sal, sup

    def _visual(self, images, maps=False, positions=False):
        feats = self._feats(images)
        g = self.global_fc(feats[-1].mean((2, 3)))
        info = {}
        grid = feats[1].shape[-2:]
        if positions:  # the embedding's per-position shares on the stride-16 grid (see the module docstring)
            pos = spread(global_positions(self.global_fc, feats[-1]).permute(0, 3, 1, 2), grid)
        if self.use_bsd:
            ps = [p(f) for p, f in zip(self.proj, feats)]
            c1, s1, u1 = self._pass(ps, self.sem_up, [0, 1, 2])
            c2, s2, u2 = self._pass(ps, self.sem_down, [2, 1, 0])
            g = g + self.clues(torch.cat([a.mean((2, 3)) + b.mean((2, 3)) for a, b in zip(c1, c2)], 1))
            if positions:
                ext = [a + b for a, b in zip(c1, c2)]                        # extracted features per scale
                w = self.clues.weight.split([e.shape[1] for e in ext], 1)   # the clue projection per scale
                for wi, e in zip(w, ext):
                    pos = pos + spread(torch.einsum("dc,nchw->ndhw", wi, e) / (e.shape[-2] * e.shape[-1]), grid)
                pos = pos + (self.clues.bias / (grid[0] * grid[1]))[None, :, None, None]
            if maps:
                for i, stride in enumerate((8, 16, 32)):
                    info[f"sem{stride}"] = ((s1[i] + s2[i]) / 2)[:, 0]
                    info[f"ssm{stride}"] = 1 - (u1[i] if u1[i] is not None else u2[i])[:, 0]  # strength
        elif maps:  # BSD off: the global map's activation is the only spatial signal left
            info["activation"] = self.activation(feats[-1])
        if positions:
            info["positions"] = pos.permute(0, 2, 3, 1)
        return g, info

    def _state(self, images, positions):
        """{"global": [N, d], and the maps explain shows: "sem8".."ssm32" [N, h, w] (BSD on) or "activation";
        "positions": the embedding's per-position shares [N, h16, w16, d] (with positions)}."""
        g, info = self._visual(images, maps=True, positions=positions)
        return {"global": g, **info}

    def score_map_state(self, state, texts):
        st = self.state_tensors(state)
        if "positions" not in st:
            return None
        _, _, t = self._words(texts)
        g = st["global"]
        return paired_dot(st["positions"], self.normalize(t)) / g.norm(dim=-1).clamp(min=1e-12)[:, None, None]

    def encode_image(self, images):
        return self.normalize(self._visual(images)[0])

    def forward(self, images, texts):
        v, _ = self._visual(images)
        _, _, t = self._words(texts)
        return {"image": v, "text": t}

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        st = self.state_tensors(state)
        words, mask, t = self._words([text])
        s = float((self.state_embedding(st)[:1] @ self.normalize(t).T)[0, 0])
        maps = {("global" if k == "activation" else k): m[0].cpu().numpy() for k, m in st.items()
                if k not in ("global", "positions")}
        self._with_score_map(maps, st, text, "bsd_score" if self.use_bsd else "score")
        return Explanation(maps, self.tokens(text, mask), s)


@register_loss("ssjdn")
def ssjdn_loss(model: SSJDN, out: dict, pairs: Pairs) -> dict:
    """Triplet on the cosine of the global embeddings with STL's margin, plus LSD's scene classification."""
    v, t, cfg = out["image"], out["text"], model.config
    s = model.normalize(v) @ model.normalize(t).T
    labels = pairs.labels
    margin = (losses.semantic_margin(labels, cfg.margin, cfg.margin_low).to(s.device)
              if model.use_stl and labels is not None else cfg.margin)
    tri = losses.triplet(s, margin, mask=losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device))
    res = {"loss": tri, "triplet": tri.detach()}
    cls = model.label_ids(labels) if model.use_lsd else None
    if cls is not None and (cls >= 0).any():
        lsd = 0.5 * (F.cross_entropy(model.cls_img(v), cls, ignore_index=-1) +
                     F.cross_entropy(model.cls_txt(t), cls, ignore_index=-1))
        res["loss"] = tri + cfg.lsd_weight * lsd
        res["lsd"] = lsd.detach()
    return res
