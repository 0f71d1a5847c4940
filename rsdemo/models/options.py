"""Typed model configs: every key a JSON config, `--set` or create_model(**overrides) may give is a declared field.

What we decided:
- Each architecture declares its options as a dataclass beside its model (AMFMNOptions in amfmn.py, ...), derived
  from the shared ones here: `Options` (every model: arch, description, embed_dim, image_size, normalize,
  pretrained, classes, the `train` section) and, in models/common.py, `SeedOptions` (backbone, text, freeze,
  tune_top, ...). A default lives in one place: its field.
- `parse` checks every key and every value's type: an unknown key fails with the valid keys and a "did you mean"
  (difflib), also inside the `train` section ("train.lrr"); a value of the wrong type fails naming the key and the
  expected type. A misspelt switch (use_mvas) can no longer build a model with the switch silently left on.
- Keys older checkpoints stored under another name are listed in the class's `renamed` ({old: new}) and read as
  the new key, so every committed checkpoint still loads.
- `as_dict()` gives every field, defaults included: checkpoints and cards store the complete config, so a later
  change of a default cannot change what an old checkpoint rebuilds.
- `TrainOptions` is the config's `train` section (optimiser, schedule, epochs, batch size, views, ...), read by
  rsdemo.training.

This module imports nothing of the package (a leaf).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Literal, Union


class Typed:
    """parse / as_dict / replace for the option dataclasses below and in the model files."""

    renamed = {}   # keys older configs used -> today's field name (a plain class attribute, not an option)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def parse(cls, data, where: str = "", prefix: str = ""):
        """A validated instance from a plain dict (a JSON config, overrides); ValueError naming the bad key."""
        if isinstance(data, cls):
            return copy.deepcopy(data)
        if not isinstance(data, dict):
            raise ValueError(f"{where or cls.__name__}: {prefix.rstrip('.') or 'the config'} must be a mapping of "
                             f"options, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        valid = cls.keys()
        out = {}
        for key, value in data.items():
            name = cls.renamed.get(key, key)
            if name not in valid:
                raise ValueError(unknown_key(f"{prefix}{key}", [f"{prefix}{k}" for k in valid], where))
            if key != name and name in data:
                continue   # the old spelling beside the new one: the new one wins
            out[name] = _value(value, hints[name], f"{prefix}{name}", where)
        return cls(**out)

    def as_dict(self) -> dict:
        return {f.name: (getattr(self, f.name).as_dict() if isinstance(getattr(self, f.name), Typed)
                         else copy.deepcopy(getattr(self, f.name))) for f in dataclasses.fields(self)}

    def replace(self, **changes):
        """A validated copy with `changes` (nested dicts merge into nested options)."""
        base = self.as_dict()
        for k, v in changes.items():
            base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) and \
                isinstance(getattr(self, k, None), Typed) else v
        return type(self).parse(base)


def unknown_key(key: str, valid: list[str], where: str = "") -> str:
    """The error for an unknown key: the nearest valid ones (compared without the section prefix) and all."""
    pre = key[: key.rfind(".") + 1]
    near = [pre + k for k in difflib.get_close_matches(key[len(pre):], [v[len(pre):] for v in valid], n=2,
                                                        cutoff=0.6)]
    hint = f" (did you mean {' or '.join(repr(k) for k in near)}?)" if near else ""
    return f"{where + ': ' if where else ''}unknown option {key!r}{hint}; valid options: {', '.join(valid)}"


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _fits(value, tp):
    """(True, value converted) when value is of type tp, else (False, None)."""
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return True, value
    if origin in (Union, types.UnionType):
        for a in typing.get_args(tp):
            ok, v = _fits(value, a)
            if ok:
                return True, v
        return False, None
    if origin is Literal:
        return (value in typing.get_args(tp) and not isinstance(value, bool)
                or any(value is a for a in typing.get_args(tp))), value
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, None
        (item,) = typing.get_args(tp) or (typing.Any,)
        got = [_fits(v, item) for v in value]
        return all(ok for ok, _ in got), [v for _, v in got]
    if tp is dict or origin is dict:
        return isinstance(value, dict), copy.deepcopy(value)
    return isinstance(value, tp), value


def _value(value, tp, key: str, where: str):
    if isinstance(tp, type) and issubclass(tp, Typed):
        return tp.parse(value, where, prefix=f"{key}.")
    ok, v = _fits(value, tp)
    if not ok:
        raise ValueError(f"{where + ': ' if where else ''}option {key!r} expects {_type_name(tp)}, got {value!r}")
    return v


@dataclass(kw_only=True)
class TrainOptions(Typed):
    """The config's `train` section: how rsdemo.training trains this model (CLI flags override epochs/batch/lr)."""
    epochs: int = 10
    batch_size: int = 64                     # the global batch (split across DDP ranks)
    lr: float = 2e-4
    optimizer: Literal["adam", "adamw"] = "adam"
    weight_decay: float | None = None        # None: 0.1 with adamw, 0 with adam
    schedule: Literal["step", "cosine"] = "step"
    step_epochs: int = 20                    # step schedule: lr x gamma every step_epochs epochs (AMFMN's)
    gamma: float = 0.7
    warmup_steps: int | None = None          # cosine schedule: None = min(100, total steps // 10)
    grad_clip: float | None = 2.0            # max gradient norm; null or 0: no clipping
    amp: bool = True                         # bf16 autocast on CUDA
    views: int = 1                           # dihedral views of cached images (needs a frozen image encoder)
    backbone_lr_scale: float = 0.1           # lr factor of pretrained layers that train (a model's tune_top)
    # the grounding objective (rsdemo.training.inputs, losses.tile_loss): 2x2 mosaics of training photos of four
    # scene classes; a caption of one tile must find that tile through the model's own score map (score_maps)
    mosaic_weight: float = 0.0               # its weight beside the retrieval loss; 0: off
    mosaics: int = 2000                      # mosaics built (through the frozen backbone once, cached)
    mosaic_batch: int = 32                   # mosaics per step
    mosaic_scale: float = 20.0               # logit scale of the per-tile shares of the score
    mosaic_size: int = 512                   # mosaic side before the model's resize (rsdemo.grounding's 512)
    # object mosaics in the same pool (UC Merced multi-labels, rsdemo.data.labels.object_mosaics): an object word
    # ("cars") must find the one tile whose photo holds it, the others from that photo's scene class where the
    # labels allow, so a tile's scene does not give the answer away
    object_mosaics: int = 0                  # per object word; 0: off
    multilabels: str = ""                    # labels_by_id.csv of the training photos' ids, or its folder
    # token-level contrast (losses.word_contrast on the model's word_regions): each word's best-matching region,
    # averaged over the caption's words, must score the caption's own image above the batch's other images
    word_weight: float = 0.0                 # its weight beside the retrieval loss; 0: off
    word_scale: float = 20.0                 # its logit scale


@dataclass(kw_only=True)
class Options(Typed):
    """What every architecture's config has."""
    arch: str = ""
    description: str = ""
    embed_dim: int = 512
    image_size: int = 256
    normalize: str = "imagenet"              # rsdemo.data.transforms.NORMS: imagenet, [-1,1], clip
    pretrained: str | bool | None = None     # weights to start from (what they are is the architecture's business)
    classes: list[str] = field(default_factory=list)   # scene classes, written by the trainer from the labels
    train: TrainOptions = field(default_factory=TrainOptions)

    def switches(self) -> dict[str, bool]:
        """The module switches (use_*), for ablations and model cards."""
        return {k: bool(v) for k, v in self.as_dict().items() if k.startswith("use_")}
