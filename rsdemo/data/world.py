"""What the synthetic aerial world is made of (rsdemo.data.synthetic renders it, rsdemo.data.captions describes it):
object classes (KINDS: names, colours, sizes, shapes), scene kinds (SCENES: ground, structures, groups), the 3x3
grid of positions, and the spec/world records. Tables only: no drawing, no randomness.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import Span

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
