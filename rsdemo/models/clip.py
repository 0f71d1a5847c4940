"""CLIP: any open_clip architecture as a retrieval model (RemoteCLIP, GeoRSCLIP, or a small one trained here).

Architecture (config keys):
- "clip_model": an open_clip model name ("ViT-B-32", "RN50", "ViT-L-14", ...; "ViT-B/32" is accepted too), or
- "clip_config": an inline open_clip model config {"embed_dim", "vision_cfg", "text_cfg", ...}, the schema of
  open_clip's model_configs/*.json, for custom or tiny models. "clip_config" wins when both are given.
- "quick_gelu": true builds the QuickGELU variant (what weights derived from OpenAI's CLIP were trained with;
  GeoRSCLIP's example builds its model from OpenAI's weights, RemoteCLIP's example from the plain name).
The open_clip model is the submodule `self.model`, so our state_dict keys are "model." + open_clip's and
rsdemo.checkpoint can save a fine-tuned model and rebuild it from the config alone.
Image size comes from the vision config (a conflicting "image_size" is refused); normalisation is CLIP's.

Weights ("pretrained"), all loaded strictly (every key must match, shapes included):
- None: random init.
- a file: .safetensors (safetensors.torch.load_file) or .pt/.pth/.bin (torch.load(weights_only=True), so a
  pickle that would build arbitrary objects is refused, never run). A {"state_dict": ...} wrapper and "module."
  prefixes (DataParallel/DDP saves, e.g. GeoRSCLIP's RS5M_ViT-B-32.pt) are removed; RemoteCLIP-*.pt are plain
  state dicts of the same-named open_clip model.
- a folder in open_clip's hub layout: open_clip_config.json (its "model_cfg" then defines the architecture and
  is copied into our config as "clip_config", so a saved checkpoint rebuilds without the folder) and one weights
  file (open_clip_model.safetensors, open_clip_pytorch_model.bin, ...).
- "hf-hub:org/repo": the same files fetched from the Hugging Face hub; needs the network (or the hub cache).
  Offline, a ValueError says so and that a local path works.
open_clip's named pretrained tags ("openai", "laion2b_...") are not used: they download, and we must run offline.
The options above are CLIPOptions; image_size, normalize and embed_dim are derived (written into the config).

Text: open_clip's tokenizer for named models (the bundled BPE vocabulary, works offline); for an inline config,
open_clip's SimpleTokenizer with the config's context length.

explain() gives "patch_sim" [gh, gw], the cosine between the text embedding and each image position mapped into
the joint space the way the tower maps its pooled feature:
- ViT: each patch token after the last block through ln_post and proj (what the class token goes through).
  The global embedding is the class token, not a mix of these, so this is the usual dense reading of CLIP
  (as in MaskCLIP), not an attribution.
- ModifiedResNet (RN50, ...): each position of the last feature map (plus its positional embedding) through the
  attention pool's value and output projections, c_proj(v_proj(x_i + pos_i)). Per head, the pooled embedding
  is an attention-weighted mix of these (and of the mean token's), so the map shows what each position would
  contribute to the global embedding.
- other towers (timm, attentional poolers): no map; notes say why.
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import losses
from ..data.text import tokenize
from ..data.transforms import NORMS
from ..files import read_state
from .base import CamTarget, Explanation, Pairs, RetrievalModel
from .options import Options
from .registry import register, register_loss

HUB = "hf-hub:"
# open_clip's hub layout, in the order open_clip prefers them
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _named_config(name: str) -> dict:
    import open_clip

    cfg = open_clip.get_model_config(name.replace("/", "-"))
    if cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models()")
    return cfg


def _folder(path: Path) -> tuple[dict | None, dict, Path]:
    """(model_cfg or None, preprocess_cfg, weights file) of a folder in open_clip's hub layout."""
    model_cfg, pre = None, {}
    cfg_file = path / "open_clip_config.json"
    if cfg_file.is_file():
        doc = json.loads(cfg_file.read_text())
        model_cfg, pre = doc.get("model_cfg", doc), doc.get("preprocess_cfg", {})
    named = [path / n for n in WEIGHT_NAMES if (path / n).is_file()]
    found = named or sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not named and len(found) != 1:
        raise ValueError(f"{path}: expected one weights file ({', '.join(WEIGHT_NAMES)}), found "
                         f"{[p.name for p in found] or 'none'}")
    return model_cfg, pre, found[0]


