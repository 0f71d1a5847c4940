"""Model factory (like open_clip's create_model): a model from its registered config plus overrides.

Sits on the leaf registry (rsdemo.models.registry); rsdemo.checkpoint uses build() to rebuild a saved model.
Every config goes through its architecture's typed options (rsdemo.models.options) here: an unknown key or a value
of the wrong type fails before anything is built, naming the valid keys.
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


def options(cfg, name: str | None = None):
    """The config (a dict, or options already parsed) as its architecture's validated options."""
    arch = cfg.get("arch") if isinstance(cfg, dict) else cfg.arch
    return arch_class(arch, name).config_class.parse(cfg, name or str(arch))


def build(cfg, name: str | None = None, vocab=None):
    """A model from a config dict or parsed options (validated: unknown keys fail naming the valid ones)."""
    opts = options(cfg, name)
    cls = arch_class(opts.arch, name)
    return cls(opts, name=name, vocab=vocab) if vocab is not None else cls(opts, name=name)
