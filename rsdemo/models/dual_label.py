"""The dual encoder (rsdemo.models.dual) plus scene-class agreement, for datasets with scene labels (UCM, RSICD...).

Remote-sensing caption sets are organised by scene class, and most of what a caption says is its class ("a piece of
farmland", "many planes parked at the airport"). Here both towers also predict the scene class, and the class
posteriors become part of the embedding, so the score rewards an image and a caption that agree on the class:

    e_img = [v / |v|, sqrt(w) * p_img] / norm,   e_txt = [t / |t|, sqrt(w) * p_txt] / norm
    score = e_img . e_txt  (separable: stage 1 of the search index is exact)

with p = softmax(class logits / class_temperature) and w = `class_weight`. Training: InfoNCE on that score
(identical captions of other images masked out of the negatives) plus cross-entropy of both class heads on the
scene labels (`label_loss` weight). The class list comes from the training data (the trainer writes it into the
config); with no classes the model is exactly the dual encoder. explain() is the dual encoder's maps.
Options (DualLabelOptions): class_weight, class_temperature, label_loss, multiscale. The loss (dual_label_loss,
registered for the arch) reads forward()'s fused scores, class logits and logit scale.
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
from .dual import DualEncoder, DualOptions
from .registry import register, register_loss


@dataclass(kw_only=True)
class DualLabelOptions(DualOptions):
    class_weight: float = 1.0
    class_temperature: float = 1.0
    label_loss: float = 1.0
    multiscale: bool = False


@register("dual-label")
class DualLabel(DualEncoder):
    summary = ("The two-tower model plus a scene-class guess on each side, so that an image and a description "
               "must also agree on the kind of scene.")  # one plain sentence for the page
    config_class = DualLabelOptions

    def __init__(self, config: dict | DualLabelOptions, name: str | None = None, vocab=None):
        super().__init__(config, name, vocab)
        config = self.config
        n = len(self.classes)
        # "multiscale": the image feature is the mean of all three maps (stride 8, 16, 32) side by side, not only
        # the last: counts and small objects (planes, cars, tanks) live in the finer maps
        self.multiscale = config.multiscale
        width = sum(self.backbone.channels) if self.multiscale else self.backbone.channels[-1]
        if self.multiscale:
            self.global_fc = nn.Linear(width, self.embed_dim)
        self.cls_img = nn.Linear(width, n) if n else None
        self.cls_txt = nn.Linear(self.embed_dim, n) if n else None
        self.class_weight = config.class_weight
        self.class_temperature = config.class_temperature
        if self.cls_img is not None and self.class_weight > 0:
            self.embed_dim += n   # the class posteriors are part of the embedding

    def _fuse(self, e: torch.Tensor, logits: torch.Tensor | None) -> torch.Tensor:
        e = self.normalize(e)
        if logits is None or self.class_weight <= 0:
            return e
        p = F.softmax(logits.float() / self.class_temperature, dim=-1)
        return self.normalize(torch.cat([e, math.sqrt(self.class_weight) * p], -1))

    def _image(self, images):
        feats = self._feats(images)
        f = feats[-1]
        if self.multiscale:   # finer maps pooled onto the last map's grid: the grid's mean is each map's mean
            f = torch.cat([F.adaptive_avg_pool2d(m, f.shape[-2:]) for m in feats[:-1]] + [f], 1)
        g = f.mean((2, 3))
        return self.global_fc(g), (self.cls_img(g) if self.cls_img is not None else None), f

    def _visual(self, images):
        v, _, f = self._image(images)
        return v, f

    def _text(self, texts):
        words, mask, t = self._words(texts)
        return t, (self.cls_txt(t) if self.cls_txt is not None else None), words, mask

    def encode_image(self, images):
        v, c, _ = self._image(images)
        return self._fuse(v, c)

    def encode_text(self, texts):
        t, c, _, _ = self._text(texts)
        return self._fuse(t, c)

    def forward(self, images, texts):
        v, ci, _ = self._image(images)
        t, ct, _, _ = self._text(texts)
        return {"scores": self._fuse(v, ci) @ self._fuse(t, ct).T, "image_logits": ci, "text_logits": ct,
                "logit_scale": self.logit_scale.clamp(max=math.log(100))}

    def position_embeddings(self, x):
        """Each position of the (multi-scale) map the image feature pools, through global_fc and the class head
        and fused as the pooled feature is: the embedding the image would have if it were that position alone."""
        f = self._image(x)[2].permute(0, 2, 3, 1)                                    # [N, h, w, C]
        return self._fuse(self.global_fc(f), self.cls_img(f) if self.cls_img is not None else None)

    def image_state(self, images):
        """{"global": [N, d] before the class fusion, "logits": image class logits [N, classes] (class head on),
        "positions": [N, h, w, d] each position of the pooled map through global_fc (the dual encoder's maps)}."""
        v, ci, f = self._image(images)
        st = {"global": v, "positions": self.global_fc(f.permute(0, 2, 3, 1))}
        return st if ci is None else {**st, "logits": ci}

    def state_embedding(self, state):
        st = self.state_tensors(state)
        return self._fuse(st["global"], st.get("logits"))

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        ex = super().explain_state(state, text)
        st = {k: v[:1] for k, v in self.state_tensors(state).items()}
        ex.score = float(self.score_state(st, [text])[0, 0])
        if self.classes and self.cls_txt is not None and "logits" in st:
            _, ct, _, _ = self._text([text])
            ex.notes["image_class"] = self.classes[int(st["logits"].argmax())]
            ex.notes["text_class"] = self.classes[int(ct.argmax())]
        return ex


@register_loss("dual-label")
def dual_label_loss(model: DualLabel, out: dict, pairs: Pairs) -> dict:
    """InfoNCE on the class-fused score plus both class heads' cross-entropy on the scene labels."""
    s, ci, ct = out["scores"], out["image_logits"], out["text_logits"]
    mask = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
    nce = losses.infonce(s, logit_scale=out["logit_scale"], mask=mask)
    res = {"loss": nce, "infonce": nce.detach()}
    cls = model.label_ids(pairs.labels)
    if cls is not None and ci is not None and (cls >= 0).any():
        ce = 0.5 * (F.cross_entropy(ci, cls, ignore_index=-1) + F.cross_entropy(ct, cls, ignore_index=-1))
        res["loss"] = nce + model.config.label_loss * ce
        res["label_ce"] = ce.detach()
    return res