def _hub(spec: str) -> tuple[dict | None, dict, Path]:
    """Fetches an hf-hub:org/repo's open_clip files into the local cache; offline only the cache is looked at."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo = spec[len(HUB):]
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    hint = "download the repository's files and pass the local folder or weights file as 'pretrained'"
    try:
        doc = json.loads(Path(hf_hub_download(repo, "open_clip_config.json", local_files_only=offline)).read_text())
        for name in WEIGHT_NAMES:
            try:
                weights = Path(hf_hub_download(repo, name, local_files_only=offline))
                break
            except LocalEntryNotFoundError:
                raise
            except EntryNotFoundError:
                continue
        else:
            raise ValueError(f"{spec}: no open_clip weights file in the repository ({', '.join(WEIGHT_NAMES)})")
    except LocalEntryNotFoundError as e:
        raise ValueError(f"{spec}: the Hugging Face hub is unreachable{' (HF_HUB_OFFLINE is set)' if offline else ''}"
                         f" and the files are not cached ({type(e).__name__}); {hint}") from None
    except ValueError:
        raise
    except Exception as e:  # connection errors, unknown repository, ...
        raise ValueError(f"{spec}: could not fetch from the Hugging Face hub ({type(e).__name__}: {e}); "
                         f"{hint}") from None
    return doc.get("model_cfg", doc), doc.get("preprocess_cfg", {}), weights


def _norm_name(pre: dict) -> str | None:
    """Our name for a preprocess_cfg's mean/std, where it is one we know."""
    if "mean" not in pre or "std" not in pre:
        return None
    for name, (mean, std) in NORMS.items():
        if all(abs(a - b) < 1e-4 for a, b in zip([*pre["mean"], *pre["std"]], [*mean, *std])):
            return name
    return None


def _open_clip_model(cfg: dict):
    import open_clip

    cfg = copy.deepcopy(cfg)
    if "multimodal_cfg" in cfg:
        raise ValueError("CoCa (multimodal_cfg) models are not supported: they are captioners, not dual encoders")
    text, vision = cfg.setdefault("text_cfg", {}), cfg.setdefault("vision_cfg", {})
    if "timm_model_name" in vision:
        vision["timm_model_pretrained"] = False   # never download tower weights; ours come from "pretrained"
    if "hf_model_name" in text:
        text["hf_model_pretrained"] = False
    custom = cfg.pop("custom_text", False) or "hf_model_name" in text
    return (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg)


@dataclass(kw_only=True)
class CLIPOptions(Options):
    clip_model: str | None = None
    clip_config: dict | None = None
    quick_gelu: bool = False
    embed_dim: int | None = None               # derived from the open_clip config
    image_size: int | None = None              # derived from its vision config (a different value is refused)
    normalize: str | None = None               # derived from the weights' preprocess config, else CLIP's


