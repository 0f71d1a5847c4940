"""Grounding on real photos: do a model's maps point at what the query names, and does its score depend on it?

The synthetic benchmark (rsdemo.faithfulness) has masks; real aerial photos (UCM) have none, so the measures here
build the location in:
- grid pointing game (the 2x2-mosaic test of attribution studies): four photos of four different scene classes
  tiled into one 512x512 image; the query is a plain phrase for one tile's class (CLASS_PHRASES). A hit when the
  map's maximum lies in that tile (ties share the hit: a constant map scores exactly 25%, the chance level);
  energy share: the tile's part of the map's mass (min-max normalised map; chance 25%). The target tile cycles
  through the four positions, so a map with a fixed favourite position scores chance.
- object mosaics: the same game where the query is an object word (OBJECT_WORDS: "cars", "storage tanks", ...)
  and only the target tile contains that object by the UC Merced multi-labels (distractor tiles come from the
  target's own scene class where the labels allow, so tiles differ in the object rather than only in scene).
- object queries: each object word ranks the photos by the model's own score; average precision and precision at
  10 against real presence (the multi-labels), beside the prevalence (what a random ranking gets).
- deletion / insertion (RISE, Petsiuk et al. 2018) on single photos with the model's own score for the class
  phrase: pixels (at the model's input size) are removed from the photo or inserted into it, both against one
  strongly blurred copy, in the map's order, most salient first; AUC of the mean curve normalised by its end
  points (deletion: full photo 1, all removed 0: lower is better; insertion: blurred 0, full 1: higher is
  better). What we decided: removed pixels take the blurred copy's values, not RISE's flat (mean) canvas, so
  both curves share their end points. A flat image is far from any photo, and DOVE scores it as high as the
  photo itself (UCM val, class phrases: 0.47-0.73 flat vs 0.46-0.75 photo, 0.15-0.59 blurred), which left its
  normalised deletion AUC undefined for every map.
Maps: the model's own (rsdemo.explain.own_maps), the region-similarity and Grad-CAM baselines, a uniform random
map at the model's map resolution and a centre prior (a Gaussian at the image centre). Every draw is seeded.

Levers (eval-time only, no retraining; chosen on the train-id dev blocks, `dev_blocks`):
- image_size: run the model at another input size than its config (the frozen-Lite0 heads are 1x1 convolutions /
  attention over positions, so they accept any grid; UCM photos are 256 px, the 128-px models see a quarter).
- gradient: adds "grad_x_<key>" maps: gradient x value of each spatial tensor of the model's image state
  (image_state / score_state) that the score depends on, summed over channels and ReLU'd: what changes the score
  rather than where attention sits (only ccnet's "regions" feed its score this way in the seed models; the other
  state maps are read-outs the score does not depend on, so they get no gradient and no map).
- signed: adds "<key>_signed" beside each own score map "<key>" (a model with "score_map" on): the signed split of
  the score over positions (score_map_state), of which the page and these measures show the positive part (see
  rsdemo/models/common.py); scripts/ucm.py's ground-levers compares the two on the dev blocks.
- border: before upsampling, the outer `border` cells of every model map (own and baseline) are set to the map's
  minimum, so an edge or corner artefact (padding, attention sinks) cannot be its maximum.

One module past ~450 lines because the four measures share one sampling of mosaics, one map set per model
and one results writer; split apart they would pass those through each other's signatures.
"""
from __future__ import annotations

import hashlib
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import results as sections
from .data import transforms
from .data.labels import OBJECT_WORDS, image_id, load_multilabels, object_mosaics  # noqa: F401 - this module's names too
from .explain import explain_all, to_heatmap

SIZE = 512          # mosaic side: four 256-px UCM photos
TILES = 2           # 2 x 2 grid
STEPS = 8           # deletion / insertion: 1/8 of the pixels per step
DELETION = "blurred"  # what removed pixels become (see the module docstring); part of the stored setup

# plain phrases for the 21 UC Merced scene classes (the words the captions use)
CLASS_PHRASES = {
    "agricultural": "farmland", "airplane": "airplanes", "baseballdiamond": "a baseball diamond",
    "beach": "a beach", "buildings": "buildings", "chaparral": "chaparral", "denseresidential": "dense houses",
    "forest": "a forest", "freeway": "a freeway", "golfcourse": "a golf course", "harbor": "a harbor with boats",
    "intersection": "an intersection", "mediumresidential": "a residential area", "mobilehomepark": "mobile homes",
    "overpass": "an overpass", "parkinglot": "a parking lot", "river": "a river", "runway": "a runway",
    "sparseresidential": "sparse houses", "storagetanks": "storage tanks", "tenniscourt": "a tennis court"}

