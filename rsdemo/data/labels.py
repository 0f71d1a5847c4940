"""Scene labels of a caption dataset: a CSV of id,class, or the UC Merced Land Use folder layout (whose folders name
the 21 classes and whose file numbers give the UCM-captions ids). attach_labels fills them into a loaded dataset;
disagreements with the annotations become `Problem`s. Also the UC Merced multi-labels (which of 17 objects each
image holds, image level) and the object mosaics drawn from them, which evaluation (rsdemo.grounding) and
training (train.object_mosaics) share.
"""
from __future__ import annotations

import csv
import re
import sys
from pathlib import Path

import numpy as np

from .dataset import IMAGE_EXTS, CaptionDataset
from .errors import DataError, Problem

# The 21 UC Merced Land Use classes; UCM-captions ids are 100 * (index here) + file number + 1.
UCM_CLASSES = ("agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
               "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
               "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
               "sparseresidential", "storagetanks", "tenniscourt")
_LANDUSE_FILE = re.compile(r"^([a-z]+?)(\d+)$")


def load_labels(path) -> dict[str, str]:
    """Image stem -> scene class from a CSV whose header names an image column (id, image, filename or file)
    and a class column (class or label); `labels.csv` of the UCM images is `id,file,class,landuse_file`."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    out: dict[str, str] = {}
    with f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        cols = {h.strip().lower(): k for k, h in enumerate(header)}
        key = next((cols[c] for c in ("id", "image", "filename", "file") if c in cols), None)
        val = next((cols[c] for c in ("class", "label") if c in cols), None)
        if key is None or val is None:
            raise DataError(f"{path}: line 1: want an id (or image/filename/file) column and a class (or label) "
                            f"column; header is {header}")
        try:
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if max(key, val) >= len(row) or not row[key].strip() or not row[val].strip():
                    raise DataError(f"{path}: line {reader.line_num}: empty id or class")
                out[Path(row[key].strip()).stem] = row[val].strip()
        except csv.Error as e:
            raise DataError(f"{path}: line {reader.line_num}: {e}") from e
    if not out:
        raise DataError(f"{path}: no label rows")
    return out


def landuse_id(ci: int, nn: int) -> str:
    """The UCM-captions id of file `<class>NN` of the class at index ci (of the 21, alphabetical): 100 ci + NN + 1."""
    return str(100 * ci + nn + 1)


def landuse_file(image_id: str, classes=UCM_CLASSES) -> str:
    """landuse_id's inverse: `<class>/<class>NN.tif` under the Land Use `Images/` folder."""
    ci, nn = divmod(int(image_id) - 1, 100)
    return f"{classes[ci]}/{classes[ci]}{nn:02d}.tif"


def landuse_layout(root) -> dict[str, tuple[Path, str]] | None:
    """UCM-captions id (as a string) -> (file, class) for the UC Merced Land Use download layout
    `[Images/]<class>/<class>NN.tif`, or None when `root` is not laid out like that.

    id: landuse_id, with the 21 classes in alphabetical order (UCM_CLASSES); a folder holding
    only some of the classes or files (a subset) keeps the ids of the full set.
    """
    root = Path(root)
    if (root / "Images").is_dir():
        root = root / "Images"
    if not root.is_dir():
        return None
    dirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()}
    known = [c for c in UCM_CLASSES if c in dirs]
    if not known or len(known) < len(dirs) - 1:   # a stray folder is tolerated, another dataset is not
        return None
    out: dict[str, tuple[Path, str]] = {}
    for c in known:
        ci = UCM_CLASSES.index(c)
        for p in sorted(dirs[c].iterdir()):
            m = _LANDUSE_FILE.match(p.stem.lower())
            if p.suffix.lower() in IMAGE_EXTS and m and m.group(1) == c and int(m.group(2)) < 100:
                out[landuse_id(ci, int(m.group(2)))] = (p, c)
    return out or None


