"""Heatmap faithfulness measured on the synthetic world's instance masks.

Every caption phrase that names objects is a token span with the instance ids it refers to, so each map a model
gives for (image, caption) can be checked against where those objects really are:
- pointing game: does the map's hottest pixel fall on (within 15 px of) the referred objects?
- best IoU: the best overlap of the map's top region (over a range of thresholds) with the objects' mask.
A "random" map at the model's own resolution is the floor: its pointing rate is the share of the image within
15 px of the objects.
"oracle_HxW" is the ceiling of a map at that resolution: the mask itself block-averaged to h x w. Objects here are
small (about 1.5% of the image), so a coarse map cannot point exactly at them even when it is right.
Structures (runway, river, ...) are skipped: they fill large parts of the image and make pointing trivial.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import results as sections
from .explain import explain_all, phrase_maps, to_heatmap

MIN_AREA = 0.002          # phrases whose objects cover less of the image than this are skipped (a few pixels)
LEVELS = np.geomspace(1.0, 1e-3, 20)   # fractions of the image kept as "hot" when thresholding for IoU


TOLERANCE = 15  # pixels: the pointing game's usual allowance (Zhang et al., ECCV 2016)


def pointing_hit(heat: np.ndarray, mask: np.ndarray, tolerance: float = TOLERANCE) -> bool:
    """Whether the map's maximum (the first one on ties, in row-major order) lies within `tolerance` pixels of the
    mask. The allowance matters here: an upsampled 8x8 map peaks at a cell centre, and objects are small."""
    py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
    if mask[py, px]:
        return True
    ys, xs = np.nonzero(mask)
    return bool(len(ys)) and float(((ys - py) ** 2 + (xs - px) ** 2).min()) <= tolerance ** 2


def best_iou(heat: np.ndarray, mask: np.ndarray, levels=LEVELS) -> float:
    """max over thresholds of IoU(heat >= thr, mask); thresholds are the heat's quantiles keeping `levels` of the
    image (log-spaced, so small objects get thresholds tight enough to reach them)."""
    mask = mask.astype(bool)
    best = 0.0
    for thr in np.unique(np.quantile(heat, 1 - np.asarray(levels))):
        hot = heat >= thr
        union = np.logical_or(hot, mask).sum()
        if union:
            best = max(best, np.logical_and(hot, mask).sum() / union)
    return float(best)


def phrases(sample, min_area: float = MIN_AREA):
    """(caption index, span, mask [H, W] bool) for each span that refers only to non-structure objects."""
    if sample.masks is None or not sample.record.spans:
        return
    kinds = {o["id"]: o for o in sample.record.objects or []}
    for ci, spans in enumerate(sample.record.spans):
        for sp in spans or []:
            ids = list(sp.objects)
            if not ids or any(kinds.get(i, {}).get("structure") for i in ids):
                continue
            m = np.isin(sample.masks, ids)
            if m.mean() >= min_area:
                yield ci, sp, m


def _order(name: str) -> tuple:
    """Table order: own maps (in the model's order: sorted() is stable), phrase maps, baselines, the random floor,
    the oracle ceilings (finest first)."""
    oracle = name.startswith("oracle_")
    size = -int(name.split("_")[1].split("x")[0]) if oracle else 0
    return (oracle, name == "random", name.startswith("baseline_"), name.endswith("_phrase"), size)


def oracle(mask: np.ndarray, shape) -> np.ndarray:
    """The best a map of `shape` can be: the mask's coverage of each cell (block average)."""
    import torch
    import torch.nn.functional as F

    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    return F.adaptive_avg_pool2d(m, tuple(shape))[0, 0].numpy()


def evaluate_faithfulness(model, ds, max_images: int | None = None, seed: int = 0) -> dict[str, dict]:
    """map name -> {"pointing": %, "iou": % (mean best IoU), "n": phrases} over the images of `ds` (as given:
    split it first) that carry masks and spans; at most `max_images` of them."""
    rng = np.random.default_rng(seed)
    hits: dict[str, list] = {}
    ious: dict[str, list] = {}
    n_img = len(ds) if max_images is None else min(len(ds), max_images)
    for i in range(n_img):
        sample = ds[i]
        by_caption: dict[int, list] = {}
        for ci, sp, m in phrases(sample):
            by_caption.setdefault(ci, []).append((sp, m))
        for ci, items in by_caption.items():
            text = sample.captions[ci]
            ex = model.explain(sample.image, text)
            maps = explain_all(model, sample.image, text, ex=ex)
            first = next(iter(maps.values()))
            for sp, m in items:
                todo = dict(maps)
                todo.update(phrase_maps(ex, sp))
                todo["random"] = rng.random(first.shape)
                for shape in sorted({fm.shape for fm in todo.values()}, reverse=True):
                    todo[f"oracle_{shape[0]}x{shape[1]}"] = oracle(m, shape)
                for name, fm in todo.items():
                    heat = to_heatmap(fm, m.shape)
                    hits.setdefault(name, []).append(pointing_hit(heat, m))
                    ious.setdefault(name, []).append(best_iou(heat, m))
    if not hits:
        raise ValueError(f"{getattr(ds, 'name', 'dataset')}: no phrase with an object mask in the first {n_img} "
                         f"images; faithfulness needs masks and token spans (the synthetic world has them)")
    return {k: {"pointing": 100 * float(np.mean(hits[k])), "iou": 100 * float(np.mean(ious[k])), "n": len(hits[k])}
            for k in sorted(hits, key=_order)}


COLUMNS = [["model", "{model}"], ["map", "{map}"], ["pointing game %", "{pointing:.1f}"],
           ["mean best IoU %", "{iou:.1f}"], ["n", "{n}"]]


def _rows(results: dict[str, dict]) -> list[dict]:
    return [{"model": model, "map": name, "pointing": res[name]["pointing"], "iou": res[name]["iou"],
             "n": res[name]["n"]} for model, res in results.items() for name in sorted(res, key=_order)]


def faithfulness_table(results: dict[str, dict]) -> str:
    """Markdown table of {model name: evaluate_faithfulness(...)}: one row per (model, map), as the doc shows it."""
    return sections.table({"columns": COLUMNS, "rows": _rows(results)})


SEED_ARCHS = ("amfmn", "ccnet", "ssjdn", "dove")   # the seed papers' models (the others are references)
GOAL = 90.0   # issue 19's goal for the best own map's pointing on the synthetic masks


def _own(name: str) -> bool:
    """A map of the model's own (what the page offers, results.own_map, or its phrase average), not a reference."""
    return sections.own_map(name) or (name.endswith("_phrase") and not name.startswith("baseline"))


def goals(results: dict[str, dict]) -> str:
    """One sentence against the goals of issue 19 on the synthetic masks: the best own map of a seed model
    (pointing >= GOAL) and every seed map above its random floor (the random map at its model's resolution)."""
    seed = {m: r for m, r in results.items() if Path(m).name.split("-")[0] in SEED_ARCHS}
    own = [(r[k]["pointing"], m, k) for m, r in seed.items() for k in r if _own(k)]
    if not own:
        return "No seed model measured."
    best = max(own)
    low = [f"{m} `{k}` {r[k]['pointing']:.1f} (floor {r['random']['pointing']:.1f})" for m, r in seed.items()
           for k in r if _own(k) and "random" in r and r[k]["pointing"] < r["random"]["pointing"]]
    return (f"Against the goals of issue 19 (synthetic masks): the best own map of a seed model is {best[1]} "
            f"`{best[2]}` at {best[0]:.1f}% pointing ({best[0] - GOAL:+.1f} vs the goal {GOAL:.0f}); "
            + (f"maps below their random floor: {'; '.join(low)}." if low else "no seed map is below its random floor."))


def write_results(results: dict[str, dict], data: str = "synthetic", split: str = "test",
                  command: str = "rsdemo eval-explain --write", doc: Path | None | bool = True,
                  folder: Path | None = None) -> Path:
    """Stores the rows as the "faithfulness" results section (rsdemo/results/faithfulness.json, or `folder`) and
    regenerates docs/RESULTS.md (or `doc`) from the section files; returns the section file."""
    section = {
        "title": f"Heatmap faithfulness ({data}, {split} split)",
        "before": [
            f"`{command}`. For each caption phrase that names objects (not structures; at least "
            f"{100 * MIN_AREA:.1f}% of the image), each map is upsampled to the image and scored against the "
            f"referred objects' mask. Pointing game: the map's maximum lies within 15 px of the objects (the usual allowance, Zhang et al. 2016). Best IoU: the best "
            f"IoU of the map's top pixels with the mask over {len(LEVELS)} thresholds (quantiles keeping 100% down "
            f"to 0.1% of the image). `*_phrase`: the mean of the phrase's own word maps; `baseline_region_sim`: "
            f"cosine of the text embedding with each position projected into the joint space; `baseline_gradcam`: "
            f"Grad-CAM of the score on the last feature map; `random`: a uniform random map at the model's map "
            f"resolution (the floor: its pointing rate is the share of the image within 15 px of the objects); `oracle_HxW`: the "
            f"mask block-averaged to h x w, the ceiling of any map at that resolution (objects are small, so a "
            f"coarse map cannot point exactly at them)."],
        "columns": COLUMNS, "rows": _rows(results), "after": [goals(results)]}
    return sections.save("faithfulness", section, doc=doc, folder=folder or sections.DIR)
