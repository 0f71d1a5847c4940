"""CCNet: Cross-modality Consistency Network (Sha et al., JSTARS 2025; seed 000).

What the abstract fixes: a Text-image Attention-conditioned Module (TAM) that lets visual and textual features
interact by cross-modal attention, focusing on semantically similar fine-grained image features and generating an
aggregated visual representation; a Co-occurrent Features Module (CFM) that estimates co-occurrence probabilities
by measuring fine-grained feature similarity, reinforcing the relations of target-consistent features across the
modalities; and a Cross-modality Distinction (CD) loss that compacts intra-class samples and separates
inter-class ones.

What we decided:
- Fine-grained features: image regions = the stride-16 map projected to the joint space (h*w regions); words =
  BiGRU word features. Fine-grained similarity s[t, r] = cosine(word t, region r).
- TAM: each word attends over the regions, a[t, r] = softmax_r(lambda * s[t, r]); the word's attended visual
  feature is sum_r a[t, r] v_r; the text-conditioned visual representation is their mean over the words.
  TAM score = cosine(that aggregate, global text feature). The attention a is what `explain` shows as "tam"
  ([T, h, w], one map per word).
- CFM: the co-occurrence probability of word t and region r is the joint softmax over all (t, r) of
  lambda * s[t, r] (a distribution over word-region pairs, `cfm` in `explain`, [T, h*w]). Its marginals weight
  the regions and the words: region weights p(r) pool the visual side, word weights p(t) pool the text side, so
  features that co-occur across modalities dominate both; CFM score = cosine of the two pooled features.
- Final score = mean of the global cosine and the enabled TAM / CFM scores. The global image feature (pooled
  stride-32 map) and text feature (mean of words) are what stage 1 indexes; with TAM or CFM on, score() is not
  separable and reranks.
- Loss: the bidirectional triplet (sum over negatives, margin 0.2) on the full score, plus the CD loss
  (rsdemo.losses.class_contrastive) on the global embeddings with weight `cd_weight`: classes are scene labels
  where the data has them, else the pair's image id.
- Score map ("score_map": true, models/common.py): each of the score's cosines splits over positions -- the global
  one over stride-32 positions (global_fc is linear), TAM's over regions (region r carries its mean word attention
  times its feature), CFM's over regions (its marginal p(r) times its feature) -- so a region's share of the final
  score is the mean of its shares of the three (the global one moved onto the region grid, common.spread):
  "tam_cfm_score" ("score" with both modules off), summing to the score. "tam", "cfm_regions" stay as read-outs.
- region_stride 8 (off by default): regions from the stride-8 map with the stride-16 map upsampled and
  concatenated, so a small object gets cells of its own (a 16x16 grid becomes 32x32 at 256 px). On the synthetic
  world at 256 px (8 epochs, val) it retrieved better (mR 82.19 vs 81.27) but its phrase maps pointed worse
  (tam_phrase 79.9% vs 84.0%), so no recipe turns it on.
- word_regions (the fine-grained cosines s[t, r]) feeds the token-level contrast, train.word_weight
  (losses.word_contrast). On the synthetic world it lowered the phrase maps' pointing, so no recipe turns it on.
Switches: use_tam, use_cfm, use_cd, region_stride (CCNetOptions). The loss (ccnet_loss, registered for the arch) reads
forward()'s full scores and global embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import losses
from .base import Explanation
from .base import Pairs
from .common import SeedModel, SeedOptions, global_positions, paired_dot, region_proj, regions, spread
from .registry import register, register_loss


@dataclass(kw_only=True)
class CCNetOptions(SeedOptions):
    use_tam: bool = True
    use_cfm: bool = True
    use_cd: bool = True
    cd_weight: float = 0.5
    attention_temperature: float = 10.0        # lambda of the word-region softmaxes
    region_stride: int = 16                    # 16: regions from the stride-16 map; 8: the stride-8 map with the
                                               # stride-16 one upsampled beside it (4x the regions)


@register("ccnet")
class CCNet(SeedModel):
    summary = ("CCNet lets each word of the description look for the image regions it matches and learns which "
               "words and regions tend to occur together.")  # one plain sentence for the page
    config_class = CCNetOptions

    def __init__(self, config: dict | CCNetOptions, name: str | None = None, vocab=None):
        super().__init__(config, name, vocab)
        config = self.config
        d = self.embed_dim
        c = self.backbone.channels
        self.use_tam = config.use_tam
        self.use_cfm = config.use_cfm
        self.use_cd = config.use_cd
        self.separable = not (self.use_tam or self.use_cfm)
        self.global_fc = nn.Linear(c[-1], d)
        if config.region_stride not in (8, 16):
            raise ValueError(f"ccnet: region_stride must be 8 or 16, got {config.region_stride}")
        self.level = 1 if config.region_stride == 16 else 0    # index of the map the regions' grid comes from
        if self.use_tam or self.use_cfm:
            self.region = region_proj(c[1] + (c[0] if self.level == 0 else 0), d)
            self.lam = config.attention_temperature

    def _region_map(self, feats):
        """The map regions come from: stride 16, or stride 8 with the stride-16 map upsampled beside it (the
        stride-8 map alone is early-layer texture; the stride-16 one carries what the object is)."""
        if self.level == 1:
            return feats[1]
        up = nn.functional.interpolate(feats[1], size=feats[0].shape[-2:], mode="nearest")
        return torch.cat([feats[0], up], 1)

    def _visual(self, images):
        feats = self._feats(images)
        g = self.global_fc(feats[-1].mean((2, 3)))
        reg = regions(self.region(self._region_map(feats))) if (self.use_tam or self.use_cfm) else None
        return g, reg, feats

    def encode_image(self, images):
        return self.normalize(self._visual(images)[0])

    def _state(self, images, positions):
        """{"global": pooled feature [N, d]; "regions": [N, h, w, d] (TAM or CFM on), else "activation" [N, h, w];
        "positions": the pooled feature's per-position shares [N, h32, w32, d] (with positions)}."""
        g, reg, feats = self._visual(images)
        extra = {"positions": global_positions(self.global_fc, feats[-1])} if positions else {}
        if reg is not None:
            return {"global": g, "regions": reg.unflatten(1, feats[self.level].shape[-2:]), **extra}
        return {"global": g, "activation": self.activation(feats[-1]), **extra}

    def score_map_state(self, state, texts):
        st = self.state_tensors(state)
        if "positions" not in st:
            return None
        g, pos = st["global"], st["positions"]
        words, mask, t = self._words(texts)
        th = self.normalize(t)
        glob = paired_dot(pos, th) / g.norm(dim=-1).clamp(min=1e-12)[:, None, None]
        if "regions" not in st:
            return glob
        reg4 = st["regions"]
        hw = reg4.shape[1:3]
        reg = reg4.flatten(1, 2)                                            # [N, R, d]
        sim = torch.einsum("nrd,ntd->ntr", self.normalize(reg), self.normalize(words))
        m = mask[:, :, None]
        parts = [spread(glob, hw)]
        if self.use_tam:
            w = ((self.lam * sim).softmax(-1) * m).sum(1) / m.sum(1).clamp(min=1)       # [N, R]
            agg = torch.einsum("nr,nrd->nd", w, reg)
            parts.append(w * torch.einsum("nrd,nd->nr", reg, th) / agg.norm(dim=-1, keepdim=True).clamp(min=1e-12))
        if self.use_cfm:
            logits = (self.lam * sim).masked_fill(~m, float("-inf"))
            joint = logits.flatten(1).softmax(-1).view_as(logits)                          # [N, T, R]
            p = joint.sum(1)
            pv = torch.einsum("nr,nrd->nd", p, reg)
            pt = torch.einsum("nt,ntd->nd", joint.sum(2), words)
            parts.append(p * torch.einsum("nrd,nd->nr", reg, self.normalize(pt))
                         / pv.norm(dim=-1, keepdim=True).clamp(min=1e-12))
        parts = [parts[0]] + [q.view(-1, *hw) for q in parts[1:]]
        return torch.stack(parts).mean(0)

    def _fine(self, reg, words):
        """Fine-grained cosine similarity [N, M, T, R] between every word and every region."""
        r = self.normalize(reg)
        w = self.normalize(words)
        return torch.einsum("nrd,mtd->nmtr", r, w)

    def _score(self, g, reg, words, mask, t, parts=False):
        out = []
        # [step, M, T, R] at a time: bounded memory for many texts, one pass over a whole shortlist for one text
        step = max(16, 1024 // max(1, words.shape[0]))
        for i in range(0, g.shape[0], step):
            gi = g[i:i + step]
            scores = [self.normalize(gi) @ self.normalize(t).T]
            extra = {}
            if self.use_tam or self.use_cfm:
                sim = self._fine(reg[i:i + step], words)
                m = mask[None, :, :, None]
                if self.use_tam:
                    att = (self.lam * sim).softmax(-1)                                    # over regions
                    # mean over words of each word's attended regions == regions weighted by the mean attention
                    w = (att * m).sum(2) / m.sum(2).clamp(min=1)
                    agg = torch.einsum("nmr,nrd->nmd", w, reg[i:i + step])
                    scores.append((self.normalize(agg) * self.normalize(t)[None]).sum(-1))
                    extra["tam"] = att
                if self.use_cfm:
                    logits = (self.lam * sim).masked_fill(~m, float("-inf"))
                    n, mm, T, R = logits.shape
                    joint = logits.view(n, mm, T * R).softmax(-1).view(n, mm, T, R)       # over (word, region)
                    pv = torch.einsum("nmr,nrd->nmd", joint.sum(2), reg[i:i + step])
                    pt = torch.einsum("nmt,mtd->nmd", joint.sum(3), words)
                    scores.append((self.normalize(pv) * self.normalize(pt)).sum(-1))
                    extra["cfm"] = joint
            out.append(torch.stack(scores).mean(0))
        s = torch.cat(out)
        return (s, extra) if parts else s

    def word_regions(self, images, texts):
        _, reg, _ = self._visual(images)
        if reg is None:
            raise ValueError("train.word_weight: ccnet matches words to regions only with use_tam or use_cfm on")
        words, mask, _ = self._words(texts)
        return self._fine(reg, words), mask

    def score_state(self, state, texts):
        st = self.state_tensors(state)
        reg = st["regions"].flatten(1, 2) if "regions" in st else None
        return self._score(st["global"], reg, *self._words(texts))

    def forward(self, images, texts):
        g, reg, _ = self._visual(images)
        words, mask, t = self._words(texts)
        return {"scores": self._score(g, reg, words, mask, t), "image": g, "text": t}

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        st = {k: v[:1] for k, v in self.state_tensors(state).items()}
        reg, hw = None, None
        if "regions" in st:
            hw, reg = st["regions"].shape[1:3], st["regions"].flatten(1, 2)
        words, mask, t = self._words([text])
        s, extra = self._score(st["global"], reg, words, mask, t, parts=True)
        T = int(mask.sum())
        maps, cfm = {}, None
        if "tam" in extra:
            maps["tam"] = extra["tam"][0, 0, :T].view(T, *hw).cpu().numpy()
        if "cfm" in extra:
            cfm = extra["cfm"][0, 0, :T].cpu().numpy()
            maps["cfm_regions"] = cfm.sum(0).reshape(*hw)
        if not maps:  # no fine-grained module on: the global feature map's activation is all there is
            maps["global"] = st["activation"][0].cpu().numpy()
        self._with_score_map(maps, st, text, "tam_cfm_score" if reg is not None else "score")
        return Explanation(maps, self.tokens(text, mask), float(s[0, 0]), cfm=cfm)


@register_loss("ccnet")
def ccnet_loss(model: CCNet, out: dict, pairs: Pairs) -> dict:
    """Triplet on the full score plus the CD loss on the global embeddings (classes: scene labels, else image ids)."""
    s = out["scores"]
    dup = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
    tri = losses.triplet(s, model.config.margin, mask=dup)
    res = {"loss": tri, "triplet": tri.detach()}
    if model.use_cd:
        cls = model.label_ids(pairs.labels)
        if cls is None or (cls < 0).any():
            ids = pairs.image_ids if pairs.image_ids is not None else list(range(len(pairs.captions)))
            cls = torch.as_tensor(ids, device=s.device)
        cd = losses.class_contrastive(model.normalize(out["image"]), model.normalize(out["text"]), cls)
        res["loss"] = tri + model.config.cd_weight * cd
        res["cd"] = cd.detach()
    return res
