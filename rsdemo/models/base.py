"""The one model contract every registered model implements (seed papers and CLIP alike).

encode_image / encode_text give L2-normalised global embeddings comparable by dot product (stage 1, FAISS);
score gives the model's full matching score (equal to the dot product for separable models, the paper's
cross-modal score otherwise, used to rerank); explain gives the model's own named maps; forward gives the
training outputs of a batch of matched pairs, which the loss registered beside the model (@register_loss in its
file) turns into the objective. The model never trains itself: rsdemo.training does.

The split contract (score and explain without the image backbone): image_state(images) computes everything score
and explain read from an image -- a dict of tensors, each with the batch first (pooled feature, region features,
regional slots, saliency maps, per-position embeddings) -- and score_state(state, texts) / explain_state(state,
text) read only that dict and the texts (or text_state(texts): the text side computed once for both stages).
score(images, texts) is score_state(image_state(images), texts) and
explain(image, text) is explain_state(image_state(image), text): one implementation, so a state cached at index
time (rsdemo.index stores it, float16 by default) scores exactly as the pixels do. state_embedding(state) is the
stage-1 embedding, so an index computes both in one pass. A model implements image_state (or only encode_image:
the default state is its pooled embedding); state tensors may arrive as float16 numpy rows (state_tensors casts).

What we decided: the trainer, the explainers and the feature cache never ask which architecture they hold; they
ask the model through these hooks (each with a default that suits a model without the feature):
- config_class: the architecture's typed options (rsdemo.models.options); self.config is an instance of it.
- uses_vocabulary(config): the text encoder reads a word vocabulary built from the training captions.
- frozen_encoders(): the encoders that keep pretrained weights ({"image": module, "text": module}); the trainer and
  evaluator feed their cached outputs (rsdemo.features) instead of running them.
- parameter_groups(): trainable parameters split into "heads" and "pretrained" (pretrained layers that train at
  train.backbone_lr_scale of the learning rate).
- position_embeddings(x): each image position mapped into the joint space the way the pooled feature is, for the
  region-similarity baseline; cam_target(): where Grad-CAM reads its activation.
- rebuilt_at_load(): state-dict prefixes a checkpoint leaves out (frozen pip-installed encoders, rebuilt at load).
- score_map_state(state, texts) / score_maps(images, texts): the score split over image positions, pair by pair
  (seed models, models/common.py), read by explain and by the grounding objective.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import image_transform
from .options import Options


@dataclass
class Explanation:
    """Maps at feature resolution: name -> [h, w] (one map) or [T, h, w] (one per token)."""
    maps: dict[str, np.ndarray]
    tokens: list[str]
    score: float
    cfm: np.ndarray | None = None       # [T, h*w] word x region co-occurrence, where the model has one
    notes: dict = field(default_factory=dict)


class Pairs(NamedTuple):
    """What a loss knows about a batch besides the model's outputs: pair i is (image i, captions[i])."""
    captions: list[str]
    labels: list | None = None          # scene label per pair (None entries: unknown)
    image_ids: list | None = None       # which image each pair comes from: two captions of one image are no negatives


class CamTarget(NamedTuple):
    """Where Grad-CAM reads a model's activation: the hooked `module` (its input when `pre`, else its output),
    `pick` (hooked value -> the tensor gradients are taken on) and `to_map` (that tensor -> [N, C, h, w])."""
    module: nn.Module
    pre: bool
    pick: object
    to_map: object


