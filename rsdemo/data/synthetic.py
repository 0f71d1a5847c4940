"""The procedural synthetic aerial world: the embedded default dataset, test data and heatmap ground truth.

Every image is a scene (airport, port, residential, ...) rendered top-down at 256 px from a small spec: the scene's
structures (runway, river, sea, parking lot, ...) and one to three *groups* of objects, each group one class with a
colour, a size, a count and a position. Captions are written from the rendered spec (never from the plan), so the
counts, colours, positions and relations they state are true of the pixels. Every phrase that names an object is
recorded as a token span pointing at its instance ids in the mask, which is what the heatmap metrics score.

Hard negatives: images come in *families*. A family's later members repeat the first one's scene, background and
groups with one edit (a group's count or colour, the two main groups swapped, or a group moved), so two images of
one family share their scene words and object classes and differ only in what a fine-grained model must read.
A whole family goes to one split, so test holds hard negatives and nothing leaks across splits.

Deterministic: image i of family f depends only on (seed, f), so the first k images of a larger world equal a
world of k images.

Modules: rsdemo.data.world (the tables: classes, scenes, positions), rsdemo.data.captions (the grammar), this one
(textures, drawing, planning, rendering, families, export). rsdemo.data.formats.open_synthetic opens a cached export.
This one stays past the usual size because drawing, structures and placement share one random stream per image:
splitting them would spread the determinism contract (image i of family f depends only on (seed, f)) over files.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .captions import _relation, chunks_to_spans, write_captions
from .dataset import CaptionDataset, Record
from .text import tokenize
from .world import (COLOURS, KINDS, REGIONS, SCENES, SIZE, SPLITS, Group, SceneKind, Spec, World, _region_box,
                    position_name)


# ---- textures -----------------------------------------------------------------------------------------
_NOISE: list[np.ndarray] = []


def _noise_bank(size: int) -> list[np.ndarray]:
    """A few fixed fractal noise fields (mean 0, std ~1); each image rolls and flips one of them (cheap)."""
    if _NOISE and _NOISE[0].shape[0] == size:
        return _NOISE
    _NOISE.clear()
    rng = np.random.default_rng(1234)
    for _ in range(6):
        acc = np.zeros((size, size), np.float32)
        for octave, amp in ((4, 1.0), (8, 0.6), (16, 0.4), (32, 0.25), (size, 0.2)):
            g = rng.standard_normal((octave, octave)).astype(np.float32)
            rep = size // octave
            up = np.kron(g, np.ones((rep, rep), np.float32)) if rep > 1 else g
            if rep > 1:  # smooth the blocks with a separable box blur
                k = np.ones(rep, np.float32) / rep
                up = np.apply_along_axis(lambda v: np.convolve(np.r_[v, v[:rep]], k, "same")[:size], 0, up)
                up = np.apply_along_axis(lambda v: np.convolve(np.r_[v, v[:rep]], k, "same")[:size], 1, up)
            acc += amp * up
        _NOISE.append((acc - acc.mean()) / acc.std())
    return _NOISE


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    n = _noise_bank(size)[int(rng.integers(6))]
    n = np.roll(n, (int(rng.integers(size)), int(rng.integers(size))), (0, 1))
    return n.T if rng.random() < 0.5 else n


# ---- drawing ------------------------------------------------------------------------------------------
def _rot(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _shade(rgb, f):
    return tuple(int(max(0, min(255, v * f))) for v in rgb)


def _draw_instance(draw: ImageDraw.ImageDraw, ids: ImageDraw.ImageDraw, shape: str, cx, cy, length, angle,
                   rgb, oid: int):
    """Draws one object on the RGB canvas and its id on the id canvas (same polygons, so masks are exact)."""
    L = length
    parts: list[tuple[list, tuple]] = []  # (polygon, colour)
    if shape == "plane":
        body = [(-L / 2, -L / 14), (L / 2, -L / 14), (L / 2 + L / 10, 0), (L / 2, L / 14), (-L / 2, L / 14)]
        wings = [(-L / 12, -L / 2), (L / 8, -L / 2), (L / 5, L / 2), (-L / 12, L / 2)]
        tail = [(-L / 2, -L / 5), (-L / 2 + L / 8, -L / 5), (-L / 2 + L / 8, L / 5), (-L / 2, L / 5)]
        parts = [(wings, _shade(rgb, 0.9)), (tail, _shade(rgb, 0.9)), (body, rgb)]
    elif shape == "ship":
        w = L / 4.5
        hull = [(-L / 2, -w / 2), (L / 3, -w / 2), (L / 2, 0), (L / 3, w / 2), (-L / 2, w / 2)]
        cabin = [(-L / 2 + L / 8, -w / 4), (-L / 2 + L / 3, -w / 4), (-L / 2 + L / 3, w / 4), (-L / 2 + L / 8, w / 4)]
        parts = [(hull, rgb), (cabin, _shade(rgb, 0.75))]
    elif shape in ("car", "truck"):
        w = L / (2.0 if shape == "car" else 2.6)
        body = [(-L / 2, -w / 2), (L / 2, -w / 2), (L / 2, w / 2), (-L / 2, w / 2)]
        front = [(L / 2 - L / 3.2, -w / 2), (L / 2, -w / 2), (L / 2, w / 2), (L / 2 - L / 3.2, w / 2)]
        parts = [(body, rgb), (front, _shade(rgb, 0.7 if shape == "car" else 1.15))]
    elif shape == "building":
        w = L * 0.7
        roof = [(-L / 2, -w / 2), (L / 2, -w / 2), (L / 2, w / 2), (-L / 2, w / 2)]
        half = [(-L / 2, 0), (L / 2, 0), (L / 2, w / 2), (-L / 2, w / 2)]
        parts = [(roof, rgb), (half, _shade(rgb, 0.82))]
    elif shape == "court":
        w = L * 0.55
        parts = [([(-L / 2, -w / 2), (L / 2, -w / 2), (L / 2, w / 2), (-L / 2, w / 2)], rgb)]
    elif shape == "pool":
        w = L * 0.6
        parts = [([(-L / 2, -w / 2), (L / 2, -w / 2), (L / 2, w / 2), (-L / 2, w / 2)], (236, 236, 236)),
                 ([(-L / 2 + 2, -w / 2 + 2), (L / 2 - 2, -w / 2 + 2), (L / 2 - 2, w / 2 - 2), (-L / 2 + 2, w / 2 - 2)],
                  rgb)]
    if parts:
        for poly, col in parts:
            pts = _rot(poly, cx, cy, angle)
            draw.polygon(pts, fill=col)
            ids.polygon(pts, fill=oid)
        if shape == "court":  # white lines on the court
            w = L * 0.55
            for a, b in (((-L / 2 + 2, -w / 2 + 2), (L / 2 - 2, -w / 2 + 2)), ((L / 2 - 2, -w / 2 + 2), (L / 2 - 2, w / 2 - 2)),
                         ((L / 2 - 2, w / 2 - 2), (-L / 2 + 2, w / 2 - 2)), ((-L / 2 + 2, w / 2 - 2), (-L / 2 + 2, -w / 2 + 2)),
                         ((0, -w / 2 + 2), (0, w / 2 - 2))):
                draw.line(_rot([a, b], cx, cy, angle), fill=(240, 240, 240), width=1)
        return
    r = L / 2
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "tank":
        draw.ellipse((cx - r + 2, cy - r + 2, cx + r + 2, cy + r + 2), fill=(60, 60, 60))  # shadow
        draw.ellipse(box, fill=rgb)
        draw.ellipse((cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6), fill=_shade(rgb, 0.88))
        ids.ellipse(box, fill=oid)
    elif shape == "tree":
        draw.ellipse(box, fill=_shade(rgb, 0.8))
        draw.ellipse((cx - r * 0.6, cy - r * 0.7, cx + r * 0.5, cy + r * 0.4), fill=rgb)
        ids.ellipse(box, fill=oid)
    elif shape == "diamond":
        deg = math.degrees(angle)
        fan = (cx - L, cy - L, cx + L, cy + L)
        draw.pieslice(fan, deg - 45, deg + 45, fill=(196, 164, 112))
        ids.pieslice(fan, deg - 45, deg + 45, fill=oid)
        inner = _rot([(0, 0), (L * 0.45, -L * 0.2), (L * 0.6, 0), (L * 0.45, L * 0.2)], cx, cy, angle)
        draw.polygon(_rot([(L * 0.1, 0), (L * 0.45, -L * 0.3), (L * 0.75, 0), (L * 0.45, L * 0.3)], cx, cy, angle),
                     fill=rgb)
        draw.polygon(inner, outline=(240, 240, 240))


# ---- structures ---------------------------------------------------------------------------------------
def _plan_structures(scene: SceneKind, rng: np.random.Generator) -> dict:
    v = {}
    for s in scene.structures:
        if s in ("runway", "road"):
            v[s] = {"vertical": bool(rng.random() < 0.5), "offset": float(rng.uniform(0.3, 0.7)),
                    "width": float(rng.uniform(0.10, 0.14) if s == "runway" else rng.uniform(0.05, 0.08))}
        elif s == "river":
            v[s] = {"vertical": bool(rng.random() < 0.5), "offset": float(rng.uniform(0.4, 0.6)),
                    "width": float(rng.uniform(0.16, 0.22)), "phase": float(rng.uniform(0, 6.28)),
                    "amp": float(rng.uniform(0.03, 0.08))}
        elif s == "sea":
            v[s] = {"side": str(rng.choice(["left", "right", "top", "bottom"])), "extent": float(rng.uniform(0.42, 0.55))}
        elif s == "pond":
            v[s] = {"rx": float(rng.uniform(0.18, 0.26)), "ry": float(rng.uniform(0.14, 0.22)),
                    "cx": float(rng.uniform(0.42, 0.58)), "cy": float(rng.uniform(0.42, 0.58))}
        elif s == "parking lot":
            v[s] = {"margin": float(rng.uniform(0.08, 0.16))}
        elif s in ("bridge", "pier"):
            v[s] = {"pos": float(rng.uniform(0.35, 0.65))}
    return v


def _structures(scene: SceneKind, plan: dict, size: int):
    """Masks of the scene's structures [(name, mask, colour)] and the zones (water, road, lot, bridge)."""
    out, zones = [], {}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for s in scene.structures:
        p = plan[s]
        if s in ("runway", "road"):
            coord = xx if p["vertical"] else yy
            m = np.abs(coord - p["offset"]) < p["width"] / 2
            col = (78, 78, 82) if s == "runway" else (104, 104, 104)
            zones[s] = m
        elif s == "river":
            along, across = (yy, xx) if p["vertical"] else (xx, yy)
            centre = p["offset"] + p["amp"] * np.sin(along * 6.28 * 1.2 + p["phase"])
            m = np.abs(across - centre) < p["width"] / 2
            col = (52, 92, 132)
            zones["water"] = m
        elif s == "sea":
            e = p["extent"]
            m = {"left": xx < e, "right": xx >= 1 - e, "top": yy < e, "bottom": yy >= 1 - e}[p["side"]]
            col = (40, 84, 128)
            zones["water"] = m
        elif s == "pond":
            m = ((xx - p["cx"]) / p["rx"]) ** 2 + ((yy - p["cy"]) / p["ry"]) ** 2 < 1
            col = (48, 96, 124)
            zones["water"] = m
        elif s == "parking lot":
            g = p["margin"]
            m = (xx > g) & (xx < 1 - g) & (yy > g) & (yy < 1 - g)
            col = (92, 92, 96)
            zones["lot"] = m
        elif s == "bridge":  # a deck across the river, reaching a little over both banks
            r = plan["river"]
            along, across = (yy, xx) if r["vertical"] else (xx, yy)
            band = np.abs(along - p["pos"]) < 0.05
            wet = across[band & zones["water"]]
            m = band & (across > wet.min() - 0.04) & (across < wet.max() + 0.04)
            col = (176, 172, 164)
            zones["bridge"] = m
            zones["water"] = zones["water"] & ~m
        elif s == "pier":  # a jetty from the shore into the sea
            sea = plan["sea"]
            e, side, pos = sea["extent"], sea["side"], p["pos"]
            if side in ("left", "right"):
                band = np.abs(yy - pos) < 0.03
                reach = ((xx < e) & (xx > e - 0.3)) if side == "left" else ((xx >= 1 - e) & (xx < 1 - e + 0.3))
            else:
                band = np.abs(xx - pos) < 0.03
                reach = ((yy < e) & (yy > e - 0.3)) if side == "top" else ((yy >= 1 - e) & (yy < 1 - e + 0.3))
            m = band & reach
            col = (160, 156, 150)
            zones["water"] = zones["water"] & ~m
        out.append((s, m, col))
    return out, zones


