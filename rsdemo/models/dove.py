"""DOVE: Direction-Oriented Visual-semantic Embedding (Huang et al.; seed 002).

What the abstract fixes: visual and textual representations are directed, in the latent space, as close as
possible to a redundancy-free regional visual representation. A Regional-Oriented Attention Module (ROAM)
adaptively adjusts the distance between the final visual and textual embeddings, oriented by regional visual
features; a lightweight Digging Text Genome Assistant (DTGA) expands the range of textual representation and
strengthens global word-level connections with fewer attention operations; a global visual-semantic constraint
reduces single visual dependency and acts as an external constraint on the final representations.

What we decided:
- ROAM: K learned region queries attend over the stride-16 region features, giving K regional features (slot
  attention maps [K, h, w], returned by `explain` as "roam"). Redundancy-free: a penalty on the overlap of the
  K attention maps (mean off-diagonal cosine, weight `roam_div_weight`). Orientation: the text embedding picks a
  mix of the K regional features (softmax over their dot products), the oriented regional feature r; the final
  image and text embeddings each move toward r by a learned per-channel gate: v' = v + a_v * (r - v),
  t' = t + a_t * (r - t). Score = cosine(v', t'), not separable (r depends on the text); "roam_text" in
  `explain` is the text's mix of the K maps.
- DTGA: G learned "genome" tokens gather from all words (G x T attention) and scatter back to every word
  (T x G attention), added residually before the mean over words. That is 2*T*G attention scores instead of a
  self-attention's T*T and no Q/K/V/out projections or feed-forward block: `dtga_flops` / `transformer_flops`
  count both (for T=20, d=256, G=4: 0.16 vs 31.9 MFLOPs, checked in tests/test_modules.py).
- Global visual-semantic constraint: InfoNCE on the global (pre-ROAM) embeddings, weight `global_weight`, beside
  the triplet on the final score.
- Score map ("score_map": true, models/common.py): the final image embedding is (1 - a_v) * g + a_v * r, g the mean
  of global_fc over stride-32 positions and r = sum over stride-16 positions of (the text's mix of the K slot maps
  at that position) * region feature, so it splits over positions; each position's dot product with the final text
  embedding over the image embedding's norm is its share of the score: "roam_score" ("score" with ROAM off), where
  the regions ROAM orients toward this query carry the match. The state keeps the region features ("regions") and
  the global feature's per-position shares ("positions") for it; "roam" and "roam_text" stay as read-outs.
- ROAM's own share on mosaics ("roam_mosaic": true; what we decided from the UCM dev blocks). Split in two, the
  roam_score map's parts point apart: on the dev blocks' scene mosaics (a dev run of the w=2 recipe) the global
  feature's share put its maximum in the tile named 88% of the time, ROAM's regional share 18% (chance 25%), and
  the text's mix of slot maps (roam_text) 18%. The mosaic objective trains the sum, which the global share,
  trained by the global constraint too, dominates. With roam_mosaic the regional share gets its own tile loss
  beside the sum's (grounding_maps). Tried on the same dev blocks (scripts/ucm.py ground-inputs, lever
  roam-mosaic): the regional share rose to 58% hits, the global share fell to 54%, and roam_score went from 63% to
  60% (dev mR 42.65 -> 43.29). Not adopted: the two shares learn to point at different tiles rather than together.
  Off by default.
- Cosine attention in ROAM ("roam_scale" > 0; what we decided from the committed checkpoints, measured by
  scripts/roam_stats.py on 50 val images). With the scaled dot product (q . x / sqrt(d)) of the small vectors these
  heads learn, ROAM's attention can stay flat: in dove-slim each slot's attention peaks at 1.07x the uniform weight
  and the six regional features are one vector (smallest pairwise cosine 0.999); in ucm/dove-lite0 the peaks are
  1.76x uniform and the smallest cosine 0.951 (synthetic dove-lite0, at 256 px, escaped: 7.86x, -0.62). The text's
  weights over the slots are near uniform in all three (entropy 1.000, 0.996, 0.978 of ln K). ROAM then acts as a
  mean pool and "roam_text" is much the same map whatever the query. With roam_scale both the slot attention and
  the text's weights are softmaxes of cosines times roam_scale, sharp from the first step: dove-slim trained so
  (synthetic, roam_scale 10) peaks at 13.4x uniform, smallest cosine -0.02, text entropy 0.91 of ln K, with the
  same val mR (58.4 vs 58.0, both at epoch 3; the run stopped after 9 of 16 epochs, none better). Its roam_text
  still does not point at the phrase's objects (rsdemo eval-explain --split val: 1.7% against a 7.7% random floor;
  2.4% before): sharp slots, but on other parts of the scene than the phrase's objects. Not adopted by any committed recipe; 0 (the default) keeps the scaled dot
  product, so checkpoints made before it load and score as they did.
Switches: use_roam, use_dtga, use_global, roam_mosaic (DOVEOptions). The loss (dove_loss, registered for the arch) reads
forward()'s final scores, global embeddings and ROAM's attention maps.
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
from .common import SeedModel, SeedOptions, global_positions, paired_dot, region_proj, regions, spread
from .registry import register, register_loss


def dtga_flops(T: int, d: int, G: int) -> int:
    """Multiply-adds x2 of DTGA: gather (scores G*T*d, mix G*T*d) and scatter (T*G*d twice)."""
    return 2 * (4 * T * G * d)


def transformer_flops(T: int, d: int, ff: int = 4) -> int:
    """A standard encoder layer: Q/K/V/out projections 4*T*d*d, scores and mix 2*T*T*d, FFN 2*T*d*ff*d."""
    return 2 * (4 * T * d * d + 2 * T * T * d + 2 * T * d * ff * d)


class DTGA(nn.Module):
    """Digging Text Genome Assistant: genome tokens gather from and scatter back to the words."""

    def __init__(self, d: int, genomes: int = 4):
        super().__init__()
        self.genomes = nn.Parameter(torch.randn(genomes, d) / math.sqrt(d))
        self.scale = 1 / math.sqrt(d)

    def forward(self, words, mask):
        a = torch.einsum("gd,mtd->mgt", self.genomes, words) * self.scale
        a = a.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        gen = a @ words                                                  # [M, G, d]
        b = (words @ gen.transpose(1, 2) * self.scale).softmax(-1)       # [M, T, G]
        return words + b @ gen


@dataclass(kw_only=True)
class DOVEOptions(SeedOptions):
    regions: int = 6                           # K learned region queries of ROAM
    genomes: int = 4                           # G genome tokens of DTGA
    use_roam: bool = True
    use_dtga: bool = True
    use_global: bool = True
    roam_div_weight: float = 0.1
    global_weight: float = 0.5
    roam_mosaic: bool = False                  # the mosaic objective also trains ROAM's own share (docstring)
    roam_scale: float = 0.0                    # > 0: ROAM's attention and the text's pick of slots are cosines
                                               # times this (docstring); 0: dot products over sqrt(d), as before


@register("dove")
class DOVE(SeedModel):
    summary = ("DOVE pulls the image and the description towards the same region-level picture of the scene, "
               "with a small helper that widens what the text can say.")  # one plain sentence for the page
    config_class = DOVEOptions

    def __init__(self, config: dict | DOVEOptions, name: str | None = None, vocab=None):
        super().__init__(config, name, vocab)
        config = self.config
        d, c = self.embed_dim, self.backbone.channels
        self.use_roam = config.use_roam
        self.use_dtga = config.use_dtga
        self.use_global = config.use_global
        self.separable = not self.use_roam
        self.global_fc = nn.Linear(c[-1], d)
        if self.use_roam:
            k = config.regions
            self.region = region_proj(c[1], d)
            self.queries = nn.Parameter(torch.randn(k, d) / math.sqrt(d))
            self.gate_v = nn.Parameter(torch.full((d,), -1.0))
            self.gate_t = nn.Parameter(torch.full((d,), -1.0))
        if self.use_dtga:
            self.dtga = DTGA(d, config.genomes)

    def _visual(self, images, state=False, positions=False):
        """Global feature [N, d]; regional features [N, K, d] and slot attention [N, K, h, w] (ROAM on). With
        state: the image state {"global", "slots", "roam"} (ROAM on), else {"global", "activation" [N, h, w]};
        with positions also "positions" (the global feature's per-position shares [N, h32, w32, d]) and, ROAM on,
        "regions" (the region features [N, h16, w16, d])."""
        feats = self._feats(images)
        g = self.global_fc(feats[-1].mean((2, 3)))
        extra = {"positions": global_positions(self.global_fc, feats[-1])} if positions else {}
        if not self.use_roam:
            return ({"global": g, "activation": self.activation(feats[-1]), **extra} if state else
                    (g, None, None))
        reg = regions(self.region(feats[1]))                               # [N, R, d]
        if self.config.roam_scale > 0:   # cosine: the scaled dot product of small vectors stays flat (docstring)
            att = self.config.roam_scale * torch.einsum("kd,nrd->nkr", self.normalize(self.queries),
                                                        self.normalize(reg))
        else:
            att = torch.einsum("kd,nrd->nkr", self.queries, reg) / math.sqrt(reg.shape[-1])
        att = att.softmax(-1)
        slots = att @ reg                                                  # [N, K, d]
        att = att.view(*att.shape[:2], *feats[1].shape[-2:])
        if positions:
            extra["regions"] = reg.unflatten(1, feats[1].shape[-2:])
        return {"global": g, "slots": slots, "roam": att, **extra} if state else (g, slots, att)

    def _state(self, images, positions):
        return self._visual(images, state=True, positions=positions)

    def score_map_state(self, state, texts):
        st = self.state_tensors(state)
        if "positions" not in st:
            return None
        g, pos = st["global"], st["positions"]
        t = self._text_global(*self._words(texts))
        if not self.use_roam:
            return paired_dot(pos, self.normalize(t)) / g.norm(dim=-1).clamp(min=1e-12)[:, None, None]
        own, glob = self._split(st, t)
        return own + glob

    def grounding_maps(self, images, texts):
        if not (self.use_roam and self.config.roam_mosaic):
            return super().grounding_maps(images, texts)
        st = self.state_tensors(self._state(images, True))
        own, glob = self._split(st, self._text_global(*self._words(texts)))
        return [own + glob, own]

    def _split(self, st: dict, t: torch.Tensor):
        """ROAM on: the score split in two parts on the stride-16 grid, each over the image embedding's norm: the
        oriented regional feature's share (ROAM's own) and the global feature's share."""
        g, pos = st["global"], st["positions"]
        slots, att, reg = st["slots"], st["roam"], st["regions"]
        beta = self._orient("nd,nkd->nk", t, slots)
        r = torch.einsum("nk,nkd->nd", beta, slots)
        av, at = torch.sigmoid(self.gate_v), torch.sigmoid(self.gate_t)
        v2 = g + av * (r - g)
        t2 = self.normalize(t + at * (r - t))
        mix = torch.einsum("nk,nkhw->nhw", beta, att)                      # the text's mix of the slot maps
        own = mix * paired_dot(reg, av * t2)                               # r's share, stride-16 grid
        glob = spread(paired_dot(pos, (1 - av) * t2), own.shape[-2:])      # g's share, moved onto that grid
        norm = v2.norm(dim=-1).clamp(min=1e-12)[:, None, None]
        return own / norm, glob / norm

    def _orient(self, pairs: str, t: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """How texts weigh each image's K regional features (softmax over K); pairs: the einsum of the texts [.., d]
        with the slots [N, K, d], pair by pair or every text with every image."""
        if self.config.roam_scale > 0:
            return (self.config.roam_scale * torch.einsum(pairs, self.normalize(t), self.normalize(slots))).softmax(-1)
        return (torch.einsum(pairs, t, slots) / math.sqrt(t.shape[-1])).softmax(-1)

    def _text_global(self, words, mask, t):
        if self.use_dtga:
            w = self.dtga(words, mask)
            m = mask.unsqueeze(-1).float()
            return (w * m).sum(1) / m.sum(1).clamp(min=1)
        return t

    def encode_image(self, images):
        return self.normalize(self._visual(images)[0])

    def _final(self, g, slots, t):
        """ROAM: image and text embeddings oriented toward the text's mix of regional features: [N, M] scores."""
        if not self.use_roam:
            return self.normalize(g) @ self.normalize(t).T, None
        beta = self._orient("md,nkd->nmk", t, slots)
        r = torch.einsum("nmk,nkd->nmd", beta, slots)
        av, at = torch.sigmoid(self.gate_v), torch.sigmoid(self.gate_t)
        v2 = g[:, None] + av * (r - g[:, None])
        t2 = t[None] + at * (r - t[None])
        return (self.normalize(v2) * self.normalize(t2)).sum(-1), beta

    def score_state(self, state, texts):
        st = self.state_tensors(state)
        t = self._text_global(*self._words(texts))
        return self._final(st["global"], st.get("slots"), t)[0]

    def forward(self, images, texts):
        g, slots, att = self._visual(images)
        t = self._text_global(*self._words(texts))
        s, _ = self._final(g, slots, t)
        return {"scores": s, "image": g, "text": t, "roam": att}

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        st = {k: v[:1] for k, v in self.state_tensors(state).items()}
        words, mask, t0 = self._words([text])
        t = self._text_global(words, mask, t0)
        s, beta = self._final(st["global"], st.get("slots"), t)
        maps = {}
        if "roam" in st:
            att = st["roam"]
            maps["roam"] = att[0].cpu().numpy()
            maps["roam_text"] = torch.einsum("k,khw->hw", beta[0, 0], att[0]).cpu().numpy()
        else:
            maps["global"] = st["activation"][0].cpu().numpy()
        self._with_score_map(maps, st, text, "roam_score" if self.use_roam else "score")
        return Explanation(maps, self.tokens(text, mask), float(s[0, 0]))


@register_loss("dove")
def dove_loss(model: DOVE, out: dict, pairs: Pairs) -> dict:
    """Triplet on the final score, ROAM's overlap penalty and the global constraint (InfoNCE on global embeddings)."""
    s, cfg = out["scores"], model.config
    dup = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
    tri = losses.triplet(s, cfg.margin, mask=dup)
    res = {"loss": tri, "triplet": tri.detach()}
    if model.use_roam:  # redundancy-free: regional attention maps should not overlap
        a = F.normalize(out["roam"].flatten(2), dim=-1)
        gram = a @ a.transpose(1, 2)
        k = gram.shape[-1]
        div = (gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(-1)).mean() / (k * (k - 1))
        res["loss"] = res["loss"] + cfg.roam_div_weight * div
        res["roam_div"] = div.detach()
    if model.use_global:
        gs = model.normalize(out["image"]) @ model.normalize(out["text"]).T
        glob = losses.infonce(gs, temperature=0.1, mask=dup)
        res["loss"] = res["loss"] + cfg.global_weight * glob
        res["global"] = glob.detach()
    return res
