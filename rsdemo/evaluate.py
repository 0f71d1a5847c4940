"""Recall@K for remote-sensing image-text retrieval (the RSICD / RSITMD / UCM-Captions protocol).

Inputs are a similarity matrix `sim[i, j]` between every test image i and every test caption j, and `owner[j]`, the
image that caption j describes. Each image may own any number of captions (usually 5, but not assumed).

Image -> text: every image that owns at least one caption is a query; its candidates are all captions. The query is a
hit at K if ANY of its own captions is among the top K. Images that own no caption are never queries (and are not
in the denominator), but they stay in the gallery as distractors for text -> image.

Text -> image: every caption is a query; its candidates are all images. The query is a hit at K if its owner image
is among the top K.

Ties. Let s be the best score among a query's correct candidates. Its rank is the number of wrong candidates that
score strictly higher than s, plus, under the default "pessimistic" rule, the number of wrong candidates that score
exactly s; under the "optimistic" rule equal scores are placed below. The query is a hit at K when rank < K. Other
correct captions never count against an image query. The rule depends only on the scores, never on the order of
rows or columns, so a constant similarity matrix scores 0 (pessimistic) unless K reaches the number of candidates.
A tie is exact float equality, nothing looser. model_scores gives identical captions (UCM repeats most of its
captions across images) the very same column, so they tie exactly on every machine; computed apart they could
differ in the last bits depending on the CPU. Two different candidates whose scores differ by 1e-7 are not tied,
they are ordered; such near-ties may swap on another CPU, whose kernels round differently: that is float drift,
not a tie, and rsdemo.drift bounds what it can do to a recall (docs/REPRODUCIBILITY.md).

Recalls are percentages (0-100); mR is the mean of all reported recalls (the six of K = 1, 5, 10 by default).
"""
from __future__ import annotations

import numpy as np

KS = (1, 5, 10)
TIES = ("pessimistic", "optimistic")


def _array(x) -> np.ndarray:
    """numpy view of a numpy array, list or torch tensor (without importing torch)."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "cpu"):
        x = x.cpu()
    if str(getattr(x, "dtype", "")) == "torch.bfloat16":
        x = x.float()  # numpy has no bfloat16; the upcast is exact so ties are unchanged
    return np.asarray(x)


def ranks(sim, owner, ties: str = "pessimistic", *, block: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Rank of the best correct candidate for each image query (images owning >= 1 caption) and each caption query.

    The matrix is read once, `block` elements (rows x captions) at a time, so the extra memory is a bool array of
    that size (4 MB by default) plus a few vectors, whatever the matrix size.
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    sim, owner = _array(sim), _array(owner)
    if sim.ndim != 2:
        raise ValueError(f"sim must be 2-D [n_images, n_captions], got shape {sim.shape}")
    if owner.ndim != 1 or owner.shape[0] != sim.shape[1]:
        raise ValueError(f"sim shape {sim.shape} does not match owner shape {owner.shape}: "
                         f"need owner of shape ({sim.shape[1]},), one image index per caption (column)")
    n_img, n_cap = sim.shape
    if n_cap == 0:
        raise ValueError("no captions: recall is undefined")
    if not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"owner must hold integer image indices, got dtype {owner.dtype}")
    bad = (owner < 0) | (owner >= n_img)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"owner[{j}] = {int(owner[j])} is not an image index in [0, {n_img})")
    if not (np.issubdtype(sim.dtype, np.number) or sim.dtype == bool) or np.iscomplexobj(sim):
        raise ValueError(f"sim must be a real numeric array, got dtype {sim.dtype}")
    owner = owner.astype(np.intp, copy=False)
    pessimistic = ties == "pessimistic"

    # Score of each caption with its own image; per image the best of these is the score its query must beat.
    pos = sim[owner, np.arange(n_cap)].astype(np.float64)
    best = np.full(n_img, -np.inf)
    with np.errstate(invalid="ignore"):  # a NaN here is reported with its position in the loop below
        np.maximum.at(best, owner, pos)
    # Under ">=" a row's own captions equal to its best would count as rivals; remove them afterwards.
    n_eq = np.bincount(owner[pos == best[owner]], minlength=n_img) if pessimistic else 0
    cmp = np.greater_equal if pessimistic else np.greater

    i2t = np.zeros(n_img, dtype=np.int64)
    t2i = np.zeros(n_cap, dtype=np.int64)
    step = max(1, block // n_cap)
    for a in range(0, n_img, step):
        rows = sim[a:a + step]
        if rows.dtype.kind == "f" and np.isnan(rows).any():
            i, j = np.argwhere(np.isnan(rows))[0]
            raise ValueError(f"sim contains NaN (first at [{a + i}, {j}]); similarities must be finite numbers")
        i2t[a:a + step] = np.count_nonzero(cmp(rows, best[a:a + step, None]), axis=1)
        t2i += np.count_nonzero(cmp(rows, pos[None, :]), axis=0)
    if pessimistic:
        i2t -= n_eq
        t2i -= 1  # a caption's own image scores exactly its own score
    has = np.bincount(owner, minlength=n_img) > 0
    return i2t[has], t2i


def recall(sim, owner, ks=KS, ties: str = "pessimistic", *, block: int = 1 << 22) -> dict[str, float]:
    """Recall@K in percent both ways: keys i2t_r{k}, t2i_r{k}, mr (mean of those), n_images, n_captions.

    sim: [n_images, n_captions] scores (numpy or torch); owner: [n_captions] image index of each caption.
    See the module docstring for the protocol and the tie rule. `block` bounds the working memory (elements).
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    sim = _array(sim)
    i2t, t2i = ranks(sim, owner, ties, block=block)
    out: dict[str, float] = {}
    for name, r in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_r{k}"] = 100.0 * float(np.mean(r < k))
    out["mr"] = float(np.mean(list(out.values())))
    out["n_images"], out["n_captions"] = sim.shape
    return out