@register("clip")
class CLIP(RetrievalModel):
    summary = ("CLIP: an image network and a text network trained together so that a picture and its "
               "description end up close.")  # one plain sentence for the page
    separable = True
    config_class = CLIPOptions

    def __init__(self, config: dict | CLIPOptions, name: str | None = None, vocab=None):
        config = CLIPOptions.parse(config, name or "clip")   # a copy: we record derived keys in it
        pre, weights = {}, None
        src = config.pretrained
        if src:
            src = str(src)
            if src.startswith(HUB):
                arch, pre, weights = _hub(src)
            elif Path(src).is_dir():
                arch, pre, weights = _folder(Path(src))
            elif Path(src).is_file():
                arch, weights = None, Path(src)
            else:
                raise ValueError(f"pretrained {src!r}: no such file or folder (give a local weights file, an "
                                 f"open_clip folder, or hf-hub:org/repo)")
            if arch is not None:  # the weights' own architecture; kept so a saved checkpoint needs no folder
                config.clip_config = arch
                config.clip_model = None
        if config.clip_config:
            model_cfg = copy.deepcopy(config.clip_config)
        elif config.clip_model:
            model_cfg = _named_config(config.clip_model)
        else:
            raise ValueError(f"model config {name!r} needs 'clip_model' (an open_clip name) or 'clip_config'")
        if config.quick_gelu:
            model_cfg["quick_gelu"] = True
        model_cfg.pop("preprocess_cfg", None)

        size = model_cfg["vision_cfg"].get("image_size", 224)
        size = size if isinstance(size, int) else size[0]
        if config.image_size not in (None, size):
            raise ValueError(f"image_size {config.image_size} differs from the open_clip vision config's {size}; "
                             f"change vision_cfg.image_size instead")
        config.image_size = size
        config.normalize = config.normalize or _norm_name(pre) or "clip"
        config.embed_dim = int(model_cfg["embed_dim"])
        super().__init__(config, name)
        self.model = _open_clip_model(model_cfg)
        self._text_cfg = model_cfg.get("text_cfg", {})
        self._tokenizer = None
        if weights is not None:
            self.load_weights(weights)

    # ---- weights -----------------------------------------------------------------------------------
    def load_weights(self, path) -> None:
        """Loads an open_clip state dict file into self.model, strictly; ValueError naming the file otherwise."""
        state = read_state(path)
        own = self.model.state_dict()
        # open_clip stores logit_scale as a scalar or a [1] tensor depending on the config: same value
        for k in ("logit_scale", "logit_bias"):
            if k in state and k in own and state[k].numel() == own[k].numel():
                state[k] = state[k].reshape(own[k].shape)
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]
        if missing or unexpected or wrong:
            arch = self.config.clip_model or "the inline clip_config"
            raise ValueError(f"{path}: weights do not fit open_clip {arch} (missing {len(missing)}: {missing[:5]}, "
                             f"unexpected {len(unexpected)}: {unexpected[:5]}, wrong shape {len(wrong)}: {wrong[:3]})")
        self.model.load_state_dict(state, strict=True)

    # ---- text --------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:  # built on first use: reading the BPE vocabulary takes a moment
            import open_clip

            if self.config.clip_config or not self.config.clip_model:
                ctx = int(self._text_cfg.get("context_length", 77))
                if self._text_cfg.get("hf_tokenizer_name"):
                    self._tokenizer = open_clip.tokenizer.HFTokenizer(self._text_cfg["hf_tokenizer_name"],
                                                                      context_length=ctx)
                else:
                    self._tokenizer = open_clip.SimpleTokenizer(context_length=ctx,
                                                                **self._text_cfg.get("tokenizer_kwargs", {}))
            else:
                self._tokenizer = open_clip.get_tokenizer(self.config.clip_model.replace("/", "-"))
        return self._tokenizer

    def tokenize(self, texts):
        return self.tokenizer(list(texts))

    def _text(self, texts) -> torch.Tensor:
        return self.model.encode_text(self._texts(texts).to(self.device))

    def encode_text(self, texts):
        return self.normalize(self._text(texts))

    # ---- image -------------------------------------------------------------------------------------
    def _image_batch(self, images) -> torch.Tensor:
        x = self._images(images)
        return x.unsqueeze(0) if x.dim() == 3 else x

    def encode_image(self, images):
        return self.normalize(self.model.encode_image(self._image_batch(images)))

    # ---- training ----------------------------------------------------------------------------------
    def forward(self, images, texts):
        # CLIP caps the temperature at 1/100; clamping here (not in place) keeps the stored parameter untouched
        return {"scores": self.encode_image(images) @ self.encode_text(texts).T,
                "logit_scale": self.model.logit_scale.clamp(max=math.log(100))}

    # ---- explanation -------------------------------------------------------------------------------
    def image_state(self, images):
        """{"global": the tower's pooled embedding [N, D], "positions": [N, gh, gw, D] (see the module docstring;
        ViT and ModifiedResNet towers)}, from one pass through the tower."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        x = self._image_batch(images)
        v = self.model.visual
        if isinstance(v, VisionTransformer) and getattr(v, "attn_pool", None) is None and v.proj is not None:
            t = v.transformer(v._embeds(x))                    # what v.forward runs, tokens kept
            pooled, _ = v._pool(t)
            pos = v.ln_post(t[:, 1:]) @ v.proj                   # the patch tokens (class token first)
            return {"global": pooled @ v.proj, "positions": pos.reshape(x.shape[0], *v.grid_size, -1)}
        if isinstance(v, ModifiedResNet):
            f = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
            n, c, h, w = f.shape
            p = v.attnpool
            tok = f.flatten(2).transpose(1, 2) + p.positional_embedding[1:].to(f.dtype)   # [N, HW, C]
            return {"global": p(f), "positions": p.c_proj(p.v_proj(tok)).reshape(n, h, w, -1)}
        return {"global": self.model.encode_image(x)}

    def position_embeddings(self, x: torch.Tensor) -> torch.Tensor | None:
        """Per-position embeddings [N, gh, gw, D] in the joint space, or None where the tower has no such map."""
        return self.image_state(x).get("positions")

    @torch.no_grad()
    def explain_state(self, state, text: str) -> Explanation:
        st = {k: v[:1] for k, v in self.state_tensors(state).items()}
        t = self.encode_text([text])
        s = float(self.state_embedding(st) @ t[0])
        if "positions" not in st:
            return Explanation({}, tokenize(text), s,
                               notes={"patch_sim": f"no per-position map for {type(self.model.visual).__name__}"})
        sim = (self.normalize(st["positions"][0]) * t[0]).sum(-1)   # cosine per position, [gh, gw]
        return Explanation({"patch_sim": sim.cpu().numpy()}, tokenize(text), s)

    def cam_target(self) -> CamTarget | None:
        """ModifiedResNet: layer4's output. ViT: the last block's *input*: CLIP pools the class token, so the last
        block's output patch tokens never reach the score (zero gradient); its input tokens do, through that
        block's attention. Other towers: None."""
        from open_clip.modified_resnet import ModifiedResNet
        from open_clip.transformer import VisionTransformer

        v = self.model.visual
        if isinstance(v, ModifiedResNet):
            return CamTarget(v.layer4, False, lambda out: out, lambda t: t)
        if isinstance(v, VisionTransformer):
            gh, gw = v.grid_size
            first = getattr(v.transformer, "batch_first", True)

            def grid(t):
                tok = t if first else t.transpose(0, 1)                          # [N, L, D]
                tok = tok[:, -gh * gw:]                                           # patch tokens (class token first)
                return tok.transpose(1, 2).reshape(tok.shape[0], -1, gh, gw)
            return CamTarget(v.transformer.resblocks[-1], True, lambda args: args[0], grid)
        return None


@register_loss("clip")
def clip_loss(model: CLIP, out: dict, pairs: Pairs) -> dict:
    """Symmetric InfoNCE with the learned (clamped) temperature; identical captions of other images masked."""
    s, scale = out["scores"], out["logit_scale"]
    mask = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
    loss = losses.infonce(s, logit_scale=scale, mask=mask)
    return {"loss": loss, "infonce": loss.detach(), "logit_scale": scale.detach().exp().reshape(())}
