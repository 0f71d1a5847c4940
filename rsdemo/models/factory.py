"""Model factory (like open_clip's create_model): a model from its registered config plus overrides.

Sits on the leaf registry (rsdemo.models.registry); rsdemo.checkpoint uses build() to rebuild a saved model.
"""
from __future__ import annotations

import copy

from .registry import arch_class, model_config


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
    cls = arch_class(cfg.get("arch"), name)
    return cls(cfg, name=name, vocab=vocab) if vocab is not None else cls(cfg, name=name)
