"""Reference matchers with no learning, so every model's numbers have a floor beside them.

`keywords` is the bag-of-scene-words matcher: it knows, from the ground truth, which scene an image shows and
which object classes are in it, and scores a caption by the idf-weighted share of its words naming them. It cannot
see counts, colours, positions or relations, which is exactly what the synthetic world's hard negatives vary. Ties are broken at random (seeded).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .data.captions import keyword_words
from .data.dataset import CaptionDataset
from .data.text import tokenize


def _image_words(rec) -> set[str]:
    words: set[str] = set()
    for kw in (rec.keywords or []) + ([rec.label] if rec.label else []):
        words |= keyword_words(kw)
    return words


def keyword_scores(ds: CaptionDataset, seed: int = 0) -> np.ndarray:
    texts, _ = ds.captions()
    toks = [set(tokenize(t)) for t in texts]
    bags = [_image_words(r) for r in ds.records]
    df = Counter(w for b in bags for w in b)
    idf = {w: math.log(1 + len(bags) / c) for w, c in df.items()}
    sim = np.zeros((len(bags), len(texts)), np.float32)
    for j, t in enumerate(toks):
        total = sum(idf.get(w, 0.0) for w in t) or 1.0
        for i, b in enumerate(bags):
            sim[i, j] = sum(idf[w] for w in t & b) / total
    # equal bags tie exactly; break ties at random so the numbers are this matcher's expected performance
    return sim + np.random.default_rng(seed).uniform(0, 1e-4, sim.shape).astype(np.float32)


def random_scores(ds: CaptionDataset, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((len(ds), ds.num_captions)).astype(np.float32)


BASELINES = {"keywords": keyword_scores, "random": random_scores}
