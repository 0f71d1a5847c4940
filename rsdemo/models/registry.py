"""Model registry and factory (like open_clip): one JSON config per model name, one class per architecture.

A new model is one file in rsdemo/models/ that decorates its class with @register("arch") plus one JSON in
rsdemo/model_configs/ naming that arch; list_models() then returns it and every registry test covers it.
"""
from __future__ import annotations

import copy
import importlib
import json
import os
import pkgutil
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "model_configs"
CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"
_ARCHS: dict[str, type] = {}
_loaded = False


def register(arch: str):
    def deco(cls):
        cls.arch = arch
        _ARCHS[arch] = cls
        return cls
    return deco


def _discover() -> None:
    """Imports every module in rsdemo.models once, so each registers its architecture."""
    global _loaded
    if _loaded:
        return
    from .. import models

    for m in pkgutil.iter_modules(models.__path__):
        if m.name not in ("registry", "base", "backbones", "common"):
            importlib.import_module(f"{models.__name__}.{m.name}")
    _loaded = True


def _config_files() -> dict[str, Path]:
    dirs = [CONFIG_DIR] + [Path(p) for p in os.environ.get("RSDEMO_MODEL_CONFIGS", "").split(os.pathsep) if p]
    return {p.stem: p for d in dirs if d.is_dir() for p in sorted(d.glob("*.json"))}


def list_models() -> list[str]:
    return sorted(_config_files())


def model_config(name: str) -> dict:
    files = _config_files()
    if name not in files:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(files))}")
    return json.loads(files[name].read_text())


def merge(base: dict, over: dict) -> dict:
    """Deep merge: nested dicts merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def create_model(name: str, **overrides):
    """A fresh (randomly initialised, unless the config names local weights) model from its config."""
    cfg = merge(model_config(name), overrides)
    return build(cfg, name)


def build(cfg: dict, name: str | None = None, vocab=None):
    _discover()
    arch = cfg.get("arch")
    if arch not in _ARCHS:
        raise ValueError(f"model config {name!r} names unknown arch {arch!r}; known: {', '.join(sorted(_ARCHS))}")
    return _ARCHS[arch](cfg, name=name, vocab=vocab) if vocab is not None else _ARCHS[arch](cfg, name=name)


def load_model(name_or_checkpoint: str | os.PathLike, device: str | None = None):
    """A trained model: a checkpoint path (.safetensors), or a name with a checkpoint in checkpoints/.

    A registered name without a checkpoint is refused: an untrained network would silently give noise.
    """
    from ..checkpoint import load

    if not str(name_or_checkpoint).strip():
        raise ValueError(f"no model given: name a checkpoint file or one of {', '.join(list_models())}")
    p = Path(name_or_checkpoint)
    if p.suffix == ".safetensors" or p.exists():
        return load(p, device=device)
    ck = CHECKPOINT_DIR / f"{name_or_checkpoint}.safetensors"
    if ck.is_file():
        return load(ck, device=device)
    if str(name_or_checkpoint) in _config_files():
        raise ValueError(f"model {name_or_checkpoint!r} has no trained checkpoint in {CHECKPOINT_DIR}; "
                         f"train one with `rsdemo train --model {name_or_checkpoint}` or use create_model()")
    raise ValueError(f"{name_or_checkpoint!r} is neither a checkpoint file nor a registered model "
                     f"({', '.join(list_models())})")


def default_model(data: str = "synthetic", split: str = "test") -> str:
    """The committed checkpoint with the best mR on `data`'s `split`, read from the checkpoints' cards (the numbers
    docs/RESULTS.md shows, written by `rsdemo train` from the saved file): what the demo opens with."""
    best, best_mr = None, -1.0
    for card in sorted(CHECKPOINT_DIR.glob("*.json")):
        try:
            c = json.loads(card.read_text())
            mr = float(c["metrics"][split]["mr"])
        except (OSError, ValueError, KeyError, TypeError):
            continue   # not a model card (README etc.) or a card without that split
        if c.get("data") == data and card.with_suffix(".safetensors").is_file() and mr > best_mr:
            best, best_mr = card.stem, mr
    if best is None:
        raise ValueError(f"no checkpoint in {CHECKPOINT_DIR} has {split} metrics on {data!r}")
    return best
