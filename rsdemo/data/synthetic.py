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
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files import cache_root
from .dataset import CaptionDataset, Record, Span
from .text import tokenize

SIZE = 256
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))

COLOURS = {
    "white": (232, 232, 226), "gray": (128, 130, 134), "black": (34, 34, 38), "red": (196, 44, 38),
    "blue": (46, 86, 196), "yellow": (226, 196, 48), "green": (64, 148, 64), "orange": (230, 128, 36),
}


@dataclass(frozen=True)
class Kind:
    """An object class: how it is named, drawn and sized (length in px at 256 px)."""
    name: str
    nouns: tuple[str, ...]            # singular synonyms
    plurals: tuple[str, ...]
    colours: tuple[str, ...]
    length: tuple[int, int]
    shape: str
    verbs: tuple[str, ...] = ("are",)  # plural verb phrases used in captions
    sized: bool = False                # whether "small"/"large" is a meaningful attribute


KINDS = {k.name: k for k in [
    Kind("plane", ("plane", "airplane", "aircraft"), ("planes", "airplanes", "aircraft"),
         ("white", "gray", "red", "blue"), (26, 38), "plane", ("are parked", "stand", "are waiting")),
    Kind("ship", ("ship", "boat", "vessel"), ("ships", "boats", "vessels"),
         ("white", "red", "gray", "orange", "blue"), (20, 42), "ship", ("are moored", "float", "are docked"), True),
    Kind("car", ("car", "vehicle"), ("cars", "vehicles"),
         ("white", "red", "blue", "black", "yellow"), (10, 13), "car", ("are parked", "stand")),
    Kind("truck", ("truck", "lorry"), ("trucks", "lorries"),
         ("white", "red", "blue", "yellow"), (16, 20), "truck", ("are parked", "stand")),
    Kind("storage tank", ("storage tank", "oil tank", "tank"), ("storage tanks", "oil tanks", "tanks"),
         ("white", "gray", "blue"), (14, 34), "tank", ("stand", "are located"), True),
    Kind("building", ("building", "house"), ("buildings", "houses"),
         ("red", "white", "gray", "blue", "orange"), (14, 34), "building", ("stand", "are located"), True),
    Kind("tree", ("tree",), ("trees",), ("green",), (10, 18), "tree", ("grow", "stand")),
    Kind("tennis court", ("tennis court", "court"), ("tennis courts", "courts"),
         ("green", "blue", "red"), (34, 40), "court", ("lie", "are laid out")),
    Kind("swimming pool", ("swimming pool", "pool"), ("swimming pools", "pools"),
         ("blue", "green"), (12, 20), "pool", ("are", "lie")),
    Kind("baseball field", ("baseball field", "baseball diamond"), ("baseball fields", "baseball diamonds"),
         ("green",), (52, 64), "diamond", ("lie", "are laid out")),
]}

# Structures: one per image at most, drawn before the groups; captions refer to them ("beside the runway").
STRUCTURE_NOUNS = {"runway": ("runway",), "river": ("river",), "sea": ("sea", "water"), "pond": ("pond",),
                   "road": ("road",), "parking lot": ("parking lot",), "bridge": ("bridge",), "pier": ("pier",)}


@dataclass(frozen=True)
class SceneKind:
    name: str
    words: tuple[str, ...]                           # noun phrases naming the scene
    ground: tuple[int, int, int]
    structures: tuple[str, ...]
    groups: tuple[tuple[str, int, int, str], ...]    # (kind, min count, max count, zone); first = main group
    texture: str = "plain"