def _markings(plan: dict, zones: dict, draw: ImageDraw.ImageDraw, size: int) -> None:
    """Runway centre line and parking bay lines: texture only, not objects."""
    if "runway" in zones:
        rw = plan["runway"]
        off = int(rw["offset"] * size)
        for t in range(4, size, 24):
            line = [(off, t), (off, t + 10)] if rw["vertical"] else [(t, off), (t + 10, off)]
            draw.line(line, fill=(230, 230, 230), width=2)
    if "lot" in zones:
        g = int(plan["parking lot"]["margin"] * size)
        for x in range(g + 6, size - g, 14):
            draw.line([(x, g + 2), (x, g + 12)], fill=(220, 220, 220), width=1)
            draw.line([(x, size - g - 12), (x, size - g - 2)], fill=(220, 220, 220), width=1)


# ---- planning and rendering ---------------------------------------------------------------------------
def _plan(rng: np.random.Generator) -> Spec:
    scene = SCENES[str(rng.choice(sorted(SCENES)))]
    n_groups = int(rng.choice([1, 2, 2, 3, 3]))
    regions = list(rng.permutation(REGIONS))
    groups = []
    for (kind, lo, hi, zone) in scene.groups[:n_groups]:
        k = KINDS[kind]
        groups.append(Group(kind, str(rng.choice(k.colours)), int(rng.integers(lo, hi + 1)),
                            str(rng.choice(["small", "large"])), str(regions.pop()), zone))
    return Spec(scene.name, _plan_structures(scene, rng), groups, int(rng.integers(2**31)))