# ---- metrics on one map ------------------------------------------------------------------------------------
def tile_slices(tile: int, size: int = SIZE, tiles: int = TILES) -> tuple[slice, slice]:
    """Rows and columns of tile `tile` (row-major: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    s = size // tiles
    r, c = divmod(int(tile), tiles)
    return slice(r * s, (r + 1) * s), slice(c * s, (c + 1) * s)


def pointing(heat: np.ndarray, tile: int, tiles: int = TILES) -> float:
    """1 when the map's maximum lies in the tile, 0 when not; a maximum shared by several pixels counts as the
    share of them inside the tile (a constant map: 1/tiles^2, the chance level)."""
    top = heat >= heat.max()
    return float(top[tile_slices(tile, heat.shape[0], tiles)].sum() / top.sum())


def energy_share(heat: np.ndarray, tile: int, tiles: int = TILES) -> float:
    """The tile's share of the map's mass (heat >= 0, as to_heatmap gives); a map with no mass (constant before
    normalising) carries no location: the chance share."""
    total = float(heat.sum())
    if total <= 0:
        return 1.0 / tiles ** 2
    return float(heat[tile_slices(tile, heat.shape[0], tiles)].sum() / total)


def centre_prior(shape) -> np.ndarray:
    """A Gaussian at the centre (sigma a quarter of the side): the map of a model that always looks at the
    middle."""
    h, w = shape
    y = (np.arange(h) - (h - 1) / 2) / (h / 4)
    x = (np.arange(w) - (w - 1) / 2) / (w / 4)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


def auc(curve) -> float:
    """Area under a curve sampled at equal steps over [0, 1] (trapezoid rule)."""
    c = np.asarray(curve, dtype=np.float64)
    return float(((c[1:] + c[:-1]) / 2).mean())


def deletion_insertion(score, x: torch.Tensor, heat: np.ndarray, steps: int = STEPS, tie=None,
                       removed: torch.Tensor | None = None, blurred: torch.Tensor | None = None):
    """RISE curves of one map on one image: (deletion, insertion) raw scores at 0, 1/steps, ..., 1 of the pixels.

    score: batch [N, C, S, S] -> [N] scores; x: [C, S, S] the input; heat: [S, S] (most salient first);
    tie: [S*S] tie-breaking keys (a fixed random order, so equal heat is not read in raster order)."""
    C, S, _ = x.shape
    removed = torch.zeros_like(x) if removed is None else removed
    blurred = blur(x) if blurred is None else blurred
    tie = np.arange(S * S) if tie is None else tie
    order = torch.as_tensor(np.lexsort((tie, -np.asarray(heat, np.float64).ravel())))
    rank = torch.empty(S * S, dtype=torch.long)
    rank[order] = torch.arange(S * S)
    rank = rank.view(1, S, S)
    dels, ins = [], []
    for k in range(steps + 1):
        on = rank < round(k / steps * S * S)                       # the k/steps most salient pixels
        dels.append(torch.where(on, removed, x))
        ins.append(torch.where(on, x, blurred))
    s = score(torch.stack(dels + ins))
    return s[:steps + 1].tolist(), s[steps + 1:].tolist()


def blur(x: torch.Tensor) -> torch.Tensor:
    """RISE's insertion canvas: a strong Gaussian blur (sigma a tenth of the side)."""
    from torchvision.transforms.functional import gaussian_blur

    S = x.shape[-1]
    sigma = S / 10
    k = int(2 * round(3 * sigma) + 1)
    return gaussian_blur(x[None], [k, k], [sigma, sigma])[0]


def normalised_auc(curves: list, kind: str) -> float:
    """AUC of the mean curve scaled so its end points are 0 and 1 (deletion: full photo 1, all removed 0;
    insertion: blurred 0, full 1); nan when the model scores both end points alike."""
    c = np.mean(np.asarray(curves, dtype=np.float64), 0)
    lo, hi = (c[-1], c[0]) if kind == "deletion" else (c[0], c[-1])
    return float((auc(c) - lo) / (hi - lo)) if hi - lo > 1e-9 else float("nan")