SCENES = {s.name: s for s in [
    SceneKind("airport", ("airport", "airfield"), (158, 152, 136), ("runway",),
              (("plane", 1, 6, "land"), ("building", 1, 3, "land"), ("car", 1, 5, "land"))),
    SceneKind("port", ("port", "harbor"), (150, 146, 140), ("sea", "pier"),
              (("ship", 1, 6, "water"), ("storage tank", 1, 4, "land"), ("truck", 1, 4, "land"))),
    SceneKind("farmland", ("farmland", "cropland"), (120, 150, 70), (),
              (("building", 1, 3, "land"), ("tree", 2, 8, "land"), ("truck", 1, 2, "land")), "fields"),
    SceneKind("forest", ("forest", "woodland"), (46, 96, 48), ("road",),
              (("building", 1, 3, "land"), ("car", 1, 4, "road")), "canopy"),
    SceneKind("residential", ("residential area", "neighborhood"), (116, 136, 96), ("road",),
              (("building", 2, 8, "land"), ("swimming pool", 1, 3, "land"), ("car", 1, 4, "road"))),
    SceneKind("industrial", ("industrial area", "factory area"), (140, 138, 132), ("road",),
              (("building", 1, 5, "land"), ("storage tank", 1, 4, "land"), ("truck", 1, 5, "road"))),
    SceneKind("parking", ("parking lot", "car park"), (120, 128, 110), ("parking lot",),
              (("car", 1, 8, "lot"), ("truck", 1, 3, "lot"), ("tree", 2, 6, "land"))),
    SceneKind("baseballfield", ("baseball field area", "sports ground"), (104, 150, 80), (),
              (("baseball field", 1, 2, "land"), ("tree", 2, 6, "land"), ("building", 1, 3, "land"))),
    SceneKind("bridge", ("bridge area", "river crossing"), (112, 130, 92), ("river", "bridge"),
              (("car", 1, 4, "bridge"), ("ship", 1, 3, "water"), ("tree", 2, 6, "land"))),
    SceneKind("river", ("river area", "riverside"), (104, 134, 84), ("river",),
              (("ship", 1, 4, "water"), ("tree", 2, 8, "land"), ("building", 1, 4, "land"))),
    SceneKind("beach", ("beach", "coast"), (216, 200, 156), ("sea",),
              (("ship", 1, 4, "water"), ("building", 1, 4, "land"), ("swimming pool", 1, 2, "land"))),
    SceneKind("desert", ("desert", "barren land"), (210, 182, 132), (),
              (("building", 1, 3, "land"), ("truck", 1, 3, "land"), ("car", 1, 3, "land")), "dunes"),
    SceneKind("pond", ("pond area", "park with a pond"), (100, 140, 84), ("pond",),
              (("tree", 3, 8, "land"), ("building", 1, 3, "land"), ("ship", 1, 2, "water"))),
    SceneKind("storagetanks", ("storage tank area", "tank farm"), (150, 148, 138), ("road",),
              (("storage tank", 2, 8, "land"), ("truck", 1, 4, "road"), ("building", 1, 2, "land"))),
    SceneKind("playground", ("sports area", "playground"), (110, 144, 90), (),
              (("tennis court", 1, 4, "land"), ("tree", 2, 6, "land"), ("swimming pool", 1, 2, "land"))),
]}

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]

# 3x3 grid of positions; the name of a group's position is read off its instances' centroid.
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")


def position_name(cx: float, cy: float, size: int = SIZE) -> str:
    r, c = min(int(3 * cy / size), 2), min(int(3 * cx / size), 2)
    if (r, c) == (1, 1):
        return "centre"
    if r == 1:
        return _COLS[c]
    if c == 1:
        return _ROWS[r]
    return f"{_ROWS[r]} {_COLS[c]}"


_POSITION_PHRASES = {
    "centre": ("in the centre", "in the middle"),
    "left": ("on the left", "on the left side"), "right": ("on the right", "on the right side"),
    "top": ("at the top", "along the top"), "bottom": ("at the bottom", "along the bottom"),
}
for _r in ("top", "bottom"):
    for _c in ("left", "right"):
        _POSITION_PHRASES[f"{_r} {_c}"] = (f"in the {_r} {_c} corner", f"at the {_r} {_c}")


