"""One dataset object for every caption format: records of (image file, captions, split, label, masks).

Loaders in formats.py and the synthetic world both produce a `CaptionDataset`. Images are opened lazily so a
dataset can be inspected (counts, leakage report) from its annotation file alone.
"""
from __future__ import annotations

import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError, Problem  # noqa: F401 - the data layer's errors travel with its dataset
from .images import open_image

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif")


@dataclass(frozen=True)
class Span:
    """Tokens [start, end) of a caption (rsdemo.data.text.tokenize) that refer to instance ids `objects`."""
    start: int
    end: int
    objects: tuple[int, ...]


@dataclass
class Record:
    filename: str                       # as written in the annotation file
    captions: list[str]
    split: str = "train"
    label: str | None = None            # scene category, where the data has one
    mask: str | None = None             # path (relative to the dataset's mask_root) of an instance-id PNG
    spans: list[list[Span]] | None = None   # per caption, the phrases that refer to objects
    objects: list[dict] | None = None   # per instance id: class, colour, ...
    keywords: list[str] | None = None


@dataclass
class Sample:
    image: "object"                     # PIL.Image.Image, RGB
    captions: list[str]
    label: str | None
    masks: np.ndarray | None            # [H, W] instance ids (0 = background), or None
    record: Record


class ImageResolver:
    """Finds the file of an annotation's filename under a root: exact path first, else by stem.

    Annotation files often say `12.tif` while users keep `12.png`/`12.webp`; matching by stem is the
    behaviour users expect. It is never silent: the first stem match prints one notice line on stderr
    (`notice` keeps it), and `stem_matches` counts them. `aliases` maps a stem to a file for layouts whose
    names differ from the annotations' (the UC Merced Land Use folders, see rsdemo.data.formats).
    """

    def __init__(self, root: str | os.PathLike, aliases: dict[str, Path] | None = None, quiet: bool = False):
        self.root = Path(root)
        self.aliases = aliases
        self.quiet = quiet
        self._by_stem: dict[str, Path] | None = None
        self.stem_matches = 0
        self.notice: str | None = None

    def _index(self) -> dict[str, Path]:
        if self._by_stem is None:
            self._by_stem = {}
            for dirpath, _, files in os.walk(self.root):
                for f in sorted(files):
                    p = Path(dirpath) / f
                    if p.suffix.lower() in IMAGE_EXTS:
                        self._by_stem.setdefault(p.stem, p)
        return self._by_stem

    def find(self, filename: str) -> Path | None:
        exact = self.root / filename
        if exact.is_file():
            return exact
        stem = Path(filename).stem
        hit = self.aliases.get(stem) if self.aliases is not None else None
        if hit is None:
            hit = self._index().get(stem)
        if hit is not None:
            self.stem_matches += 1
            if self.notice is None:
                self.notice = (f"note: images under {self.root} are matched by file stem, not by full name "
                               f"(e.g. {filename!r} -> {hit.relative_to(self.root) if hit.is_relative_to(self.root) else hit})")
                if not self.quiet:
                    print(self.notice, file=sys.stderr)
        return hit


