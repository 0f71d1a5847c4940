"""Loaders for the caption formats of the remote-sensing retrieval benchmarks.

Every loader returns a `CaptionDataset`: records in file order, caption text as written (precomp lines are
stripped), and a list of `Problem`s for defects that do not stop loading (blank captions, odd caption
counts, ...). Malformed files raise `DataError` naming the file and the field path or line.

    karpathy  dataset_RSITMD.json, dataset_rsicd.json, dataset_{ucm,sydney}_modified.json
    coco      UCM-captions data_{train,val,test}_UCM.json (a file or the folder holding them)
    precomp   AMFMN <split>_caps.txt + <split>_filename.txt (a folder, or one *_caps*.txt file)
    folder    images + a CSV with image/filename and caption columns (optional split, label)

open_dataset(spec) resolves a dataset spec (FMT:PATH, a bare path whose format is detected, a downloadable
dataset's name via rsdemo.data.sources, or synthetic[:N[:SEED]] via the cached export of rsdemo.data.synthetic);
scene labels are filled by rsdemo.data.labels. One module, past the usual size, because the four loaders are one
contract: they share the field-path validators and error wording, and detect_format must know every one of them.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

from ..files import cache_root
from .dataset import CaptionDataset, DataError, Problem, Record, Span, label_from_filename
from .labels import attach_labels
from .sources import SOURCES, fetched
from .synthetic import SIZE, export
from .text import tokenize

FORMATS = ("karpathy", "coco", "precomp", "folder")

# name given by the user -> format, or for dataset names an order of formats to try on a folder
_ALIASES = {
    "karpathy": "karpathy", "rsitmd": "karpathy", "rsicd": "karpathy", "sydney": "karpathy",
    "coco": "coco", "ucm": "coco",
    "precomp": "precomp", "amfmn": "precomp",
    "folder": "folder", "csv": "folder",
}
_FOLDER_PREFERENCE = {
    "ucm": ("coco", "precomp", "karpathy", "folder"),
    "rsitmd": ("karpathy", "precomp", "coco", "folder"),
    "rsicd": ("karpathy", "precomp", "coco", "folder"),
    "sydney": ("karpathy", "precomp", "coco", "folder"),
}
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


# ---- shared helpers ---------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e


def _read_lines(path: Path) -> list[str]:
    """Lines without their line ends. Splits on '\\n' only: str.splitlines would also split on U+2028 etc."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from e
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _need(obj, key: str, where: str, path: Path, kind=None):
    """obj[key], or a DataError naming the file and field path."""
    if not isinstance(obj, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise DataError(f"{path}: {where}: missing {key!r}")
    val = obj[key]
    if kind is not None and not isinstance(val, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{path}: {where}.{key}: expected {names}, got {type(val).__name__}")
    return val


def _check_counts(records: list[Record], origin: list[str], problems: list[Problem]) -> None:
    """One Problem per image whose caption count differs from the dataset's most common count."""
    if not records:
        return
    counts = Counter(len(r.captions) for r in records)
    usual = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    for r, f in zip(records, origin):
        if len(r.captions) != usual:
            problems.append(Problem(f, r.filename, f"{len(r.captions)} captions (most images have {usual})"))


def _split_key(name: str):
    return (_SPLIT_ORDER.get(name, 3), name)


# ---- Karpathy JSON ----------------------------------------------------------------------------

def _looks_karpathy(path: Path) -> bool:
    head = _head(path)
    if '"sentences"' in head:
        return True
    if '"annotations"' in head or '"file_name"' in head:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    imgs = data.get("images") if isinstance(data, dict) else None
    return isinstance(imgs, list) and bool(imgs) and isinstance(imgs[0], dict) and "filename" in imgs[0]


def _looks_coco(path: Path) -> bool:
    head = _head(path)
    if '"sentences"' in head:
        return False
    if '"file_name"' in head:
        return True
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "annotations" in data and "images" in data


def _head(path: Path, n: int = 1 << 16) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def _karpathy_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    hits = [p for p in sorted(path.glob("*.json")) if _looks_karpathy(p)]
    if len(hits) != 1:
        what = "no Karpathy-style JSON" if not hits else f"{len(hits)} Karpathy-style JSON files"
        names = ", ".join(p.name for p in hits)
        raise DataError(f"{path}: {what} (images[].sentences[]){': ' + names if names else ''}; name the file")
    return hits[0]


def _spans(raw, where: str, path: Path) -> list[Span]:
    if not isinstance(raw, list):
        raise DataError(f"{path}: {where}: expected a list, got {type(raw).__name__}")
    out = []
    for k, s in enumerate(raw):
        w = f"{where}[{k}]"
        start = _need(s, "start", w, path, int)
        end = _need(s, "end", w, path, int)
        objs = _need(s, "objects", w, path, list)
        if not all(isinstance(o, int) for o in objs):
            raise DataError(f"{path}: {w}.objects: expected a list of ints")
        out.append(Span(start, end, tuple(objs)))
    return out


def load_karpathy(path, images=None) -> CaptionDataset:
    """Karpathy-style JSON: {"images": [{"filename", "split", "sentences": [{"raw", "tokens", ...}], ...}]}.

    Also keeps the synthetic world's extension fields: image `label`, `mask`, `objects`, `keywords` and
    per-sentence `spans` [{"start", "end", "objects"}].
    """
    path = _karpathy_file(Path(path))
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images', got {type(data).__name__}")
    imgs = _need(data, "images", "top level", path, list)
    records, origin, problems = [], [], []
    src = str(path)
    for i, im in enumerate(imgs):
        w = f"images[{i}]"
        fn = _need(im, "filename", w, path, str)
        split = _need(im, "split", w, path, str)
        sents = _need(im, "sentences", w, path, list)
        caps, spans, any_spans, sent_ids = [], [], False, []
        for j, s in enumerate(sents):
            ws = f"{w}.sentences[{j}]"
            if not isinstance(s, dict):
                raise DataError(f"{path}: {ws}: expected an object, got {type(s).__name__}")
            if "raw" in s:
                text = s["raw"]
                if not isinstance(text, str):
                    raise DataError(f"{path}: {ws}.raw: expected str, got {type(text).__name__}")
            elif isinstance(s.get("tokens"), list):
                text = " ".join(str(t) for t in s["tokens"])
                problems.append(Problem(src, f"{ws} ({fn})", "missing 'raw', caption rebuilt from 'tokens'"))
            else:
                raise DataError(f"{path}: {ws}: missing 'raw' (and no 'tokens' to rebuild it from)")
            if "sentid" in s:
                sent_ids.append(s["sentid"])
            if not text.strip():
                problems.append(Problem(src, f"{ws} ({fn})", "blank caption"))
                continue
            caps.append(text)
            if "spans" in s:
                any_spans = True
                spans.append(_spans(s["spans"], f"{ws}.spans", path))
            else:
                spans.append([])
        # Sydney 363.tif lists the sentids of 362.tif: worth knowing, harmless for loading
        if "sentids" in im and len(sent_ids) == len(sents) and list(im["sentids"]) != sent_ids:
            problems.append(Problem(src, f"{w} ({fn})",
                                    f"sentids {im['sentids']} differ from its sentences' sentid {sent_ids}"))
        label = im["label"] if "label" in im else label_from_filename(fn)
        mask = im.get("mask")
        if mask is not None and not isinstance(mask, str):
            raise DataError(f"{path}: {w}.mask: expected str, got {type(mask).__name__}")
        objects = im.get("objects")
        if objects is not None and not isinstance(objects, list):
            raise DataError(f"{path}: {w}.objects: expected a list, got {type(objects).__name__}")
        keywords = im.get("keywords")
        if keywords is not None and not isinstance(keywords, list):
            raise DataError(f"{path}: {w}.keywords: expected a list, got {type(keywords).__name__}")
        records.append(Record(fn, caps, split, label, mask, spans if any_spans else None, objects, keywords))
        origin.append(src)
    _check_counts(records, origin, problems)
    name = data.get("dataset") if isinstance(data.get("dataset"), str) else path.stem
    # mask paths are relative to the annotation file (the synthetic export keeps masks/ out of images/)
    return CaptionDataset(records, images, name, problems, src, mask_root=path.parent)


def to_karpathy(ds: CaptionDataset, name: str | None = None) -> dict:
    """The Karpathy JSON of a dataset (inverse of load_karpathy, extension fields included)."""
    out, sid = [], 0
    for i, r in enumerate(ds.records):
        sents = []
        for j, c in enumerate(r.captions):
            s = {"tokens": tokenize(c), "raw": c, "imgid": i, "sentid": sid + j}
            if r.spans is not None:
                s["spans"] = [{"start": sp.start, "end": sp.end, "objects": list(sp.objects)} for sp in r.spans[j]]
            sents.append(s)
        im = {"filename": r.filename, "imgid": i, "split": r.split,
              "sentids": list(range(sid, sid + len(sents))), "sentences": sents}
        sid += len(sents)
        if r.label != label_from_filename(r.filename):   # None too, so it stays None on reload
            im["label"] = r.label
        for key in ("mask", "objects", "keywords"):
            if getattr(r, key) is not None:
                im[key] = getattr(r, key)
        out.append(im)
    return {"dataset": name or ds.name, "images": out}


def save_karpathy(ds: CaptionDataset, path, name: str | None = None) -> None:
    Path(path).write_text(json.dumps(to_karpathy(ds, name), ensure_ascii=False, indent=1), encoding="utf-8")


# ---- COCO captions (UCM-captions) -------------------------------------------------------------

_SPLIT_IN_NAME = re.compile(r"(?:^|[_\-.])(train|val|valid|validation|test)(?=[_\-.]|$)", re.IGNORECASE)


def _split_from_name(name: str) -> str:
    m = _SPLIT_IN_NAME.search(Path(name).stem)
    if not m:
        return "train"
    s = m.group(1).lower()
    return "val" if s.startswith("val") else s


def _coco_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(path.glob("data_*_*.json"))
    if not files:
        files = [p for p in sorted(path.glob("*.json")) if _looks_coco(p)]
    if not files:
        raise DataError(f"{path}: no COCO caption files (data_<split>_*.json, or JSON with 'annotations')")
    return sorted(files, key=lambda p: (_split_key(_split_from_name(p.name)), p.name))


def load_coco(path, images=None) -> CaptionDataset:
    """COCO caption JSON ({"images": [{"file_name", "id"}], "annotations": [{"image_id", "caption"}]}).

    `path` is one file or a folder of them; the split comes from the file name (data_val_UCM.json -> val).
    """
    path = Path(path)
    files = _coco_files(path)
    problems: list[Problem] = []
    found: list[tuple[int, int, Record, str]] = []   # (image id, file index, record, file)
    seen: dict[object, str] = {}
    for fi, f in enumerate(files):
        data = _read_json(f)
        if not isinstance(data, dict):
            raise DataError(f"{f}: expected a JSON object with 'images' and 'annotations'")
        src, split = str(f), _split_from_name(f.name)
        by_id: dict[object, Record] = {}
        for i, im in enumerate(_need(data, "images", "top level", f, list)):
            w = f"images[{i}]"
            iid = _need(im, "id", w, f, (int, str))
            fn = _need(im, "file_name", w, f, str)
            if iid in by_id:
                problems.append(Problem(src, w, f"image id {iid} listed twice in this file, first kept"))
                continue
            if iid in seen:
                problems.append(Problem(src, w, f"image id {iid} ({fn}) also in {seen[iid]}"))
            seen.setdefault(iid, src)
            rec = Record(fn, [], split, label_from_filename(fn))
            by_id[iid] = rec
            found.append((iid, fi, rec, src))
        for k, a in enumerate(_need(data, "annotations", "top level", f, list)):
            w = f"annotations[{k}]"
            iid = _need(a, "image_id", w, f)
            cap = _need(a, "caption", w, f, str)
            rec = by_id.get(iid)
            if rec is None:
                raise DataError(f"{f}: {w}: image_id {iid!r} has no entry in images")
            if not cap.strip():
                problems.append(Problem(src, f"{w} ({rec.filename})", "blank caption"))
                continue
            rec.captions.append(cap)
    # ids may be ints or strings: compare within a kind, ints first
    found.sort(key=lambda t: (isinstance(t[0], str), t[0], t[1]))
    records = [t[2] for t in found]
    _check_counts(records, [t[3] for t in found], problems)
    name = path.name if path.is_dir() else path.stem
    return CaptionDataset(records, images, name, problems, str(path))


# ---- AMFMN precomputed text files -------------------------------------------------------------

_CAPS = re.compile(r"^(.+?)_caps(.*)\.txt$")


def precomp_splits(folder) -> dict[str, tuple[Path, Path]]:
    """split -> (captions file, filenames file); `train_caps_verify.txt` gives split 'train_verify'."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.glob("*_caps*.txt")):
        m = _CAPS.match(p.name)
        if not m:
            continue
        out[m.group(1) + m.group(2)] = (p, folder / f"{m.group(1)}_filename{m.group(2)}.txt")
    return dict(sorted(out.items(), key=lambda kv: _split_key(kv[0])))


def _load_precomp_split(split: str, caps_file: Path, names_file: Path, problems: list[Problem]):
    if not names_file.is_file():
        raise DataError(f"{caps_file}: no matching filename list {names_file.name}")
    caps = _read_lines(caps_file)
    names = [n.strip() for n in _read_lines(names_file)]
    while names and not names[-1]:     # stray blank lines at the very end mean nothing
        names.pop()
    for k, n in enumerate(names):
        if not n:
            raise DataError(f"{names_file}: line {k + 1}: blank filename")
    nc, nf = len(caps), len(names)
    # groups: (filename, index of its first caption line, number of caption lines)
    if nf == nc:
        groups = []
        for k, n in enumerate(names):
            if groups and groups[-1][0] == n:
                groups[-1][2] += 1
            else:
                groups.append([n, k, 1])
    else:
        if nf == 0 or nc < nf or nc % nf:
            raise DataError(f"{caps_file} has {nc} caption lines and {names_file} has {nf} filename lines: "
                            "cannot align them (want equal counts or a whole number of captions per image)")
        per = nc // nf
        if per != 5:
            problems.append(Problem(str(caps_file), "",
                                    f"{nc} caption lines for {nf} filenames in {names_file.name}: "
                                    f"not 5 per image, read as {per} per image"))
        groups = [[n, k * per, per] for k, n in enumerate(names)]
    records, src = [], str(caps_file)
    for fn, first, count in groups:
        kept = []
        for line in range(first, first + count):
            text = caps[line].strip()
            if text:
                kept.append(text)
            else:
                problems.append(Problem(src, f"line {line + 1} ({fn})", "blank caption"))
        records.append(Record(fn, kept, split, label_from_filename(fn)))
    return records


def load_precomp(path, images=None, splits=None) -> CaptionDataset:
    """AMFMN precomp folder: <split>_caps.txt with <split>_filename.txt (one name per image or per caption).

    `path` may also be one *_caps*.txt file (that split only). `splits` keeps only the named splits; by default
    the standard ones (train/val/test) when present, since folds such as Sydney's `train_verify` repeat `train`.
    """
    path = Path(path)
    if path.is_file():
        m = _CAPS.match(path.name)
        if not m:
            raise DataError(f"{path}: not a <split>_caps.txt file")
        found = {m.group(1) + m.group(2): (path, path.parent / f"{m.group(1)}_filename{m.group(2)}.txt")}
        folder = path.parent
    elif path.is_dir():
        found, folder = precomp_splits(path), path
        if not found:
            raise DataError(f"{path}: no <split>_caps.txt files")
    else:
        raise DataError(f"{path}: no such file or folder")
    if splits is None and any(s in found for s in ("train", "val", "test")):
        splits = [s for s in found if s in ("train", "val", "test")]
    if splits is not None:
        wanted = [splits] if isinstance(splits, str) else list(splits)
        missing = [s for s in wanted if s not in found]
        if missing:
            raise DataError(f"{path}: no split {', '.join(missing)} (have {', '.join(found)})")
        found = {s: found[s] for s in found if s in wanted}
    records, origin, problems = [], [], []
    for split, (caps_file, names_file) in found.items():
        recs = _load_precomp_split(split, caps_file, names_file, problems)
        records += recs
        origin += [str(caps_file)] * len(recs)
    _check_counts(records, origin, problems)
    return CaptionDataset(records, images, folder.name, problems, str(path))


# ---- image folder + CSV -----------------------------------------------------------------------

def _folder_csv(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if (path / "captions.csv").is_file():
        return path / "captions.csv"
    found = sorted(path.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    raise DataError(f"{path}: no captions.csv" + (f" (and {len(found)} other CSV files; name one)" if found else ""))


def load_folder(path, images=None) -> CaptionDataset:
    """Images plus a CSV with columns image (or filename) and caption, optionally split and label.

    Several rows per image are grouped, in order of first appearance. `images` defaults to the CSV's folder.
    """
    csv_path = _folder_csv(Path(path))
    src = str(csv_path)
    try:
        f = open(csv_path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{csv_path}: cannot read ({e.strerror or e})") from e
    problems: list[Problem] = []
    by_name: dict[str, Record] = {}
    with f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{csv_path}: empty file, want a header with image and caption columns")
        cols = {h.strip().lower(): k for k, h in enumerate(header)}
        img_col = cols.get("image", cols.get("filename"))
        if img_col is None:
            raise DataError(f"{csv_path}: line 1: missing column 'image' (or 'filename'); header is {header}")
        cap_col = cols.get("caption")
        if cap_col is None:
            raise DataError(f"{csv_path}: line 1: missing column 'caption'; header is {header}")
        split_col, label_col = cols.get("split"), cols.get("label")

        def cell(row, k):
            return row[k].strip() if k is not None and k < len(row) else ""

        try:
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue
                fn = cell(row, img_col)
                if not fn:
                    problems.append(Problem(src, f"line {line}", "empty image cell, row skipped"))
                    continue
                split = cell(row, split_col) or "train"
                label = cell(row, label_col) or None
                rec = by_name.get(fn)
                if rec is None:
                    rec = by_name[fn] = Record(fn, [], split, label if label_col is not None
                                               else label_from_filename(fn))
                elif split != rec.split:
                    problems.append(Problem(src, f"line {line} ({fn})",
                                            f"split {split!r} differs from the image's first row ({rec.split!r})"))
                cap = row[cap_col] if cap_col < len(row) else ""
                if not cap.strip():
                    problems.append(Problem(src, f"line {line} ({fn})", "empty caption"))
                    continue
                rec.captions.append(cap)
        except csv.Error as e:
            raise DataError(f"{csv_path}: line {reader.line_num}: {e}") from e
    records = list(by_name.values())
    _check_counts(records, [src] * len(records), problems)
    root = Path(images) if images is not None else csv_path.parent
    return CaptionDataset(records, root, csv_path.parent.name, problems, src)


# ---- format detection and dispatch ------------------------------------------------------------

def _folder_formats(path: Path) -> list[str]:
    """Formats whose files are present in a folder, in detection order."""
    out = []
    if any(path.glob("data_*_*.json")) or any(_looks_coco(p) for p in path.glob("*.json")):
        out.append("coco")
    if precomp_splits(path):
        out.append("precomp")
    if any(_looks_karpathy(p) for p in path.glob("*.json")):
        out.append("karpathy")
    if any(path.glob("*.csv")):
        out.append("folder")
    return out


def detect_format(path) -> str:
    """'karpathy', 'coco', 'precomp' or 'folder', from what the file or folder holds."""
    path = Path(path)
    if path.is_dir():
        found = _folder_formats(path)
        if not found:
            raise DataError(f"{path}: no caption files found (Karpathy/COCO JSON, *_caps.txt, or a CSV)")
        return found[0]
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "folder"
    if suffix == ".txt" and _CAPS.match(path.name):
        return "precomp"
    if suffix == ".json":
        if _looks_coco(path):
            return "coco"
        return "karpathy"   # includes files too broken to tell: the loader then says what is wrong
    raise DataError(f"{path}: cannot tell the caption format from this file")


_LOADERS = {"karpathy": load_karpathy, "coco": load_coco, "precomp": load_precomp, "folder": load_folder}


def load(path, fmt: str | None = None, images=None, labels=None, **kw) -> CaptionDataset:
    """Loads `path` as `fmt` (a format or alias: rsitmd, rsicd, sydney, ucm, amfmn, csv), detecting if None.

    Scene labels are then filled by attach_labels (`labels`, the Land Use layout, or a labels.csv found).
    """
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
    else:
        key = fmt.lower()
        if key not in _ALIASES:
            raise DataError(f"unknown format {fmt!r} (known: {', '.join(sorted(_ALIASES))})")
        fmt = _ALIASES[key]
        if key in _FOLDER_PREFERENCE:   # a benchmark's name: its files may be in any of the formats
            if path.is_dir():
                present = _folder_formats(path)
                fmt = next((f for f in _FOLDER_PREFERENCE[key] if f in present), fmt)
            elif path.is_file():
                fmt = detect_format(path)
    ds = _LOADERS[fmt](path, images=images, **kw)
    if labels is not None or ds.image_root is not None or fmt in ("coco", "precomp"):
        attach_labels(ds, labels)
    return ds


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
    return load_karpathy(out / "dataset_synthetic.json", images=out / "images")


def open_dataset(spec: str, images=None, labels=None) -> CaptionDataset:
    """'FMT:PATH' (e.g. 'rsitmd:/data/dataset_RSITMD.json', 'ucm:/x/ucm_captions'), a bare path (detected), or a
    downloadable dataset's name ('ucm': fetched into the cache and verified, rsdemo.data.sources).

    `images`: the image folder (files found by name, else by stem, or in the UC Merced Land Use layout);
    `labels`: a CSV of id,class (default: labels.csv in the image folder or beside the annotations).
    """
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return open_synthetic(spec)
    if ":" not in spec and not os.path.exists(spec):
        if spec.lower() in SOURCES:   # a dataset by name ('ucm'): downloaded and verified once
            path, fmt, images = fetched(spec, images)
            return load(path, fmt, images, labels)
    head, sep, rest = spec.partition(":")
    if sep and head.lower() in _ALIASES:
        return load(rest, head, images, labels)
    if sep and len(head) > 1 and not os.path.exists(spec):
        raise DataError(f"{spec}: unknown format {head!r} (known: {', '.join(sorted(_ALIASES))})")
    return load(spec, None, images, labels)


NAMES = {"synthetic": "synthetic world", "ucm": "UCM-captions", "rsitmd": "RSITMD", "rsicd": "RSICD",
         "sydney": "Sydney-captions", "folder": "an image folder"}


def dataset_name(data: str | None) -> str:
    """The imagery a dataset spec names, as people write it ("UCM-captions"); never a path."""
    d = domain(data)
    return NAMES.get(d, Path(d).stem or d)


def domain(data: str | None) -> str:
    """The kind of imagery a dataset spec names: 'synthetic', 'ucm', 'rsitmd', ... (its format word), 'folder'
    for none; what checkpoints are ranked by for a gallery (rsdemo.checkpoint.rank)."""
    if not data:
        return "folder"
    head = str(data).split(":", 1)[0].lower()
    return head if head in ("synthetic", "ucm", "rsitmd", "rsicd", "sydney") else Path(str(data)).name.lower()
