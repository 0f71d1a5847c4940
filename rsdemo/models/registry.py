"""Model registry (a leaf, like timm's _registry): architectures by name, model configs by name.

A new model is one file in rsdemo/models/ that decorates its class with @register("arch") (and its loss with
@register_loss("arch")) plus one JSON in rsdemo/model_configs/ naming that arch; list_models() then returns it and
every registry test covers it. Outside the package, a folder in RSDEMO_MODEL_CONFIGS (os.pathsep-separated) may
hold both: its *.json are model configs and its *.py model files, imported on first use like the package's own.
Building a model from a config is rsdemo.models.factory; finding and loading trained checkpoints is
rsdemo.checkpoint. This module imports nothing of the package, so everything may import it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import pkgutil
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "model_configs"
_NOT_MODELS = ("registry", "factory", "base", "backbones", "common", "options")  # modules that register no architecture
_ARCHS: dict[str, type] = {}
_LOSSES: dict[str, object] = {}
_loaded = False
_loaded_files: set[str] = set()   # model files from RSDEMO_MODEL_CONFIGS folders already imported


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


def _extra_dirs() -> list[Path]:
    return [Path(p) for p in os.environ.get("RSDEMO_MODEL_CONFIGS", "").split(os.pathsep) if p]


def _import_file(path: Path) -> None:
    """Imports a model file from outside the package under a name of its own (in sys.modules, so dataclasses and
    typing resolve its annotations)."""
    name = f"rsdemo_models_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        del sys.modules[name]
        raise ValueError(f"{path}: model file failed to import ({type(e).__name__}: {e})") from e


def _discover() -> None:
    """Imports every module in rsdemo.models once, and every *.py in the RSDEMO_MODEL_CONFIGS folders not yet
    imported, so each registers its architecture."""
    global _loaded
    if not _loaded:
        for m in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if m.name not in _NOT_MODELS:
                importlib.import_module(f"{__package__}.{m.name}")
        _loaded = True
    for d in _extra_dirs():
        for path in sorted(d.glob("*.py")) if d.is_dir() else []:
            key = str(path.resolve())
            if key not in _loaded_files:
                _loaded_files.add(key)
                _import_file(path.resolve())


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
    dirs = [CONFIG_DIR] + _extra_dirs()
    return {p.stem: p for d in dirs if d.is_dir() for p in sorted(d.glob("*.json"))}


def list_models() -> list[str]:
    return sorted(config_files())


def model_config(name: str) -> dict:
    files = config_files()
    if name not in files:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(files))}")
    return json.loads(files[name].read_text())