# ---- data --------------------------------------------------------------------------------------------------
def dev_blocks(ds):
    """The train-id dev blocks scripts/ucm.py holds out (ids 70-79 of each class of 100): levers are chosen here,
    never on val/test."""
    keep = [r for r in ds.records if r.split == "train" and 70 <= (int(image_id(r)) - 1) % 100 < 80]
    view = ds.with_records(keep)                     # shares the image resolver
    view.name = f"{ds.name}[dev blocks]"
    return view


def _by_class(ds) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, r in enumerate(ds.records):
        if r.label in CLASS_PHRASES:
            out.setdefault(r.label, []).append(i)
    return out


def scene_mosaics(ds, n: int, seed: int = 0) -> list[tuple[list[int], int, str]]:
    """n mosaics: (4 record indices of 4 different classes, target tile = i % 4, the target class's phrase)."""
    rng = np.random.default_rng(seed)
    by = _by_class(ds)
    classes = sorted(by)
    if len(classes) < TILES ** 2:
        raise ValueError(f"scene mosaics need images of {TILES ** 2} classes with a phrase; found {len(classes)} "
                         f"({', '.join(classes) or 'none'}): is this UCM with scene labels?")
    out = []
    for i in range(n):
        picked = rng.choice(len(classes), TILES ** 2, replace=False)
        idx = [int(rng.choice(by[classes[c]])) for c in picked]
        t = i % TILES ** 2
        out.append((idx, t, CLASS_PHRASES[classes[picked[t]]]))
    return out


def mosaic(images, size: int = SIZE):
    """4 PIL images -> one size x size PIL mosaic (row-major tiles; the one the grounding objective trains on)."""
    return transforms.mosaic(images, size, TILES)


# ---- per model ---------------------------------------------------------------------------------------------
@contextmanager
def input_size(model, size: int | None):
    """Runs the model at another input size for the duration (the lever); None: its own."""
    if size is None:
        yield model
        return
    old = model.config.image_size
    model.config.image_size = int(size)
    try:
        yield model
    finally:
        model.config.image_size = old


def trim(m: np.ndarray, border: int) -> np.ndarray:
    """The map with its outer `border` cells set to its minimum (the border lever); maps too small keep them."""
    m = np.array(m, dtype=np.float32)
    if border <= 0 or min(m.shape) <= 2 * border:
        return m
    keep = np.zeros(m.shape, bool)
    keep[border:-border, border:-border] = True
    m[~keep] = m.min()
    return m


def gradient_maps(model, image, text: str) -> dict[str, np.ndarray]:
    """"grad_x_<key>" -> ReLU(sum over channels of d score / d state[key] * state[key]) for each [1, h, w, d]
    state tensor (channel-last regions) or [1, h, w] map the score depends on; {} for a model without a state."""
    if not (hasattr(model, "image_state") and hasattr(model, "score_state")):
        return {}
    x = model.one_image(image).detach().requires_grad_(True)     # a graph even if every weight is frozen
    with torch.enable_grad():
        st = model.image_state(x)
        keys = [k for k, v in st.items() if torch.is_tensor(v) and v.requires_grad and (
            (v.dim() == 4 and min(v.shape[1:3]) > 1) or (v.dim() == 3 and v.shape[1] == v.shape[2] > 1))]
        if not keys:
            return {}
        s = model.score_state(st, [text])[0, 0]
        grads = torch.autograd.grad(s, [st[k] for k in keys], allow_unused=True)
    out = {}
    for k, gr in zip(keys, grads):
        if gr is not None:
            p = (gr * st[k].detach())[0]
            out[f"grad_x_{k}"] = F.relu(p.sum(-1) if p.dim() == 3 else p).float().cpu().numpy()
    return out


def signed_maps(model, image, text: str, names) -> dict[str, np.ndarray]:
    """"<key>_signed": the signed score split (score_map_state) for a model whose own "<key>" score map is on.
    names: the map names the model's explanation of this image gave (the key is the one ending in "score")."""
    if not (getattr(model.config, "score_map", False) and hasattr(model, "score_map_state")):
        return {}
    with torch.no_grad():
        st = model.image_state(model.one_image(image))
        m = model.score_map_state(st, [text])
    key = next((k for k in names if k.endswith("score")), None)
    if key is None:
        raise ValueError(f"signed_maps: no score map among {sorted(names)} (the names explain() gave this image)")
    return {f"{key}_signed": m[0].float().cpu().numpy()}


