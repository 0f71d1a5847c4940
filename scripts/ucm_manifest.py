"""Writes rsdemo/data/manifests/ucm.json: what `rsdemo.data.sources.fetch("ucm")` checks every download against.

    python scripts/ucm_manifest.py            # from ../shared/data (or $RSDEMO_SHARED_DATA)
    python scripts/ucm_manifest.py --check    # compare the committed manifest with that data, write nothing

For each of the 2,100 UC Merced Land Use images: the sha256 of its decoded pixels (rsdemo.data.sources.pixel_sha256,
8-bit RGB), read from the reference copy `ucm_images/<id>.webp` (lossless, pixel-identical to the original TIFFs),
and its size where it is not 256 x 256; for each UCM-captions annotation file: bytes, sha256 and git blob id.
Ids and classes are checked against `ucm_images/labels.csv`. No image and no caption text goes into the manifest.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rsdemo.files import file_sha256, write_text  # noqa: E402
from rsdemo.data.labels import UCM_CLASSES  # noqa: E402
from rsdemo.data.sources import SOURCES, pixel_sha256  # noqa: E402

SHARED = Path(os.environ.get("RSDEMO_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = SOURCES["ucm"].manifest


def git_blob(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def build(shared: Path) -> dict:
    images_dir = shared / "ucm_images"
    with open(images_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != 2100:
        raise SystemExit(f"{images_dir / 'labels.csv'}: {len(rows)} rows, want 2100")
    images, sizes = {}, {}
    for row in sorted(rows, key=lambda r: int(r["id"])):
        i = int(row["id"])
        c = UCM_CLASSES[(i - 1) // 100]
        want = f"{c}/{c}{(i - 1) % 100:02d}.tif"
        if row["class"] != c or row["landuse_file"] != want:
            raise SystemExit(f"labels.csv id {i}: {row['class']} {row['landuse_file']}, want {c} {want}")
        sha, size = pixel_sha256(images_dir / row["file"])
        images[str(i)] = sha
        if size != (256, 256):
            sizes[str(i)] = list(size)
    files = {}
    for r in SOURCES["ucm"].annotations:
        p = shared / r.name
        files[r.name] = {"bytes": p.stat().st_size, "sha256": file_sha256(p), "git_blob": git_blob(p)}
    return {
        "dataset": "ucm",
        "about": "UC Merced Land Use images (by UCM-captions id: 100 x class index + file number + 1) and the "
                 "UCM-captions annotation files. images: sha256 of each image's decoded pixels as an 8-bit RGB "
                 "array (height x width x 3, row-major); sizes: [width, height] where not `size`. Written by "
                 "scripts/ucm_manifest.py.",
        "classes": list(UCM_CLASSES),
        "size": [256, 256],
        "sizes": sizes,
        "images": images,
        "files": files,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared", type=Path, default=SHARED, help="the reference data folder (default %(default)s)")
    p.add_argument("--check", action="store_true", help="compare with the committed manifest, write nothing")
    a = p.parse_args(argv)
    man = build(a.shared)
    if a.check:
        old = json.loads(OUT.read_text())
        diff = [k for k in man["images"] if old["images"].get(k) != man["images"][k]]
        same = not diff and old["files"] == man["files"] and old["sizes"] == man["sizes"]
        print(f"{len(man['images']) - len(diff)} of {len(man['images'])} images match; annotation files "
              f"{'match' if old['files'] == man['files'] else 'DIFFER'}" + (f"; differ: {diff[:10]}" if diff else ""))
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    write_text(OUT, json.dumps(man, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(man['images'])} images ({len(man['sizes'])} not 256x256), "
          f"{len(man['files'])} annotation files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