def _region_box(name: str, size: int, count: int = 1) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) in which a group placed at `name` keeps its instance centres.

    Big groups get a box reaching into the neighbouring cells, symmetric about the cell, so their centroid (which
    names the position in the captions) still falls in the cell.
    """
    third = size / 3
    r = {"top": 0, "middle": 1, "bottom": 2}
    c = {"left": 0, "centre": 1, "right": 2}
    if name == "centre":
        rr, cc = 1, 1
    elif name in c:
        rr, cc = 1, c[name]
    elif name in r:
        rr, cc = r[name], 1
    else:
        a, b = name.split()
        rr, cc = r[a], c[b]
    pad = 0.12 * third if count <= 3 else -0.3 * third
    box = (cc * third + pad, rr * third + pad, (cc + 1) * third - pad, (rr + 1) * third - pad)
    return tuple(int(min(max(v, 4), size - 4)) for v in box)


REGIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right")


# ---- spec ---------------------------------------------------------------------------------------------
@dataclass
class Group:
    kind: str
    colour: str
    count: int
    size: str          # "small" | "large" (only said for sized kinds)
    region: str        # planned region; the caption uses the realised position
    zone: str


@dataclass
class Spec:
    scene: str
    variant: dict      # structure layout parameters
    groups: list[Group]
    bg_seed: int


@dataclass
class World:
    """One rendered image with its ground truth."""
    image: np.ndarray                  # [H, W, 3] uint8
    ids: np.ndarray                    # [H, W] uint8 instance ids, 0 = background
    label: str
    captions: list[str]
    spans: list[list[Span]]
    objects: list[dict]                # index k-1 describes instance id k
    family: int
    split: str
    keywords: list[str] = field(default_factory=list)


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


# ---- captions -----------------------------------------------------------------------------------------
def _count_words(n: int, rng) -> str:
    if n == 1:
        return str(rng.choice(["a", "one"]))
    if n == 2 and rng.random() < 0.3:
        return "a pair of"
    return NUMBERS[n] if n < len(NUMBERS) else "many"


def _np(g: Group, rng, with_count=True, with_colour=True, with_size=False) -> str:
    """Noun phrase for a group: '[count] [size] [colour] noun'."""
    k = KINDS[g.kind]
    words = []
    if with_count:
        words.append(_count_words(g.count, rng))
    elif g.count > 1:
        words.append(str(rng.choice(["some", "several"])) if g.count > 2 else "two")
    else:
        words.append("a")
    if with_size and k.sized:
        words.append(g.size)
    if with_colour and len(k.colours) > 1:
        words.append(g.colour)
    words.append(str(rng.choice(k.plurals if g.count > 1 else k.nouns)))
    if words[0] == "a" and words[1][0] in "aeiou":
        words[0] = "an"
    return " ".join(words)


def _relation(a, b) -> tuple[str, str]:
    """Spatial relation of group a to group b from their centroids, and its converse."""
    (ax, ay), (bx, by) = a, b
    dx, dy = ax - bx, ay - by
    if max(abs(dx), abs(dy)) < 40:
        return "next to", "next to"
    if abs(dx) >= abs(dy):
        return ("to the left of", "to the right of") if dx < 0 else ("to the right of", "to the left of")
    return ("above", "below") if dy < 0 else ("below", "above")


_STRUCT_REL = {"runway": ("beside the runway", "near the runway"), "river": ("on the river", "in the river"),
               "sea": ("in the sea", "on the water"), "pond": ("on the pond",), "road": ("along the road", "on the road"),
               "parking lot": ("in the parking lot",), "bridge": ("on the bridge", "crossing the bridge")}
_ZONE_STRUCT = {"water": None, "road": "road", "lot": "parking lot", "bridge": "bridge"}


def _verb(g: Group, rng) -> str:
    v = str(rng.choice(KINDS[g.kind].verbs))
    if g.count == 1:
        v = {"are": "is", "stand": "stands", "grow": "grows", "lie": "lies", "float": "floats",
             "are parked": "is parked", "are waiting": "is waiting", "are moored": "is moored",
             "are docked": "is docked", "are located": "is located", "are laid out": "is laid out"}[v]
    return v


def write_captions(label: str, realised, structures: list[dict], rng, n: int = 5):
    """Five distinct captions as chunk lists [(text, [instance ids])], from the realised groups."""
    scene = SCENES[label]
    struct_id = {o["class"]: o["id"] for o in structures}
    g0, ids0, c0 = realised[0]
    second = realised[1] if len(realised) > 1 else None
    third = realised[2] if len(realised) > 2 else None

    def sc(article=True):
        w = str(rng.choice(scene.words))
        return (("an " if w[0] in "aeiou" else "a ") + w) if article else w

    def where(g, c):
        return str(rng.choice(_POSITION_PHRASES[position_name(*c)]))

    def struct_phrase(g):
        """'beside the runway' style phrase for a group, with the structure's id, or None."""
        s = _ZONE_STRUCT.get(g.zone)
        if g.zone == "water":
            s = next((x for x in ("river", "sea", "pond") if x in struct_id), None)
        if g.zone == "land" and "runway" in struct_id:
            s = "runway"
        if s is None or s not in struct_id:
            return None
        phrase = str(rng.choice(_STRUCT_REL[s]))
        head, noun = phrase.rsplit(" the ", 1)
        return [(head, []), ("the " + noun, [struct_id[s]])]

    def NP(g, ids, **kw):
        return (_np(g, rng, **kw), list(ids))

    templates = []
    # T1: position in the scene
    templates.append(lambda full: [NP(g0, ids0, with_colour=full), (_verb(g0, rng) + " " + where(g0, c0) + " of", []),
                                   ("the " + sc(False), [])])
    # T2: the scene with the main group
    templates.append(lambda full: [(sc().capitalize() + " with", []), NP(g0, ids0, with_count=full, with_size=True),
                                   (where(g0, c0), [])])
    # T3: "there are ..." with the structure relation or position
    def t3(full):
        sp = struct_phrase(g0)
        be = "there is" if g0.count == 1 else "there are"
        return [(be, []), NP(g0, ids0, with_colour=full)] + (sp if sp else [(where(g0, c0), [])]) + \
               [("in " + sc(), [])]
    templates.append(t3)
    if second is not None:
        g1, ids1, c1 = second
        rel, conv = _relation(c0, c1)
        templates.append(lambda full: [NP(g0, ids0, with_colour=full), (_verb(g0, rng) + " " + rel, []),
                                       NP(g1, ids1)])
        templates.append(lambda full: [(sc().capitalize() + " where", []), NP(g1, ids1, with_count=full),
                                       (_verb(g1, rng) + " " + conv, []), NP(g0, ids0)])
        templates.append(lambda full: [NP(g0, ids0, with_count=full), ("and", []), NP(g1, ids1, with_colour=False),
                                       ("can be seen in " + sc(), [])])
    if third is not None:
        g2, ids2, c2 = third
        templates.append(lambda full: [(sc().capitalize() + " with", []), NP(g0, ids0), (",", []),
                                       NP(g2, ids2, with_colour=full), (where(g2, c2) + " and", []),
                                       NP(second[0], second[1], with_count=False)])
    templates.append(lambda full: [(where(g0, c0).capitalize() + " of the image", []), NP(g0, ids0, with_size=full),
                                   (_verb(g0, rng), [])])
    templates.append(lambda full: [(sc().capitalize() + " containing", []), NP(g0, ids0, with_colour=full, with_size=True)])

    out, seen = [], set()
    order = list(rng.permutation(len(templates)))
    tries = 0
    while len(out) < n and tries < 60:
        t = templates[order[tries % len(order)]]
        tries += 1
        chunks = t(len(out) < 3 or rng.random() < 0.5)  # the first three state every attribute
        chunks = chunks + [(".", [])]
        raw = _join(chunks)
        if raw in seen:
            continue
        seen.add(raw)
        out.append(chunks)
    return out