class CaptionDataset:
    """Records plus where their images live. `ds[i]` opens image i; `ds.split("test")` filters."""

    def __init__(self, records: list[Record], image_root: str | os.PathLike | None = None,
                 name: str = "dataset", problems: list[Problem] | None = None, source: str = "",
                 mask_root: str | os.PathLike | None = None):
        self.records = records
        self.image_root = Path(image_root) if image_root is not None else None
        # Record.mask paths are relative to mask_root (the annotation file's folder for the synthetic export)
        self.mask_root = Path(mask_root) if mask_root is not None else self.image_root
        self.name = name
        self.source = source
        self.label_source: str | None = None   # where scene labels came from, when not the annotations
        self.problems = list(problems or [])
        self._resolver = ImageResolver(self.image_root) if self.image_root is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        splits = ", ".join(f"{k}={v}" for k, v in self.split_counts().items())
        return (f"CaptionDataset({self.name!r}, {len(self)} images, {self.num_captions} captions, {splits}, "
                f"{len(self.problems)} problems)")

    # ---- views -------------------------------------------------------------------------------
    def split(self, *names: str) -> "CaptionDataset":
        keep = [r for r in self.records if r.split in names]
        view = CaptionDataset(keep, self.image_root, f"{self.name}[{'+'.join(names)}]", self.problems, self.source,
                              self.mask_root)
        view._resolver = self._resolver
        return view

    def split_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.split] = out.get(r.split, 0) + 1
        return out

    @property
    def num_captions(self) -> int:
        return sum(len(r.captions) for r in self.records)

    def captions(self) -> tuple[list[str], np.ndarray]:
        """All captions flattened, and for each the index of its image (for the retrieval metrics)."""
        texts, owner = [], []
        for i, r in enumerate(self.records):
            texts += r.captions
            owner += [i] * len(r.captions)
        return texts, np.asarray(owner, dtype=np.int64)

    def example_captions(self, n: int = 8) -> list[str]:
        """n distinct captions spread over the scene labels (one per label in turn, most-repeated first):
        example queries for a demo over this dataset. Deterministic."""
        count = Counter(normalise_caption(c) for r in self.records for c in r.captions)
        by_label: dict[str, list[str]] = {}
        for r in self.records:
            by_label.setdefault(r.label or "", []).extend(r.captions)
        queues = {k: sorted(dict.fromkeys(v), key=lambda c: (-count[normalise_caption(c)], c))
                  for k, v in sorted(by_label.items())}
        out, seen = [], set()
        while len(out) < n and any(queues.values()):
            for q in queues.values():
                while q and normalise_caption(q[0]) in seen:
                    q.pop(0)
                if q and len(out) < n:
                    c = q.pop(0)
                    seen.add(normalise_caption(c))
                    out.append(c.strip().rstrip(" .").strip())
        return out

    @property
    def labels(self) -> list[str]:
        return sorted({r.label for r in self.records if r.label is not None})

    # ---- images ------------------------------------------------------------------------------
    def image_path(self, i: int) -> Path:
        rec = self.records[i]
        if self._resolver is None:
            raise DataError(f"{self.name}: no image folder given, cannot open {rec.filename!r}")
        p = self._resolver.find(rec.filename)
        if p is None:
            raise DataError(f"{self.image_root}: image {rec.filename!r} not found (looked for the name and its stem)")
        return p

    def has_images(self) -> bool:
        return self.image_root is not None and self.image_root.is_dir()

    def masks(self, i: int) -> np.ndarray | None:
        rec = self.records[i]
        if rec.mask is None or self.mask_root is None:
            return None
        with Image.open(self.mask_root / rec.mask) as m:
            return np.asarray(m).astype(np.int32)

    def __getitem__(self, i: int) -> Sample:
        rec = self.records[i]
        return Sample(open_image(self.image_path(i)), rec.captions, rec.label, self.masks(i), rec)

    @property
    def image_aliases(self) -> dict[str, Path] | None:
        return self._resolver.aliases if self._resolver is not None else None

    def set_image_aliases(self, aliases: dict[str, Path], notice: str | None = None) -> None:
        """Stem -> file for images whose names differ from the annotations' (checked before the stem index).
        `notice` replaces the resolver's stem-match notice (the caller has said how names map)."""
        if self._resolver is None:
            raise DataError(f"{self.name}: no image folder given")
        self._resolver.aliases = aliases
        if notice is not None:
            self._resolver.notice = notice

    def with_records(self, records: list[Record]) -> "CaptionDataset":
        view = CaptionDataset(records, self.image_root, self.name, self.problems, self.source, self.mask_root)
        view._resolver = self._resolver
        return view


_SCENE_PREFIX = re.compile(r"^([A-Za-z][A-Za-z ]*?)_?\d+$")


def label_from_filename(filename: str) -> str | None:
    """RSITMD/RSICD name images after their scene (`baseballfield_452.tif`): use it as the label."""
    m = _SCENE_PREFIX.match(Path(filename).stem)
    return m.group(1).lower() if m else None


def normalise_caption(text: str) -> str:
    """Lower-case, collapse whitespace, drop a trailing '.' (how duplicates across splits are compared)."""
    t = " ".join(text.lower().split())
    if t.endswith("."):
        t = t[:-1].rstrip()
    return t