def all_maps(model, image, text: str, rng, ex=None, border: int = 0, gradient: bool = False,
             signed: bool = False) -> dict[str, np.ndarray]:
    """Own maps + baselines (explain_all), gradient and signed maps (the levers), all trimmed by `border`; a random
    map at the own maps' resolution, and the centre prior."""
    maps = explain_all(model, image, text, ex=ex)
    if gradient:
        maps.update(gradient_maps(model, image, text))
    if signed:
        maps.update(signed_maps(model, image, text, list(maps)))
    maps = {k: trim(m, border) for k, m in maps.items()}
    first = next(iter(maps.values()))
    maps["random"] = rng.random(first.shape).astype(np.float32)
    maps["centre"] = centre_prior((64, 64))
    return maps


def grid_pointing(model, ds, mosaics, seed: int = 0, border: int = 0, gradient: bool = False,
                  signed: bool = False) -> dict[str, dict]:
    """map name -> {"hit": %, "energy": %, "n"} over the mosaics (from scene_mosaics / object_mosaics)."""
    rng = np.random.default_rng(seed)
    hits: dict[str, list] = {}
    energy: dict[str, list] = {}
    for m in mosaics:
        idx, t, text = m[0], m[1], m[2]
        img = mosaic([ds[i].image for i in idx])
        for name, fm in all_maps(model, img, text, rng, border=border, gradient=gradient, signed=signed).items():
            heat = to_heatmap(fm, SIZE)
            hits.setdefault(name, []).append(pointing(heat, t))
            energy.setdefault(name, []).append(energy_share(heat, t))
    return {k: {"hit": 100 * float(np.mean(hits[k])), "energy": 100 * float(np.mean(energy[k])), "n": len(hits[k])}
            for k in hits}


def pick_images(ds, n: int, seed: int = 0) -> list[int]:
    """n photos spread over the classes (round-robin over the classes, a seeded choice within each)."""
    rng = np.random.default_rng(seed + 2)
    by = {c: list(rng.permutation(v)) for c, v in sorted(_by_class(ds).items())}
    out = []
    while len(out) < n and any(by.values()):
        for c in list(by):
            if by[c] and len(out) < n:
                out.append(int(by[c].pop()))
    return out


@torch.no_grad()
def _scorer(model, text: str):
    def score(batch):
        with torch.no_grad():
            return model.score(batch, [text])[:, 0].float().cpu()
    return score


def rise(model, ds, images: list[int], steps: int = STEPS, seed: int = 0, border: int = 0,
         gradient: bool = False) -> dict[str, dict]:
    """map name -> {"deletion": AUC, "insertion": AUC, "n"} (normalised, see normalised_auc) over single photos,
    each queried with its class phrase."""
    rng = np.random.default_rng(seed + 3)
    curves: dict[str, dict[str, list]] = {}
    for i in images:
        rec = ds.records[i]
        img = ds[i].image
        text = CLASS_PHRASES[rec.label]
        x = model.preprocess(img)[0]
        S = x.shape[-1]
        tie = rng.permutation(S * S)
        score = _scorer(model, text)
        canvas = blur(x)
        for name, fm in all_maps(model, img, text, rng, border=border, gradient=gradient).items():
            d, ins = deletion_insertion(score, x, to_heatmap(fm, S), steps, tie=tie, removed=canvas, blurred=canvas)
            c = curves.setdefault(name, {"deletion": [], "insertion": []})
            c["deletion"].append(d)
            c["insertion"].append(ins)
    return {k: {"deletion": 100 * normalised_auc(c["deletion"], "deletion"),
                "insertion": 100 * normalised_auc(c["insertion"], "insertion"), "n": len(c["deletion"])}
            for k, c in curves.items()}


def average_precision(scores: np.ndarray, present: np.ndarray) -> float:
    """AP of a ranking by `scores` (higher first) against 0/1 `present` (ties in the given order)."""
    order = np.argsort(-scores, kind="stable")
    rel = np.asarray(present, bool)[order]
    if not rel.any():
        return float("nan")
    prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    return float(prec[rel].mean())


