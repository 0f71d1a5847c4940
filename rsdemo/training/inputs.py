"""The training pairs and the exact batch of every step.

- Pairs: the train split's (image, caption) pairs, every caption once per epoch; the last partial batch is dropped
  so every step sees batch_size pairs.
- Inputs: images decoded and resized once into an in-memory uint8 cache (RS tiles are small; decoding every epoch
  would dominate on CPU). Encoders the model keeps frozen (its frozen_encoders hook) are not run at all: their
  cached outputs (rsdemo.features, computed once per dataset and encoder, kept on disk) stand in for the images or
  captions, so only the heads run each step.
- Views (train.views > 1, frozen image encoder only): each pair takes one of the dihedral views of its image,
  chosen by (seed, epoch, step); a caption stating an orientation keeps the original view.
- Mosaics (train.mosaic_weight > 0): the grounding objective's inputs (Mosaics): 2x2 mosaics of training photos,
  their backbone maps cached once (features.mosaic_features) when the image encoder is frozen, else their pixels
  (uint8, like the photos) for the training backbone; each step also gives a batch of them with a caption of each
  one's target photo and the target tile. train.object_mosaics adds object mosaics from the UC Merced
  multi-labels (train.multilabels): an object word must find the one tile whose photo holds that object.
- Determinism: the epoch's pair order comes from a generator seeded by (seed, epoch), so a run resumed from a
  mid-epoch checkpoint replays exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from .. import features
from ..data.dataset import CaptionDataset
from ..data.images import open_image
from ..data.labels import image_id, load_multilabels, object_mosaics
from ..data.transforms import mosaic, norm_stats, oriented


class ImageCache:
    """n images (load(i) -> PIL) decoded once, resized to the model's input size, kept as uint8; of(ds, ...): the
    photos of a split."""

    def __init__(self, load, n: int, size: int, norm: str, progress: bool = False, desc: str = "images"):
        self.data = torch.empty(n, 3, size, size, dtype=torch.uint8)
        it = range(n)
        if progress:
            from tqdm import tqdm  # progress bars only when asked for
            it = tqdm(it, desc=desc, unit="img", leave=False)
        for i in it:
            im = load(i).convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            self.data[i] = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        mean, std = norm_stats(norm)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    @classmethod
    def of(cls, ds: CaptionDataset, size: int, norm: str, progress: bool = False) -> "ImageCache":
        return cls(lambda i: open_image(ds.image_path(i)), len(ds), size, norm, progress)

    def batch(self, idx) -> torch.Tensor:
        return (self.data[idx].float() / 255 - self.mean) / self.std


def order(n_pairs: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n_pairs, generator=g)


class Mosaics:
    """train.mosaics 2x2 mosaics of ds's photos, four different scene classes each where ds has labels (four
    different photos otherwise), drawn once with a fixed seed so runs of every seed share the cached features; the
    target tile cycles over the four. With train.object_mosaics, object mosaics join them (per object word of the
    multi-labels: the target photo holds the object, the other three do not; the word is the caption). step()
    draws train.mosaic_batch of them and one caption of each target photo (its object word), fixed by (seed,
    epoch, step)."""

    def __init__(self, model, ds: CaptionDataset, progress: bool = False):
        tcfg = model.config.train
        rng = np.random.default_rng(0)
        by: dict[str, list[int]] = {}
        for i, r in enumerate(ds.records):
            if r.label:
                by.setdefault(r.label, []).append(i)
        classes = sorted(by)
        if len(ds) < 4:
            raise ValueError(f"train.mosaic_weight: mosaics need at least 4 training photos, got {len(ds)}")
        self.tiles = []
        for _ in range(tcfg.mosaics):
            if len(classes) >= 4:
                self.tiles.append([int(rng.choice(by[classes[c]])) for c in rng.choice(len(classes), 4, replace=False)])
            else:
                self.tiles.append([int(i) for i in rng.choice(len(ds), 4, replace=False)])
        target = [k % 4 for k in range(len(self.tiles))]
        self.texts = [ds.records[m[t]].captions for m, t in zip(self.tiles, target)]
        objects = self._objects(ds, tcfg) if tcfg.object_mosaics > 0 else []
        self.n_scene = len(self.tiles)
        for idx, t, word, _ in objects:
            self.tiles.append(idx)
            target.append(t)
            self.texts.append([word])
        self.target = torch.tensor(target)
        self.bs = tcfg.mosaic_batch
        self.maps = self.cache = None
        if "image" in model.frozen_encoders():   # two caches: the scene mosaics' stays valid with objects on or off
            parts = [features.mosaic_features(model, ds, t, tcfg.mosaic_size, progress)
                     for t in (self.tiles[:self.n_scene], self.tiles[self.n_scene:]) if t]
            self.maps = [torch.cat(fs) for fs in zip(*parts)]
        else:   # the backbone trains: the mosaics' pixels, tiled as the frozen path tiles them, kept as uint8
            self.cache = ImageCache(lambda j: mosaic([open_image(ds.image_path(i)) for i in self.tiles[j]],
                                                     tcfg.mosaic_size),
                                    len(self.tiles), model.config.image_size, model.config.normalize, progress,
                                    desc="mosaics")

    @staticmethod
    def _objects(ds: CaptionDataset, tcfg) -> list:
        if not tcfg.multilabels:
            raise ValueError("train.object_mosaics needs train.multilabels: the UC Merced multi-labels "
                             "(labels_by_id.csv, or its folder), e.g. --set train.multilabels=../shared/data/"
                             "ucm_multilabels")
        try:
            labels = load_multilabels(tcfg.multilabels)
        except (OSError, ValueError) as e:
            raise ValueError(f"train.multilabels: {e}") from None
        known = sum(image_id(r) in labels for r in ds.records)
        if not known:
            raise ValueError(f"train.multilabels: none of the {len(ds)} training photos' ids is in "
                             f"{tcfg.multilabels} (ids are file stems, as labels_by_id.csv's id column)")
        got = object_mosaics(ds, labels, tcfg.object_mosaics, seed=0, tiles=4)
        if not got:
            raise ValueError(f"train.object_mosaics: no object of {tcfg.multilabels} is both present and absent "
                             f"in the training photos; no object mosaic can be drawn")
        return got

    def words(self) -> list[str]:
        """The object words the mosaics' captions add to the training captions (for the word cache)."""
        return sorted({t[0] for t in self.texts[self.n_scene:]})

    def step(self, seed: int, epoch: int, step: int, rank: int = 0, world: int = 1, dev=None):
        """(cached mosaic maps, or their pixels on dev when the backbone trains; captions; target tiles) of this
        rank's share of the step's mosaics."""
        g = torch.Generator().manual_seed(((seed * 100003 + epoch) * 100019 + step) * 31 + 7)
        pick = torch.randint(len(self.tiles), (self.bs,), generator=g)
        which = torch.rand(self.bs, generator=g)
        pick, which = pick[rank::world], which[rank::world]
        caps = []
        for j, u in zip(pick.tolist(), which.tolist()):
            cs = self.texts[j]
            caps.append(cs[min(int(u * len(cs)), len(cs) - 1)])
        images = (features.batch_images(self.maps, pick.tolist()) if self.maps is not None
                  else self.cache.batch(pick).to(dev))
        return images, caps, self.target[pick]


