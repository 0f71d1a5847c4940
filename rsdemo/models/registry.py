"""Model registry (a leaf, like timm's _registry): architectures by name, model configs by name.

A new model is one file in rsdemo/models/ that decorates its class with @register("arch") plus one JSON in
rsdemo/model_configs/ naming that arch; list_models() then returns it and every registry test covers it.
Building a model from a config is rsdemo.models.factory; finding and loading trained checkpoints is
rsdemo.checkpoint. This module imports nothing of the package, so everything may import it.
"""
from __future__ import annotations

import importlib
import json
import os
import pkgutil
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "model_configs"
_NOT_MODELS = ("registry", "factory", "base", "backbones", "common")  # modules that register no architecture
_ARCHS: dict[str, type] = {}
_LOSSES: dict[str, object] = {}
_loaded = False


def register(arch: str):
    def deco(cls):
        cls.arch = arch
        _ARCHS[arch] = cls
        return cls
    return deco


def register_loss(arch: str):
    """Registers fn(model, outputs, pairs) -> {"loss": scalar, parts...} as the training loss of `arch`, beside
    the model in its file (rsdemo.training calls it on the model's forward() outputs)."""
    def deco(fn):
        _LOSSES[arch] = fn
        return fn
    return deco


def loss_for(arch: str):
    """The loss registered for `arch`; ValueError saying where to register one."""
    _discover()
    if arch not in _LOSSES:
        raise ValueError(f"arch {arch!r} has no training loss: decorate its loss function with "
                         f"@register_loss({arch!r}) in its model file")
    return _LOSSES[arch]


def _discover() -> None:
    """Imports every module in rsdemo.models once, so each registers its architecture."""
    global _loaded
    if _loaded:
        return
    for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if m.name not in _NOT_MODELS:
            importlib.import_module(f"{__package__}.{m.name}")
    _loaded = True


def arch_class(arch, name: str | None = None) -> type:
    """The class registered for `arch` (`name` only words the error: the config that named it)."""
    _discover()
    if arch not in _ARCHS:
        raise ValueError(f"model config {name!r} names unknown arch {arch!r}; known: {', '.join(sorted(_ARCHS))}")
    return _ARCHS[arch]


def list_archs() -> list[str]:
    _discover()
    return sorted(_ARCHS)


def config_files() -> dict[str, Path]:
    """Model name -> its JSON config: rsdemo/model_configs/ and the folders in RSDEMO_MODEL_CONFIGS."""
    dirs = [CONFIG_DIR] + [Path(p) for p in os.environ.get("RSDEMO_MODEL_CONFIGS", "").split(os.pathsep) if p]
    return {p.stem: p for d in dirs if d.is_dir() for p in sorted(d.glob("*.json"))}


def list_models() -> list[str]:
    return sorted(config_files())


def model_config(name: str) -> dict:
    files = config_files()
    if name not in files:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(files))}")
    return json.loads(files[name].read_text())
