"""Cached outputs of frozen encoders, so a model with frozen pretrained backbones trains its heads only.

Which encoders are frozen is the model's frozen_encoders() hook ({"image": backbone, "text": MiniLM} as its
config says); nothing here asks which architecture it serves. A frozen encoder gives the same output for the
same input every epoch (the only augmentation, the dihedral
views, is a fixed set of 8 inputs per image), so the trainer computes it once per dataset and reads it back:

- image_features(model, ds): the backbone's [f8, f16, f32] maps of every image of ds (fp16), in ds order;
  with views=8, of the 8 rotations/mirrors of every image too (view-major: row v*N + i is view v of image i).
- mosaic_features(model, ds, mosaics): the same maps of 2x2 mosaics of ds's images (the grounding objective's).
- WordCache(model, captions): the frozen MiniLM's 384-d word features of every distinct caption (fp16).

Files live in RSDEMO_CACHE/features/ (default ~/.cache/rsdemo/features). The key covers everything the output
depends on: the images (path, size, mtime of each file) or the caption texts, the encoder's kind and a hash of its
weights, and the preprocessing (image size, normalisation; max words). Any run over the same images with the same
frozen encoder reuses the file, e.g. every Lite0 model trained with `rsdemo train --data ucm:DIR --images DIR`;
a changed image, weight or setting gives a new key, never a stale hit. Writes are atomic.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .data.images import open_image
from .data.transforms import dihedral, image_transform, mosaic
from .files import atomic_write, cache_root, weights_sha256
from .kernels import kernel_setting
from .models.backbones import CachedImages, CachedWords

VERSION = "1"   # bump when what is stored changes


def features_dir() -> Path:
    return cache_root() / "features"


def images_key(ds) -> str:
    h = hashlib.sha1()
    for i in range(len(ds)):
        p = Path(ds.image_path(i))
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path)) if path.is_file() else None
    except (SafetensorError, OSError):
        return None   # unreadable: recompute and overwrite


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file({k: v.contiguous() for k, v in tensors.items()}, tmp))


def kernels() -> str:
    """The kernel setting as part of a cache key: features computed under other float kernels (another CPU, or
    MKL_CBWR=...) differ in their last bits, and a card checked exactly must read the features its own kernels make."""
    return json.dumps(kernel_setting(), sort_keys=True)


def _encoder(model, kind: str):
    enc = model.frozen_encoders().get(kind)
    if enc is None:
        raise ValueError(f"{model.name}: its {kind} encoder is not frozen, so it has no cached features")
    return enc


def image_features_path(model, ds, views: int = 1) -> Path:
    bb = _encoder(model, "image")
    size, norm = model.config.image_size, model.config.normalize
    # a model tuning the backbone's top layers reads only f8 and f16 from the cache (f32 is recomputed), so the
    # key leaves those layers out: the cache stays valid while they train
    skip = bb.top_prefixes() if bb.tuned else ()
    parts = ([VERSION, kernels(), images_key(ds), bb.kind, weights_sha256(bb, skip), str(size), norm]
             + [f"skip={skip}"] * bool(skip) + [f"views={views}"] * (views > 1))
    key = hashlib.sha1("|".join(parts).encode())
    tag = f"-v{views}" if views > 1 else ""
    return features_dir() / f"img-{bb.kind}-{size}-{len(ds)}{tag}-{key.hexdigest()[:20]}.safetensors"


@torch.no_grad()
def image_features(model, ds, progress: bool = False, batch_size: int = 32, views: int = 1) -> list[torch.Tensor]:
    """[f8, f16, f32] of every image in ds ([views*N, C, h, w] fp16 each, CPU; view-major), from the cache or
    computed and stored. views: 1 (the images as they are) or up to 8 dihedral views (transforms.dihedral)."""
    if not len(ds):
        raise ValueError("image_features: the dataset (split) has no images")
    if not 1 <= views <= 8:
        raise ValueError(f"image_features: views must be 1-8, got {views}")
    path = image_features_path(model, ds, views)
    got = _load(path)
    if got is not None and len(got) == 3 and all(v.shape[0] == views * len(ds) for v in got.values()):
        return [got[f"f{i}"] for i in range(3)]
    bb = _encoder(model, "image")
    was = bb.training
    bb.eval()
    tf = image_transform(model.config.image_size, model.config.normalize)
    out: list[list[list[torch.Tensor]]] = [[[] for _ in range(views)] for _ in range(3)]
    it = range(0, len(ds), batch_size)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="backbone features", unit="batch", leave=False)
    dev = next(bb.parameters()).device
    for a in it:
        ims = [open_image(ds.image_path(i)) for i in range(a, min(a + batch_size, len(ds)))]
        x = torch.stack([tf(im) for im in ims]).to(dev)
        for v in range(views):
            for k, f in enumerate(bb(dihedral(x, v))):
                out[k][v].append(f.half().cpu())
    bb.train(was)
    feats = [torch.cat([t for per_view in o for t in per_view]) for o in out]
    _save(path, {f"f{i}": f for i, f in enumerate(feats)})
    return feats


@torch.no_grad()   # (tuned top layers require grad: without this every batch's graph would be kept)
def mosaic_features(model, ds, mosaics: list, size: int = 512, progress: bool = False,
                    batch_size: int = 32) -> list[torch.Tensor]:
    """[f8, f16, f32] of 2x2 mosaics of ds's images ([len(mosaics), C, h, w] fp16 each, CPU): mosaics is a list of
    4 record indices each, tiled at size px (transforms.mosaic, as rsdemo.grounding tiles them), then the model's
    transform (resize to its input size) and its frozen backbone; cached like image_features (the key adds the
    mosaic list and size)."""
    if not mosaics:
        raise ValueError("mosaic_features: no mosaics")
    bb = _encoder(model, "image")
    skip = bb.top_prefixes() if bb.tuned else ()
    spec = hashlib.sha1(json.dumps([[int(i) for i in m] for m in mosaics]).encode()).hexdigest()
    parts = ([VERSION, kernels(), images_key(ds), bb.kind, weights_sha256(bb, skip), str(model.config.image_size),
              model.config.normalize, f"mosaic={size}", spec] + [f"skip={skip}"] * bool(skip))
    key = hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]
    path = features_dir() / f"mosaic-{bb.kind}-{model.config.image_size}-{len(mosaics)}-{key}.safetensors"
    got = _load(path)
    if got is not None and len(got) == 3 and all(v.shape[0] == len(mosaics) for v in got.values()):
        return [got[f"f{i}"] for i in range(3)]
    was = bb.training
    bb.eval()
    tf = image_transform(model.config.image_size, model.config.normalize)
    dev = next(bb.parameters()).device
    out: list[list[torch.Tensor]] = [[] for _ in range(3)]
    it = range(0, len(mosaics), batch_size)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="mosaic features", unit="batch", leave=False)
    for a in it:
        x = torch.stack([tf(mosaic([open_image(ds.image_path(i)) for i in m], size))
                         for m in mosaics[a:a + batch_size]]).to(dev)
        for k, f in enumerate(bb(x)):
            out[k].append(f.half().cpu())
    bb.train(was)
    feats = [torch.cat(o) for o in out]
    _save(path, {f"f{i}": f for i, f in enumerate(feats)})
    return feats


def batch_images(feats: list[torch.Tensor], idx) -> CachedImages:
    idx = torch.as_tensor(idx, dtype=torch.long)
    return CachedImages(f[idx] for f in feats)


class WordCache:
    """Raw MiniLM word features of every distinct caption (MiniLMText.raw: below the tuned top layers when the model
    tunes them); batch(captions) -> CachedWords for the model."""

    def __init__(self, model, captions, progress: bool = False, batch_size: int = 256):
        text = _encoder(model, "text")
        self.texts = sorted(set(captions))
        self.row = {c: i for i, c in enumerate(self.texts)}
        # tuned top layers (text_top): the cache holds the hidden states below them, so the key leaves those layers
        # out (the cache stays valid while they train) and names how many there are
        skip = text.top_prefixes() if text.tuned else ()
        h = hashlib.sha1("|".join([VERSION, kernels(), text.kind, weights_sha256(text.bert, skip),
                                   str(text.max_words)] + [f"top={text.tuned}"] * bool(text.tuned)).encode())
        for c in self.texts:
            h.update(c.encode() + b"\0")
        path = features_dir() / f"words-{text.kind}-{len(self.texts)}-{h.hexdigest()[:20]}.safetensors"
        got = _load(path)
        if got is not None and got.get("lengths") is not None and got["lengths"].shape[0] == len(self.texts):
            self.raw, self.lengths = got["raw"], got["lengths"]
            return
        was = text.training
        text.eval()
        raws, lens = [], []
        it = range(0, len(self.texts), batch_size)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="text features", unit="batch", leave=False)
        with torch.no_grad():
            for a in it:
                raw, mask = text.raw(*text.tokenize(self.texts[a:a + batch_size]))
                raws.append(raw.half().cpu())
                lens.append(mask.sum(1).cpu())
        text.train(was)
        T = max(r.shape[1] for r in raws)
        self.raw = torch.cat([torch.nn.functional.pad(r, (0, 0, 0, T - r.shape[1])) for r in raws])
        self.lengths = torch.cat(lens).to(torch.int32)
        _save(path, {"raw": self.raw, "lengths": self.lengths})

    def batch(self, captions: list[str]) -> CachedWords:
        rows = torch.tensor([self.row[c] for c in captions])
        n = self.lengths[rows].long()
        T = max(1, int(n.max()))
        return CachedWords((self.raw[rows, :T], torch.arange(T)[None] < n[:, None]))


