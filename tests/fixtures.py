"""Tiny datasets in every caption format, written by code into a given folder (no copied files).

Images are 8x8 solid-colour PNGs while the annotations say `.tif`, so loading them exercises the
lookup by stem. Deliberate defects, for the problem and leakage tests, are listed next to each writer.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

def shared_data() -> Path:
    """The real reference data: ../shared/data next to the repository, or $RSDEMO_SHARED_DATA."""
    env = os.environ.get("RSDEMO_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real(rel: str) -> Path:
    """A path under the real data, or a clean skip where that data is absent."""
    p = shared_data() / rel
    if not p.exists():
        pytest.skip(f"real data not here: {p}")
    return p


RED, GREEN, BLUE, GREY, YELLOW = (200, 30, 30), (30, 160, 40), (20, 40, 200), (128, 128, 128), (230, 220, 20)


def png(path: Path, colour, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, np.uint8)).save(path)
    return path


def caps(topic: str, n: int = 5) -> list[str]:
    return [f"There is a {topic} number {k} ." for k in range(n)]


# ---- Karpathy ---------------------------------------------------------------------------------
# farm_1 (train), harbour_2 (train, one blank caption -> 4), city_3 (val, only 4 sentences),
# forest_4 (test, same pixels as farm_1 and one caption also in train), synth_5 (test, extension fields).
SYNTH_OBJECTS = [{"id": 1, "class": "house", "colour": "red", "bbox": [0, 0, 4, 4]},
                 {"id": 2, "class": "tree", "colour": "green", "bbox": [4, 4, 8, 8]}]
SYNTH_SPANS = [[{"start": 2, "end": 4, "objects": [1]}, {"start": 6, "end": 8, "objects": [2, 1]}],
               [], [{"start": 0, "end": 1, "objects": [2]}], [], []]


def karpathy_doc() -> dict:
    def sents(imgid, texts, first):
        return [{"tokens": t.split(), "raw": t, "imgid": imgid, "sentid": first + k} for k, t in enumerate(texts)]

    harbour = caps("harbour")
    harbour[2] = "   "
    forest = caps("forest")
    forest[0] = "there is a FARM number 0"      # same as farm_1's first caption once normalised
    synth = [{"tokens": t.split(), "raw": t, "imgid": 4, "sentid": 19 + k, "spans": sp}
             for k, (t, sp) in enumerate(zip(caps("synthetic scene"), SYNTH_SPANS))]
    images = [
        {"filename": "farm_1.tif", "imgid": 0, "split": "train", "sentids": [0, 1, 2, 3, 4],
         "sentences": sents(0, caps("farm"), 0), "keywords": ["farm", "field"]},
        {"filename": "harbour_2.tif", "imgid": 1, "split": "train", "sentids": [5, 6, 7, 8, 9],
         "sentences": sents(1, harbour, 5), "keywords": ["harbour"]},
        {"filename": "city_3.tif", "imgid": 2, "split": "val", "sentids": [10, 11, 12, 13],
         "sentences": sents(2, caps("city", 4), 10), "keywords": []},
        {"filename": "forest_4.tif", "imgid": 3, "split": "test", "sentids": [14, 15, 16, 17, 18],
         "sentences": sents(3, forest, 14), "keywords": ["forest"]},
        {"filename": "synth_5.tif", "imgid": 4, "split": "test", "sentids": [19, 20, 21, 22, 23],
         "sentences": synth, "label": "Synthetic Scene", "mask": "masks/synth_5.png",
         "objects": SYNTH_OBJECTS, "keywords": ["house", "tree"]},
    ]
    return copy.deepcopy({"dataset": "tiny", "images": images})   # callers edit it; the constants stay put


def write_karpathy(root: Path, images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "dataset_tiny.json"
    path.write_text(json.dumps(karpathy_doc(), indent=1))
    if images:
        for name, colour in [("farm_1", RED), ("harbour_2", BLUE), ("city_3", GREY), ("forest_4", RED),
                             ("synth_5", YELLOW)]:
            png(root / "images" / f"{name}.png", colour)
        mask = np.zeros((8, 8), np.uint8)
        mask[:4, :4], mask[4:, 4:] = 1, 2
        (root / "masks").mkdir(exist_ok=True)  # beside the JSON, as the synthetic export does
        Image.fromarray(mask).save(root / "masks" / "synth_5.png")
    return path


# ---- COCO (UCM-captions layout) ---------------------------------------------------------------
# train: ids 3, 1, 2 listed out of order, id 2 has a blank caption (-> 4); val: id 4; test: id 5 with 4 captions.
COCO_SPLITS = {"train": [3, 1, 2], "val": [4], "test": [5]}


def write_coco(root: Path, images: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ann_id = 0
    for split, ids in COCO_SPLITS.items():
        imgs, anns = [], []
        for i in ids:
            imgs.append({"license": 1, "file_name": f"{i}.tif", "id": i, "height": 500, "width": 500})
            texts = caps(f"scene {i}", 4 if i == 5 else 5)
            if i == 2:
                texts[1] = ""
            for t in texts:
                anns.append({"image_id": i, "id": ann_id, "caption": t})
                ann_id += 1
        doc = {"info": {"description": "tiny"}, "images": imgs, "licenses": [], "annotations": anns}
        (root / f"data_{split}_tiny.json").write_text(json.dumps(doc))
    if images:
        for i, colour in zip(range(1, 6), [RED, GREEN, BLUE, GREY, YELLOW]):
            png(root / "images" / f"{i}.png", colour)
    return root


# ---- AMFMN precomp ----------------------------------------------------------------------------
# train: one filename line per image (3 images), line 8 blank, line 3 with trailing spaces;
# test: one filename line per caption (2 images); val_verify: the _verify naming (1 image).
PRECOMP = {"train": ["beach_1.tif", "beach_2.tif", "port_3.tif"],
           "test": ["port_4.tif", "beach_5.tif"],
           "val_verify": ["port_6.tif"]}


def write_precomp(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, names in PRECOMP.items():
        head, _, tail = split.partition("_")
        tail = f"_{tail}" if tail else ""
        lines = [c for n in names for c in caps(n.split(".")[0])]
        if split == "train":
            lines[2] = lines[2] + "   "
            lines[7] = "  "
        per_caption = split == "test"
        files = [n for n in names for _ in range(5)] if per_caption else names
        (root / f"{head}_caps{tail}.txt").write_text("\n".join(lines) + "\n")
        (root / f"{head}_filename{tail}.txt").write_text("\n".join(files) + "\n")
    return root


# ---- folder + CSV -----------------------------------------------------------------------------
# a (train, 3 rows), b (train, one empty caption cell), c (test, label column set), d.png not in the CSV,
# broken.png (val) is not an image at all.
CSV_ROWS = [("a.png", "a red square", "train", ""), ("b.png", "a green square", "train", ""),
            ("a.png", "red everywhere", "train", ""), ("c.png", "a blue square", "test", "water"),
            ("b.png", "", "train", ""), ("a.png", "only red", "train", ""),
            ("c.png", "blue everywhere", "test", "water"), ("b.png", "only green", "train", ""),
            ("c.png", "only blue", "test", "water"), ("broken.png", "nothing to see", "val", "")]


def write_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, colour in [("a", RED), ("b", GREEN), ("c", BLUE), ("d", GREY)]:
        png(root / f"{name}.png", colour)
    (root / "broken.png").write_bytes(b"not a png")
    lines = ["image,caption,split,label"] + [",".join(r) for r in CSV_ROWS]
    (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root


# ---- the demo page -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def serve_app(data: str, cache, **launch):
    """app.build over `data`, launched as `python app.py` launches it (plus `launch` overrides, e.g. more
    allowed_paths) on loopback with its own RSDEMO_CACHE; yields the page and closes it afterwards."""
    old = os.environ.get("RSDEMO_CACHE")
    os.environ["RSDEMO_CACHE"] = str(cache)
    import app

    page = app.build(data=data)
    app.serve(page, **{"server_name": "127.0.0.1", "server_port": None, "prevent_thread_lock": True,
                       "quiet": True, **launch})
    try:
        yield page
    finally:
        page.close()
        if old is None:
            os.environ.pop("RSDEMO_CACHE", None)
        else:
            os.environ["RSDEMO_CACHE"] = old