class RetrievalModel(nn.Module):
    arch = "base"
    separable = True                    # score(i, t) == encode_image(i) @ encode_text(t).T
    config_class = Options
    vocab = None                        # the word vocabulary, where uses_vocabulary (checkpoints store it)
    state_version = 1                   # bumped when what image_state holds changes meaning: saved indexes whose
                                        # state came from another version are rebuilt (rsdemo.index)

    def __init__(self, config: dict | Options, name: str | None = None):
        super().__init__()
        cfg = type(self).config_class.parse(config, name or self.arch)
        if cfg.arch not in ("", self.arch):
            raise ValueError(f"model config {name!r} is for arch {cfg.arch!r}, not {self.arch!r}")
        cfg.arch = self.arch
        self.config = cfg
        self.name = name or self.arch
        self.embed_dim = int(cfg.embed_dim)

    # ---- serving-time memo of encoded texts --------------------------------------------------------------
    _memo = None

    def remember_texts(self, n: int = 256) -> None:
        """Keeps the text side of the last `n` single texts (a text query, then the explanation of one of its
        results, encode the same words: the second time is free). For serving a fixed model only (the Demo turns
        it on): train() forgets everything, and nothing is kept while gradients are recorded."""
        self._memo = (OrderedDict(), threading.Lock(), int(n))

    def recall_text(self, texts, compute):
        """compute(texts), or what it returned for the same single text before (remember_texts on)."""
        memo = self._memo
        if (memo is None or torch.is_grad_enabled() or self.training or not isinstance(texts, (list, tuple))
                or len(texts) != 1 or not isinstance(texts[0], str)):
            return compute(texts)
        seen, lock, n = memo
        with lock:
            if texts[0] in seen:
                seen.move_to_end(texts[0])
                return seen[texts[0]]
        out = compute(texts)
        with lock:
            seen[texts[0]] = out
            while len(seen) > n:
                seen.popitem(last=False)
        return out

    def train(self, mode: bool = True):
        if mode and self._memo is not None:   # weights are about to change: what was encoded is stale
            self._memo[0].clear()
        return super().train(mode)

    # ---- inputs ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def preprocess(self, images) -> torch.Tensor:
        """PIL images (or one) -> normalised batch tensor for this model, on its device."""
        tf = image_transform(self.config.image_size, self.config.normalize)
        if not isinstance(images, (list, tuple)):
            images = [images]
        return torch.stack([tf(im) for im in images]).to(self.device)

    def tokenize(self, texts: list[str]):
        raise NotImplementedError

    def _images(self, images) -> torch.Tensor:
        return images.to(self.device) if torch.is_tensor(images) else self.preprocess(images)

    def one_image(self, image) -> torch.Tensor:
        """One PIL image or a preprocessed [3, H, W] / [1, 3, H, W] tensor -> a batch of one."""
        x = self._images(image if torch.is_tensor(image) else [image])
        return x.unsqueeze(0) if x.dim() == 3 else x[:1]

    def state_tensors(self, state: dict) -> dict[str, torch.Tensor]:
        """A state (tensors or float16 numpy rows from an index) as float32 tensors on the model's device; a
        float32 state already there is returned as is, so scoring from pixels is untouched."""
        return {k: torch.as_tensor(v).to(self.device, torch.float32) for k, v in state.items()}

    def _texts(self, texts):
        if isinstance(texts, str):
            texts = [texts]
        return self.tokenize(texts) if isinstance(texts, (list, tuple)) else texts

    # ---- contract ----------------------------------------------------------------------------------
    def encode_image(self, images) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts) -> torch.Tensor:
        raise NotImplementedError

    def image_state(self, images) -> dict[str, torch.Tensor]:
        """What score and explain read from images, each tensor with the batch first (default: the embedding)."""
        return {"global": self.encode_image(images)}

    def state_embedding(self, state: dict) -> torch.Tensor:
        """The stage-1 embedding (L2-normalised, [N, d]) of an image state."""
        return self.normalize(self.state_tensors(state)["global"])

    def score_state(self, state: dict, texts) -> torch.Tensor:
        """Full scores [N, M] of image states against texts (default: the embedding dot product)."""
        return self.state_embedding(state) @ self.encode_text(texts).T

    def explain_state(self, state: dict, text: str) -> Explanation:
        """The model's own maps of the first image of a state against text."""
        raise NotImplementedError(f"{type(self).__name__} explains from pixels only (no explain_state)")

    def score_map_state(self, state: dict, texts) -> torch.Tensor | None:
        """Pair i's score split over image positions, [N, h, w]: image i of the state against texts[i], the sum over
        positions being that score; None where the state holds no per-position shares (see models/common.py)."""
        return None

    def score_maps(self, images, texts) -> torch.Tensor:
        """score_map_state of images whatever the config says (differentiable): the grounding objective's input
        (train.mosaic_weight, rsdemo.training)."""
        raise NotImplementedError(f"{type(self).__name__} has no score maps (train.mosaic_weight needs them)")

    def grounding_maps(self, images, texts) -> list[torch.Tensor]:
        """The maps the grounding objective trains, each [N, h, w] against its own tile loss: the score split
        (score_maps), and where a model's option says so, the share of the module its map is named after, so the
        module learns to point on its own rather than ride on the rest of the split (DOVE's roam_mosaic)."""
        return [self.score_maps(images, texts)]

    def word_regions(self, images, texts):
        """(sim [N, M, T, R]: cosine of every text's word t with every image's region r, mask [M, T]) where the
        architecture matches words to regions (differentiable): the token-level contrast's input
        (train.word_weight, rsdemo.training)."""
        raise ValueError(f"{type(self).__name__} has no word-region similarity (train.word_weight needs it; "
                         f"ccnet has)")

    def text_state(self, texts):
        """The text side computed once, accepted wherever texts are (encode_text, score_state): a search that needs
        both the stage-1 query embedding and the full score encodes its text once (default: the texts as given)."""
        return texts

    def score(self, images, texts) -> torch.Tensor:
        return self.score_state(self.image_state(images), texts)

    def explain(self, image, text: str) -> Explanation:
        return self.explain_state(self.image_state(self.one_image(image)), text)

    def explains_state(self) -> bool:
        """Whether explain_state is implemented (a model may define only explain(image, text))."""
        return type(self).explain_state is not RetrievalModel.explain_state

    def forward(self, images, texts) -> dict[str, torch.Tensor]:
        """Training outputs of a batch of matched pairs (image i <-> texts[i]): whatever the model's registered
        loss reads, e.g. {"scores": [B, B] full scores, ...}. Images and texts may be the cached outputs of
        frozen encoders (rsdemo.features)."""
        raise NotImplementedError

    # ---- hooks (see the module docstring) ----------------------------------------------------------
    @classmethod
    def uses_vocabulary(cls, config: Options) -> bool:
        return False

    def frozen_encoders(self) -> dict[str, nn.Module]:
        return {}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"heads": [p for p in self.parameters() if p.requires_grad], "pretrained": []}

    def position_embeddings(self, x: torch.Tensor) -> torch.Tensor | None:
        """[N, h, w, d] joint-space embedding of each image position of a preprocessed batch, or None."""
        return None

    def cam_target(self) -> CamTarget | None:
        return None

    def rebuilt_at_load(self) -> list[str]:
        return []

    # ---- helpers -----------------------------------------------------------------------------------
    def switches(self) -> dict[str, bool]:
        """The config's module switches (use_*), for ablations and model cards."""
        return self.config.switches()

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)