@torch.no_grad()
def object_queries(model, ds, labels: dict[str, set], k: int = 10, batch: int = 30) -> dict:
    """Each object word ranks every photo of ds by the model's score: mean AP, mean precision@k and the mean
    prevalence (a random ranking's expected AP/precision) over the objects present in ds."""
    have = [labels.get(image_id(r), set()) for r in ds.records]
    objs = [o for o in OBJECT_WORDS if any(o in h for h in have)]
    texts = [OBJECT_WORDS[o] for o in objs]
    cols = []
    for a in range(0, len(ds), batch):
        x = model.preprocess([ds[i].image for i in range(a, min(len(ds), a + batch))])
        cols.append(model.score(x, texts).float().cpu().numpy())
    s = np.concatenate(cols)                                                  # [N, objects]
    aps, pks, prev = [], [], []
    for j, o in enumerate(objs):
        pres = np.array([o in h for h in have])
        aps.append(average_precision(s[:, j], pres))
        pks.append(float(pres[np.argsort(-s[:, j], kind="stable")[:k]].mean()))
        prev.append(float(pres.mean()))
    return {"ap": 100 * float(np.mean(aps)), "p_at_k": 100 * float(np.mean(pks)), "prevalence": 100 * float(np.mean(prev)),
            "k": k, "objects": len(objs), "per_object": {o: {"ap": 100 * a, "p_at_k": 100 * p}
                                                          for o, a, p in zip(objs, aps, pks)}}


def evaluate_grounding(model, ds, labels: dict[str, set] | None = None, mosaics: int = 100, images: int = 21,
                       per_object: int = 4, seed: int = 0, image_size: int | None = None, border: int = 0,
                       gradient: bool = False, signed: bool = False) -> dict:
    """Every measure of this module for one model on ds (as given: split it first):
    {"maps": {map: {hit, energy, n, object_hit, object_energy, object_n, deletion, insertion, rise_n}},
     "objects": object_queries(...) or None}. labels: UCM multi-labels (object measures skipped without them)."""
    model.eval()
    out: dict[str, dict] = {}
    with input_size(model, image_size):
        for name, r in grid_pointing(model, ds, scene_mosaics(ds, mosaics, seed), seed, border, gradient,
                                     signed).items():
            out.setdefault(name, {}).update(r)
        if labels:
            for name, r in grid_pointing(model, ds, object_mosaics(ds, labels, per_object, seed, TILES ** 2), seed,
                                         border, gradient, signed).items():
                out.setdefault(name, {}).update(object_hit=r["hit"], object_energy=r["energy"], object_n=r["n"])
        if images:
            for name, r in rise(model, ds, pick_images(ds, images, seed), seed=seed, border=border,
                                gradient=gradient).items():
                out.setdefault(name, {}).update(deletion=r["deletion"], insertion=r["insertion"], rise_n=r["n"])
        objects = object_queries(model, ds, labels) if labels else None
    return {"maps": {k: out[k] for k in sorted(out, key=_order)}, "objects": objects}


def _order(name: str) -> tuple:
    """Own maps first (model order), then the baselines, the random map, the centre prior."""
    return (name == "centre", name == "random", name.startswith("baseline_"))


# ---- tables ------------------------------------------------------------------------------------------------
COLUMNS = [["model", "{model}"], ["map", "{map}"], ["scene pointing %", "{hit:.1f}"],
           ["scene energy %", "{energy:.1f}"], ["object pointing %", "{object_hit:.1f}"],
           ["object energy %", "{object_energy:.1f}"], ["deletion AUC % (lower better)", "{deletion:.1f}"],
           ["insertion AUC % (higher better)", "{insertion:.1f}"]]
OBJECT_COLUMNS = [["model", "{model}"], ["object-word mAP %", "{ap:.1f}"], ["precision@10 %", "{p_at_k:.1f}"],
                  ["random ranking (prevalence) %", "{prevalence:.1f}"], ["objects", "{objects}"]]


def _nan(v):
    return None if isinstance(v, float) and v != v else v


def rows(results: dict[str, dict]) -> list[dict]:
    return [{"model": model, "map": name, **{k: _nan(v) for k, v in r.items()}}
            for model, res in results.items() for name, r in res["maps"].items()]


def object_rows(results: dict[str, dict]) -> list[dict]:
    return [{"model": model, **{k: v for k, v in res["objects"].items() if k != "per_object"},
             "per_object": res["objects"]["per_object"]} for model, res in results.items() if res.get("objects")]


