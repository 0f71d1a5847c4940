"""rsdemo: remote-sensing image-text retrieval you can train, measure and show.

Public API (kept small on purpose; everything else is an implementation detail):
    open_dataset(spec, images=None) -> CaptionDataset     any supported format, or "synthetic[:N[:SEED]]", or "ucm"
                                                           (downloaded once and verified: rsdemo.data.sources)
    make_synthetic(out, n=1000, seed=0)                    export the synthetic aerial world
    recall(sim, owner) -> dict                             R@1/5/10 both directions and mR
    list_models() / create_model(name, **overrides) / load_model(name_or_checkpoint)
    Demo(Gallery(images, data, split))                     the demo page's actions: search_text, search_image,
                                                           explain (rsdemo.demo; rsdemo.page lays it out)
"""
from __future__ import annotations

from .version import __version__

__all__ = ["CaptionDataset", "DataError", "open_dataset", "make_synthetic", "recall", "list_models", "create_model",
           "load_model", "Demo", "Gallery", "InputError", "__version__"]


def __getattr__(name):  # lazy, so `import rsdemo` stays cheap (the CLI's --help must be quick)
    if name in ("CaptionDataset", "DataError"):
        from .data import dataset
        return getattr(dataset, name)
    if name == "open_dataset":
        from .data.formats import open_dataset
        return open_dataset
    if name == "make_synthetic":
        from .data.synthetic import export
        return export
    if name == "list_models":
        from .models.registry import list_models
        return list_models
    if name == "create_model":
        from .models.factory import create_model
        return create_model
    if name == "load_model":
        from .checkpoint import load_model
        return load_model
    if name in ("Demo", "Gallery", "InputError"):
        from . import demo
        return getattr(demo, name)
    if name == "recall":
        from .evaluate import recall
        return recall
    raise AttributeError(f"module 'rsdemo' has no attribute {name!r}")