def attach_labels(ds: CaptionDataset, labels=None, quiet: bool = False) -> CaptionDataset:
    """Fills scene labels (and, for the Land Use layout, the image files) of a dataset, in place.

    Sources, first found wins: `labels` (a CSV path or a stem -> class dict), the UC Merced Land Use layout of
    the image folder, a `labels.csv` in the image folder or beside the annotations. Labels the annotations
    already carry are kept; disagreements and annotation images without a label become `ds.problems`.
    """
    table: dict[str, str] | None = None
    src = ""
    if isinstance(labels, dict):
        table, src = {Path(str(k)).stem: str(v) for k, v in labels.items()}, "labels"
    elif labels is not None:
        table, src = load_labels(labels), str(labels)
    root = ds.image_root
    if table is None and root is not None and root.is_dir():
        lay = landuse_layout(root)
        if lay is not None:
            note = (f"note: {root} has the UC Merced Land Use layout: image id = 100 x class index + file "
                    f"number + 1 ({len(lay)} images, classes in alphabetical order)")
            ds.set_image_aliases({k: p for k, (p, _) in lay.items()}, notice=note)
            table, src = {k: c for k, (_, c) in lay.items()}, f"{root} (UC Merced Land Use layout)"
            if not quiet:
                print(note, file=sys.stderr)
    if table is None:
        cands = [root / "labels.csv"] if root is not None else []
        if ds.source:
            s = Path(ds.source)
            cands.append((s if s.is_dir() else s.parent) / "labels.csv")
        for c in cands:
            if c.is_file():
                table, src = load_labels(c), str(c)
                break
    if table is None:
        return ds
    missing = 0
    for r in ds.records:
        lab = table.get(Path(r.filename).stem)
        if lab is None:
            missing += 1
        elif r.label is None:
            r.label = lab
        elif r.label.lower() != lab.lower():
            ds.problems.append(Problem(src, r.filename, f"label {lab!r} differs from the annotations' {r.label!r}"))
    if missing:
        ds.problems.append(Problem(src, "", f"{missing} of {len(ds)} images have no label there"))
    ds.label_source = src
    return ds


# ---- UC Merced multi-labels ---------------------------------------------------------------------------

# the 17 UC Merced multi-label objects (column names of labels_by_id.csv) as query words
OBJECT_WORDS = {
    "airplane": "airplanes", "bare-soil": "bare soil", "buildings": "buildings", "cars": "cars",
    "chaparral": "chaparral", "court": "a court", "dock": "docks", "field": "a field", "grass": "grass",
    "mobile-home": "mobile homes", "pavement": "pavement", "sand": "sand", "sea": "the sea", "ship": "ships",
    "tanks": "storage tanks", "trees": "trees", "water": "water"}


def image_id(record) -> str:
    return Path(record.filename).stem


def load_multilabels(path) -> dict[str, set[str]]:
    """UCM multi-labels (labels_by_id.csv, or its folder): image id -> the objects present."""
    path = Path(path)
    if path.is_dir():
        path = path / "labels_by_id.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no UC Merced multi-labels here (want labels_by_id.csv: id + 17 0/1 columns)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "id" not in rows[0]:
        raise ValueError(f"{path}: want an 'id' column and one 0/1 column per object")
    if not set(rows[0]) & set(OBJECT_WORDS):
        raise ValueError(f"{path}: none of its columns ({', '.join(k for k in rows[0] if k != 'id')}) is one of the "
                         f"UC Merced objects: {', '.join(OBJECT_WORDS)}")
    return {r["id"]: {k for k, v in r.items() if k != "id" and v.strip() == "1"} for r in rows}


def object_mosaics(ds, labels: dict[str, set], per_object: int, seed: int = 0, tiles: int = 4):
    """per_object mosaics of `tiles` photos per object: the target tile's photo contains the object, the others do
    not (from the target's scene class where the labels allow, so tiles differ in the object rather than only in
    scene); the target cycles over the tiles; photos the labels do not name are neither. [(indices, target tile,
    object word, object)]. rsdemo.grounding's object measures and the training's object mosaics draw them."""
    rng = np.random.default_rng(seed + 1)
    have = [labels.get(image_id(r)) for r in ds.records]     # None: not labelled, so neither tile kind
    out, k = [], 0
    for obj, word in OBJECT_WORDS.items():
        pos = [i for i, h in enumerate(have) if h is not None and obj in h]
        neg = [i for i, h in enumerate(have) if h is not None and obj not in h]
        if not pos or len(neg) < tiles - 1:
            continue
        for _ in range(per_object):
            t_img = int(rng.choice(pos))
            same = [i for i in neg if ds.records[i].label == ds.records[t_img].label]
            other = [i for i in neg if i not in set(same)]
            rng.shuffle(same)
            rng.shuffle(other)
            distract = (list(same) + list(other))[:tiles - 1]
            t = k % tiles
            idx = distract[:t] + [t_img] + distract[t:]
            out.append(([int(i) for i in idx], t, word, obj))
            k += 1
    return out