def grounding_table(results: dict[str, dict]) -> str:
    out = sections.table({"columns": COLUMNS, "rows": rows(results)})
    if object_rows(results):
        out += "\n\n" + sections.table({"columns": OBJECT_COLUMNS, "rows": object_rows(results)})
    return out


def write_results(results: dict[str, dict], setup: dict, command: str, doc: Path | None | bool = True,
                  folder: Path | None = None) -> list[Path]:
    """Stores the "grounding" section (model x map) and, with multi-labels, "grounding_objects" (object-word
    retrieval), then regenerates docs/RESULTS.md. setup: mosaics, per_object, images, steps, seed, split, size.

    Rows of other models already stored with the same setup are kept (a run per model adds or replaces its own
    rows; runs in parallel take turns through a lock file), so one model can be re-measured alone."""
    import fcntl

    folder = Path(folder or sections.DIR)
    folder.mkdir(parents=True, exist_ok=True)
    setup = {**setup, "deletion": DELETION}          # rows measured against another canvas are not kept
    # the lock lives outside the results folder (package data: nothing but section files there)
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"rsdemo-grounding-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = sections.load("grounding", folder)
        if old.get("setup") == setup:
            kept = {r["model"] for r in old["rows"]} - set(results)
            mine = rows(results)
            results_rows = [r for r in old["rows"] if r["model"] in kept] + mine
            old_obj = [r for r in sections.rows("grounding_objects", folder) if r["model"] in kept]
        else:
            results_rows, old_obj = rows(results), []
        by_model = lambda r: r["model"]                     # noqa: E731  (stable: maps keep their order)
        return _write(sorted(results_rows, key=by_model), sorted(old_obj + object_rows(results), key=by_model),
                      setup, command, doc, folder)


def _write(map_rows, obj, setup, command, doc, folder) -> list[Path]:
    size = f" at {setup['image_size']} px input" if setup.get("image_size") else ""
    before = [
        f"`{command}`. Real UCM photos ({setup['split']} split){size}; the checkpoints are fixed, so one seed "
        f"(seed {setup['seed']}: which photos and tiles are drawn). Scene pointing / energy: "
        f"{setup['mosaics']} 2x2 mosaics ({SIZE} px) of four photos of four different scene classes, the query a "
        f"plain phrase for one tile's class; a hit when the map's maximum lies in that tile, energy share = the "
        f"tile's share of the min-max normalised map (chance 25% for both; the target cycles through the four "
        f"tiles). Object pointing / energy: {setup.get('object_mosaics', 0)} mosaics ({setup['per_object']} per "
        f"object of the UC Merced multi-labels) whose target tile alone contains the object named by the query "
        f"(\"cars\", \"storage tanks\", ...; other tiles from the same scene class where the labels allow). "
        f"Deletion / insertion (RISE, Petsiuk et al. 2018): {setup['images']} single photos (one per class), the "
        f"query its class phrase, the model's own score; 1/{STEPS} of the input pixels removed from the photo "
        f"(replaced by a strongly blurred copy's values, so both curves share their end points) or inserted "
        f"into that blurred copy per step in the map's order; AUC of the mean curve scaled so its end points are "
        f"0 and 1. `random`: a uniform random map at the model's map resolution; "
        f"`centre`: a centred Gaussian; `baseline_*`: as in the faithfulness section. Written by `rsdemo "
        f"eval-explain --real` (rsdemo/grounding.py; `--models M` re-measures one model and keeps the others' "
        f"rows)."]
    paths = [sections.save("grounding", {"title": "Grounding on real photos (UCM, grid pointing game, "
                                                  "deletion/insertion)",
                                         "before": before, "columns": COLUMNS, "rows": map_rows, "setup": setup},
                           doc=False, folder=folder)]
    if obj:
        paths.append(sections.save("grounding_objects", {
            "title": "Object-word queries on real photos (UCM multi-labels)",
            "before": [f"`{command}`. Each of the UC Merced multi-label objects present in the {setup['split']} "
                       f"split, as a plain word (\"cars\", \"storage tanks\", ...), ranks every photo of the split "
                       f"by the model's own score; mean average precision and precision at 10 against the labels "
                       f"(an object is there or not), beside the mean prevalence (what a random ranking gets)."],
            "columns": OBJECT_COLUMNS, "rows": obj}, doc=False, folder=folder))
    if doc:
        sections.write_doc(sections.DOC if doc is True else Path(doc), folder)
    return paths