def _join(chunks) -> str:
    s = ""
    for text, _ in chunks:
        s += text if (text in (".", ",") or not s) else " " + text
    return s[0].upper() + s[1:]


def chunks_to_spans(chunks) -> tuple[str, list[Span]]:
    """The caption text, and a Span (token indices of rsdemo.data.text.tokenize) per referring chunk."""
    spans, pos = [], 0
    for text, ref in chunks:
        n = len(tokenize(text))
        if ref:
            spans.append(Span(pos, pos + n, tuple(ref)))
        pos += n
    return _join(chunks), spans


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


def keyword_words(keyword: str) -> set[str]:
    """Every caption word that names a keyword (scene, object class or structure), synonyms and plurals too."""
    words = set(tokenize(keyword))
    if keyword in SCENES:
        for w in SCENES[keyword].words:
            words |= set(tokenize(w))
    if keyword in KINDS:
        for w in KINDS[keyword].nouns + KINDS[keyword].plurals:
            words |= set(tokenize(w))
    for w in STRUCTURE_NOUNS.get(keyword, ()):
        words |= set(tokenize(w))
    return words - {"a", "an", "the", "with", "area", "land"}


@functools.lru_cache(maxsize=1)
def vocabulary():
    """The words the caption grammar uses (from 300 generated images): the default vocab of text encoders."""
    from .text import Vocab

    return Vocab.build(c for w in generate(300, seed=12345) for c in w.captions)


def open_synthetic(spec: str = "synthetic") -> CaptionDataset:
    """`synthetic` (1,000 images, seed 0) or `synthetic:N` or `synthetic:N:SEED`, exported once into the cache."""
    parts = spec.split(":")
    try:
        n = int(parts[1]) if len(parts) > 1 and parts[1] else 1000
        seed = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise ValueError(f"bad synthetic spec {spec!r}: expected synthetic[:N[:SEED]]") from None
    out = cache_root() / f"synthetic-n{n}-s{seed}-{SIZE}"
    if not (out / "dataset_synthetic.json").is_file():
        # export beside, then rename the whole folder: processes starting together (DDP ranks, parallel runs)
        # never read a half-written world, and the first finished rename wins
        import shutil

        tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
        export(tmp, n, seed)
        if out.is_dir() and not (out / "dataset_synthetic.json").is_file():
            shutil.rmtree(out, ignore_errors=True)  # an unfinished export left by an older version
        try:
            os.rename(tmp, out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (out / "dataset_synthetic.json").is_file():
                raise
    from .formats import load_karpathy
    return load_karpathy(out / "dataset_synthetic.json", images=out / "images")