def format_recall(r: dict) -> str:
    """One line: `i2t R@1/5/10 12.38/44.76/65.71 | t2i R@1/5/10 10.10/31.80/56.85 | mR 36.93`."""
    ks = sorted(int(key[5:]) for key in r if key.startswith("i2t_r"))
    head = "R@" + "/".join(str(k) for k in ks)
    parts = []
    for name in ("i2t", "t2i"):
        vals = "/".join(f"{r[f'{name}_r{k}']:.2f}" for k in ks)
        parts.append(f"{name} {head} {vals}")
    parts.append(f"mR {r['mr']:.2f}")
    return " | ".join(parts)


def model_scores(model, ds, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
    """[images x captions] scores of a model on a dataset: its full `score`, and for models whose score is not
    separable also the stage-1 embedding dot product (None for separable models, where the two are equal)."""
    import torch

    texts, _ = ds.captions()
    was = model.training
    model.eval()
    # Frozen pretrained encoders: their outputs come from rsdemo.features' disk cache, the same fp16 features
    # the heads were trained on, so evaluating is cheap and gives the same numbers on every run.
    frozen = model.frozen_encoders()
    maps = words = None
    if frozen:
        from . import features
        if "image" in frozen:
            maps = features.image_features(model, ds)
        if "text" in frozen:
            words = features.WordCache(model, texts)
    try:
        with torch.no_grad():
            def tx(a, b):
                return words.batch(texts[a:b]) if words is not None else texts[a:b]

            txt = torch.cat([model.encode_text(tx(i, i + 256)) for i in range(0, len(texts), 256)])
            all_tx = tx(0, len(texts))
            full, embed = [], []
            for i in range(0, len(ds), batch_size):
                idx = range(i, min(i + batch_size, len(ds)))
                if maps is not None:
                    imgs = features.batch_images(maps, list(idx))
                else:
                    imgs = model.preprocess([ds[j].image for j in idx])
                emb = model.encode_image(imgs)
                embed.append((emb @ txt.T).float().cpu())
                if not model.separable:
                    full.append(model.score(imgs, all_tx).float().cpu())
    finally:
        model.train(was)
    e = torch.cat(embed).numpy()
    out = (torch.cat(full).numpy(), e) if full else (e, None)
    return tuple(same_text_same_score(m, texts) if m is not None else None for m in out)


def same_text_same_score(sim: np.ndarray, texts: list[str]) -> np.ndarray:
    """Every caption column set to the column of the first caption with the same text, so identical captions tie
    exactly. Computed apart, they can differ in the last bits (their batch position changes the kernel's summing
    order, differently on each CPU), and the pessimistic tie rule would then turn float noise into a rank change."""
    first: dict[str, int] = {}
    src = np.array([first.setdefault(t, j) for j, t in enumerate(texts)], dtype=np.intp)
    if (src == np.arange(len(texts))).all():
        return sim
    return np.ascontiguousarray(sim[:, src])


def evaluate_model(model, ds, batch_size: int = 64, ties: str = "pessimistic") -> dict:
    """recall() of a model on a dataset (all its images and captions); `mr_embed`: stage 1 alone, if different."""
    _, owner = ds.captions()
    full, embed = model_scores(model, ds, batch_size)
    r = recall(full, owner, ties=ties)
    if embed is not None:
        r["mr_embed"] = recall(embed, owner, ties=ties)["mr"]
    return r