class Batches:
    """The pairs of `ds` and the inputs of each step for `model` (see the module docstring)."""

    def __init__(self, model, ds: CaptionDataset, batch_size: int, seed: int, views: int, dev: torch.device,
                 progress: bool = False):
        self.ds, self.bs, self.seed, self.views, self.dev = ds, batch_size, seed, views, dev
        frozen = model.frozen_encoders()
        if views > 1 and "image" not in frozen:
            raise ValueError("train.views needs a frozen image backbone (the views' features are cached)")
        # option checks first: a mistake fails before minutes of feature caching
        tcfg = model.config.train
        if tcfg.object_mosaics < 0:
            raise ValueError(f"train.object_mosaics: mosaics per object word, >= 0; got {tcfg.object_mosaics}")
        if tcfg.object_mosaics > 0 and tcfg.mosaic_weight <= 0:
            raise ValueError("train.object_mosaics: object mosaics are part of the grounding objective; set "
                             "train.mosaic_weight > 0 too")
        if tcfg.multilabels and not tcfg.object_mosaics:
            raise ValueError("train.multilabels is read only for object mosaics: set train.object_mosaics > 0 "
                             "(mosaics per object word), or leave train.multilabels empty")
        t = time.perf_counter()
        self.maps = self.cache = self.words = None
        if "image" in frozen:
            self.maps = features.image_features(model, ds, progress, views=views)
        else:
            self.cache = ImageCache.of(ds, model.config.image_size, model.config.normalize, progress)
        self.mosaics = Mosaics(model, ds, progress) if tcfg.mosaic_weight > 0 else None
        if "text" in frozen:
            extra = self.mosaics.words() if self.mosaics is not None else []
            self.words = features.WordCache(model, [c for r in ds.records for c in r.captions] + extra, progress)
        # frozen encoders: time to compute (or read back) their cached outputs, not part of the training time
        self.cache_seconds = round(time.perf_counter() - t, 1) if frozen else None
        self.pairs = [(i, c) for i, r in enumerate(ds.records) for c in r.captions]
        self.labels = [r.label for r in ds.records]
        if views > 1:  # a pair may take any view unless its caption states an orientation (then view 0 only)
            self.n_views = torch.tensor([1 if oriented(c) else views for _, c in self.pairs])
        self.steps_per_epoch = max(1, len(self.pairs) // batch_size)
        self._epoch, self._order = None, None

    def _images(self, idx):
        if self.maps is not None:
            return features.batch_images(self.maps, idx)
        return self.cache.batch(idx).to(self.dev)

    def step(self, epoch: int, step: int, rank: int = 0, world: int = 1):
        """(images, texts, captions, labels, image ids, mosaics) of this rank's share of the global batch of (epoch,
        step); mosaics: (maps, texts, target tiles) with train.mosaic_weight, else None."""
        if self._epoch != epoch:
            self._epoch, self._order = epoch, order(len(self.pairs), self.seed, epoch)[: self.steps_per_epoch * self.bs]
        idx = self._order[step * self.bs:(step + 1) * self.bs][rank::world]
        img_idx = [self.pairs[k][0] for k in idx.tolist()]
        caps = [self.pairs[k][1] for k in idx.tolist()]
        if self.views > 1:  # the view of each pair: fixed by (seed, epoch, step), so a resumed run repeats it
            g = torch.Generator().manual_seed((self.seed * 100003 + epoch) * 100019 + step)
            v = (torch.rand(len(idx), generator=g) * self.n_views[idx]).long()
            images = self._images([int(x) * len(self.ds) + i for x, i in zip(v.tolist(), img_idx)])
        else:
            images = self._images(img_idx)
        texts = self.words.batch(caps) if self.words is not None else caps
        mosaics = None
        if self.mosaics is not None:
            maps, mcaps, target = self.mosaics.step(self.seed, epoch, step, rank, world, self.dev)
            mosaics = (maps, self.words.batch(mcaps) if self.words is not None else mcaps, target)
        return images, texts, caps, [self.labels[i] for i in img_idx], img_idx, mosaics