def _edit(spec: Spec, rng: np.random.Generator) -> Spec | None:
    """One hard-negative edit of a spec: count, colour, swap of the two main groups, or position."""
    g = [replace(x) for x in spec.groups]
    kinds = ["count", "colour", "position"] + (["swap"] if len(g) > 1 else [])
    what = str(rng.choice(kinds))
    main = g[0]
    k = KINDS[main.kind]
    lo, hi = next((a, b) for (n, a, b, _) in SCENES[spec.scene].groups if n == main.kind)
    if what == "count":
        options = [c for c in range(lo, hi + 1) if c != main.count]
        if not options:
            return None
        main.count = int(rng.choice(options))
    elif what == "colour":
        options = [c for c in k.colours if c != main.colour]
        if not options:
            return None
        main.colour = str(rng.choice(options))
    elif what == "swap":
        g[0].region, g[1].region = g[1].region, g[0].region
    else:
        used = {x.region for x in g}
        main.region = str(rng.choice([r for r in REGIONS if r not in used]))
    return Spec(spec.scene, spec.variant, g, spec.bg_seed)


def _candidates(zone: np.ndarray, box, free: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    sub = zone[y0:y1, x0:x1] & free[y0:y1, x0:x1]
    ys, xs = np.nonzero(sub)
    return np.stack([xs + x0, ys + y0], 1) if len(xs) else np.zeros((0, 2), int)


def _pixel_centroid(ids: np.ndarray, which) -> tuple[float, float]:
    ys, xs = np.nonzero(np.isin(ids, list(which)))
    return float(xs.mean()), float(ys.mean())


def render(spec: Spec, size: int = SIZE):
    """Renders a spec. Returns (rgb, ids, objects, realised groups: [(Group, [ids], (cx, cy))])."""
    rng = np.random.default_rng(spec.bg_seed)
    scene = SCENES[spec.scene]
    base = np.array(scene.ground, np.float32)
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = base
    if scene.texture == "fields":  # patchwork of crop fields
        cuts_x = np.sort(rng.integers(20, size - 20, 3))
        cuts_y = np.sort(rng.integers(20, size - 20, 3))
        xs, ys = np.r_[0, cuts_x, size], np.r_[0, cuts_y, size]
        for i in range(len(ys) - 1):
            for j in range(len(xs) - 1):
                tint = np.array([rng.uniform(0.7, 1.35), rng.uniform(0.8, 1.15), rng.uniform(0.6, 1.2)], np.float32)
                canvas[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] *= tint
    idarr = np.zeros((size, size), np.uint8)
    structures, zones = _structures(scene, spec.variant, size)
    objects, next_id = [], 1
    for name, m, col in structures:
        canvas[m] = col
        idarr[m] = next_id
        objects.append({"id": next_id, "class": name, "structure": True})
        next_id += 1
    img = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    idimg = Image.fromarray(idarr)
    draw, ids = ImageDraw.Draw(img), ImageDraw.Draw(idimg)
    _markings(spec.variant, zones, draw, size)

    land = np.ones((size, size), bool)
    for z in zones.values():
        land &= ~z
    zone_of = {"land": land, **zones}
    free = np.ones((size, size), bool)
    realised = []
    for gi, g in enumerate(spec.groups):
        k = KINDS[g.kind]
        grng = np.random.default_rng([spec.bg_seed, gi, REGIONS.index(g.region)])
        lo, hi = k.length
        mid = (lo + hi) / 2
        length_range = (lo, mid) if (k.sized and g.size == "small") else ((mid, hi) if k.sized else (lo, hi))
        zone = zone_of.get(g.zone, land)
        inst, centres = [], []
        for region in [g.region] + [r for r in REGIONS if r != g.region]:  # fall back if the planned cell is full
            cand = _candidates(zone, _region_box(region, size, g.count), free)
            if len(cand) >= g.count:
                break
        for _ in range(g.count):
            placed = False
            for _try in range(30):
                if not len(cand):
                    break
                cx, cy = cand[int(grng.integers(len(cand)))]
                L = float(grng.uniform(*length_range))
                r = int(L * 0.55) + 2
                if not free[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r].all():
                    continue
                angle = float(grng.uniform(0, math.pi)) if k.shape not in ("tank", "tree") else 0.0
                if g.zone in ("runway", "road", "bridge") or (g.kind == "car" and g.zone == "lot"):
                    angle = 0.0 if grng.random() < 0.5 else math.pi / 2
                rgb = _shade(COLOURS[g.colour], float(grng.uniform(0.9, 1.08)))
                _draw_instance(draw, ids, k.shape, float(cx), float(cy), L, angle, rgb, next_id)
                free[max(cy - r, 0):cy + r, max(cx - r, 0):cx + r] = False
                objects.append({"id": next_id, "class": g.kind, "colour": g.colour, "size": g.size, "group": gi})
                inst.append(next_id)
                centres.append((cx, cy))
                next_id += 1
                placed = True
                break
            if not placed:
                break
        if inst:
            c = np.mean(np.array(centres, np.float32), 0)
            realised.append((replace(g, count=len(inst)), inst, (float(c[0]), float(c[1]))))
    out = np.asarray(img).astype(np.float32)
    out *= 1 + 0.07 * _noise(rng, size)[..., None]
    out += rng.normal(0, 3, (1, 1, 3)).astype(np.float32)  # a little per-image colour cast
    idarr = np.asarray(idimg).copy()
    # a structure covered by objects keeps only its visible pixels; drop objects that were painted over entirely
    present = set(np.unique(idarr).tolist())
    objects = [o for o in objects if o["id"] in present]
    realised = [(g, [i for i in ii if i in present], c) for g, ii, c in realised]
    realised = [r for r in realised if r[1]]
    # positions and relations in captions are read off the visible pixels of each group
    realised = [(replace(g, count=len(ii)), ii, _pixel_centroid(idarr, ii)) for g, ii, _ in realised]
    return out.clip(0, 255).astype(np.uint8), idarr, objects, realised


# ---- the world ----------------------------------------------------------------------------------------
def _split_of(family: int, seed: int) -> str:
    u = np.random.default_rng([seed, family, 7]).random()
    acc = 0.0
    for name, frac in SPLITS:
        acc += frac
        if u < acc:
            return name
    return SPLITS[-1][0]


def _family(seed: int, family: int, size: int) -> list[World]:
    rng = np.random.default_rng([seed, family])
    base = _plan(rng)
    specs = [base]
    extra = int(rng.choice([0, 0, 1, 1, 2]))  # ~60% of images have a hard-negative sibling
    for _ in range(extra):
        e = _edit(base, rng)
        if e is not None:
            specs.append(e)
    split = _split_of(family, seed)
    worlds, seen = [], set()
    for spec in specs:
        img, ids, objects, realised = render(spec, size)
        if not realised:  # nothing could be placed: not a useful image
            continue
        # an edit that did not survive rendering (more objects than fit, a move back to the same cell) would give
        # a second image with the same description: a false negative, not a hard negative
        sig = tuple((g.kind, g.colour, g.count, position_name(*c)) for g, _, c in realised)
        if len(realised) > 1:
            sig += (_relation(realised[0][2], realised[1][2]),)
        if sig in seen:
            continue
        seen.add(sig)
        structures = [o for o in objects if o.get("structure")]
        caps = write_captions(spec.scene, realised, structures, rng)
        texts, spans = zip(*(chunks_to_spans(c) for c in caps))
        keywords = [spec.scene] + sorted({g.kind for g, _, _ in realised}) + sorted(o["class"] for o in structures)
        worlds.append(World(img, ids, spec.scene, list(texts), list(spans), objects, family, split, keywords))
    return worlds


def generate(n: int, seed: int = 0, size: int = SIZE):
    """Yields n World images, family by family (a family never straddles the end: the last may be cut)."""
    made, family = 0, 0
    while made < n:
        for w in _family(seed, family, size):
            if made >= n:
                return
            yield w
            made += 1
        family += 1


def export(out: str | os.PathLike, n: int = 1000, seed: int = 0, size: int = SIZE, progress: bool = False) -> Path:
    """Writes the RSITMD Karpathy layout: dataset_synthetic.json, images/NNNNN.png, masks/NNNNN.png.

    Besides RSITMD's fields (filename, imgid, split, sentids, sentences, keywords) every image carries `label`,
    `mask`, `family` and `objects`, and every sentence its `spans`; the Karpathy loader reads them back.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    images, sentid = [], 0
    it = generate(n, seed, size)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=n, desc="synthetic", unit="img")
    for i, w in enumerate(it):
        name = f"{i:05d}.png"
        Image.fromarray(w.image).save(out / "images" / name, compress_level=1)
        Image.fromarray(w.ids).save(out / "masks" / name, compress_level=1)
        sents = []
        for text, spans in zip(w.captions, w.spans):
            sents.append({"tokens": tokenize(text), "raw": text, "imgid": i, "sentid": sentid,
                          "spans": [{"start": s.start, "end": s.end, "objects": list(s.objects)} for s in spans]})
            sentid += 1
        images.append({"filename": name, "imgid": i, "split": w.split, "label": w.label, "family": w.family,
                       "sentids": [s["sentid"] for s in sents], "sentences": sents, "keywords": w.keywords,
                       "mask": f"masks/{name}", "objects": w.objects})
    meta = {"dataset": "synthetic", "generator": {"n": n, "seed": seed, "size": size}, "images": images}
    tmp = out / "dataset_synthetic.json.tmp"
    tmp.write_text(json.dumps(meta, separators=(",", ":")))
    tmp.replace(out / "dataset_synthetic.json")  # written last: a finished export is one with this file
    return out


def to_dataset(worlds: list[World]) -> CaptionDataset:
    """An in-memory CaptionDataset view (no images on disk) of generated worlds, for tests and reports."""
    recs = [Record(f"{i:05d}.png", w.captions, w.split, w.label, None, w.spans, w.objects, w.keywords)
            for i, w in enumerate(worlds)]
    return CaptionDataset(recs, None, "synthetic")
