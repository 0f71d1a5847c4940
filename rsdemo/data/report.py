"""Data report for `rsdemo data-report`: counts, loader problems, and leakage between splits.

Leakage is what inflates retrieval scores without anyone noticing: the same file, the same (normalised)
caption text or the same pixels in train and in test. Each is counted per split pair, with a few examples.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .dataset import CaptionDataset, ImageResolver, normalise_caption
from .images import open_image

EXAMPLES = 5          # examples kept per finding
LISTED_PROBLEMS = 20  # problem lines printed before "... and N more"


def _split_order(ds: CaptionDataset) -> list[str]:
    """Splits with train first, then val, test, then the rest in order of appearance."""
    seen = list(ds.split_counts())
    rank = {"train": 0, "val": 1, "test": 2}
    return sorted(seen, key=lambda s: (rank.get(s, 3), seen.index(s)))


def _pairs(splits: list[str]):
    """(reference, other) for every pair, reference earlier in the order (train is everyone's reference)."""
    return [(a, b) for i, a in enumerate(splits) for b in splits[i + 1:]]


def _problems(ds: CaptionDataset) -> dict:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in ds.problems:
        groups[(p.file, p.message)].append(p.where)
    return {
        "total": len(ds.problems),
        "groups": [{"file": f, "message": m, "count": len(w), "where": w[:EXAMPLES]}
                   for (f, m), w in sorted(groups.items(), key=lambda kv: -len(kv[1]))],
        "all": [str(p) for p in ds.problems],
    }


def _duplicate_names(ds: CaptionDataset, splits: list[str]) -> dict:
    per_split: dict[str, Counter] = {s: Counter() for s in splits}
    for r in ds.records:
        per_split[r.split][r.filename] += 1
    within = {s: sorted(n for n, c in cnt.items() if c > 1) for s, cnt in per_split.items()}
    across = []
    for a, b in _pairs(splits):
        shared = sorted(set(per_split[a]) & set(per_split[b]))
        if shared:
            across.append({"splits": [a, b], "count": len(shared), "examples": shared[:EXAMPLES]})
    return {"within": {s: {"count": len(v), "examples": v[:EXAMPLES]} for s, v in within.items() if v},
            "across": across}


def _caption_leakage(ds: CaptionDataset, splits: list[str]) -> list[dict]:
    norm = {s: set() for s in splits}
    for r in ds.records:
        norm[r.split].update(normalise_caption(c) for c in r.captions)
    out = []
    for a, b in _pairs(splits):
        shared = norm[b] & norm[a]
        out.append({"split": b, "against": a, "shared": len(shared), "distinct": len(norm[b]),
                    "examples": sorted(shared)[:EXAMPLES]})
    return out


def _repeats(ds: CaptionDataset, splits: list[str]) -> dict:
    """Per split: images (with 2+ captions) whose normalised captions are not all distinct / all identical."""
    out = {s: {"images": 0, "not_all_distinct": 0, "all_identical": 0, "examples": []} for s in splits}
    for r in ds.records:
        row = out[r.split]
        row["images"] += 1
        if len(r.captions) < 2:
            continue
        n = len({normalise_caption(c) for c in r.captions})
        if n < len(r.captions):
            row["not_all_distinct"] += 1
            if len(row["examples"]) < EXAMPLES:
                row["examples"].append(r.filename)
        if n == 1:
            row["all_identical"] += 1
    return out


def _pixel_hash(path) -> str:
    im = open_image(path)
    a = np.asarray(im)
    h = hashlib.blake2b(a.tobytes(), digest_size=16)
    h.update(repr(a.shape).encode())   # same bytes in another shape is another image
    return h.hexdigest()


def _image_check(ds: CaptionDataset, splits: list[str]) -> dict:
    """Decodes every image once: missing / unreadable files, and duplicates by RGB pixel content."""
    missing, unreadable, paths = [], [], []
    # a fresh one, so stem_matches counts this pass only (quiet: the report prints the count itself)
    resolver = ImageResolver(ds.image_root, aliases=ds.image_aliases, quiet=True)
    for r in ds.records:
        p = resolver.find(r.filename)
        if p is None:
            missing.append(r.filename)
        paths.append(p)

    def work(p):
        try:
            return _pixel_hash(p), None
        except Exception as e:   # one bad file must not stop the report
            return None, f"{type(e).__name__}: {e}"

    todo = [i for i, p in enumerate(paths) if p is not None]
    # Pillow's decoders release the GIL, so threads use all cores without pickling images around
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as ex:
        results = list(ex.map(work, [paths[i] for i in todo]))
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, (h, err) in zip(todo, results):
        if err is not None:
            unreadable.append({"filename": ds.records[i].filename, "path": str(paths[i]), "error": err})
        else:
            by_hash[h].append(i)
    within: dict[str, list[list[str]]] = defaultdict(list)
    across: list[dict] = []
    for idx in by_hash.values():
        if len(idx) < 2:
            continue
        group = defaultdict(list)
        for i in idx:
            group[ds.records[i].split].append(ds.records[i].filename)
        for s, names in group.items():
            if len(names) > 1:
                within[s].append(names)
        if len(group) > 1:
            across.append({s: group[s] for s in splits if s in group})
    return {
        "checked": len(todo) - len(unreadable),
        "by_stem": resolver.stem_matches,
        "missing": {"count": len(missing), "examples": missing[:EXAMPLES * 4]},
        "unreadable": unreadable,
        "duplicates_within": {s: within[s] for s in splits if s in within},
        "duplicates_across": across,
    }


def data_report(ds: CaptionDataset, check_images: bool = True) -> dict:
    """Counts, problems and leakage of a dataset as a JSON-friendly dict (see format_report)."""
    splits = _split_order(ds)
    per_split = {s: {"images": 0, "captions": 0} for s in splits}
    hist: Counter = Counter()
    labels: Counter = Counter()
    for r in ds.records:
        per_split[r.split]["images"] += 1
        per_split[r.split]["captions"] += len(r.captions)
        hist[len(r.captions)] += 1
        if r.label is not None:
            labels[r.label] += 1
    rep = {
        "name": ds.name,
        "source": ds.source,
        "images": len(ds),
        "captions": ds.num_captions,
        "splits": per_split,
        "caption_counts": dict(sorted(hist.items())),
        "labels": dict(sorted(labels.items())),
        "unlabelled": len(ds) - sum(labels.values()),
        "problems": _problems(ds),
        "duplicate_filenames": _duplicate_names(ds, splits),
        "caption_leakage": _caption_leakage(ds, splits),
        "repeated_captions": _repeats(ds, splits),
        "image_root": str(ds.image_root) if ds.image_root is not None else None,
        "image_check": None,
    }
    if check_images and ds.has_images():
        rep["image_check"] = _image_check(ds, splits)
    return rep


def format_report(rep: dict) -> str:
    """The report as plain text."""
    out = [f"dataset {rep['name']}  ({rep['source']})",
           f"  {rep['images']} images, {rep['captions']} captions"]
    for s, c in rep["splits"].items():
        out.append(f"  {s:>12}: {c['images']:6d} images {c['captions']:7d} captions")
    out.append("captions per image: " + ", ".join(f"{k}: {v}" for k, v in rep["caption_counts"].items()))
    labels = rep["labels"]
    if labels:
        top = sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{k} {v}" for k, v in top[:12]) + (" ..." if len(top) > 12 else "")
        out.append(f"labels: {len(labels)} ({shown}); unlabelled images: {rep['unlabelled']}")
    else:
        out.append("labels: none")

    pr = rep["problems"]
    out.append(f"\nproblems: {pr['total']}")
    for g in pr["groups"]:
        out.append(f"  {g['count']:5d} x {g['file']}: {g['message']}")
    for line in pr["all"][:LISTED_PROBLEMS]:
        out.append(f"    {line}")
    if len(pr["all"]) > LISTED_PROBLEMS:
        out.append(f"    ... and {len(pr['all']) - LISTED_PROBLEMS} more")

    dn = rep["duplicate_filenames"]
    out.append("\nduplicate filenames:")
    if not dn["within"] and not dn["across"]:
        out.append("  none")
    for s, d in dn["within"].items():
        out.append(f"  within {s}: {d['count']} (e.g. {', '.join(d['examples'])})")
    for d in dn["across"]:
        out.append(f"  in both {d['splits'][0]} and {d['splits'][1]}: {d['count']} (e.g. {', '.join(d['examples'])})")

    out.append("\nsame caption text across splits (distinct normalised captions):")
    if not rep["caption_leakage"]:
        out.append("  (one split only)")
    for d in rep["caption_leakage"]:
        ex = "; ".join(repr(e) for e in d["examples"][:3])
        out.append(f"  {d['split']} vs {d['against']}: {d['shared']} of {d['distinct']} {d['split']} captions "
                   f"also in {d['against']}" + (f" (e.g. {ex})" if d["shared"] else ""))

    out.append("\nimages whose captions repeat (normalised): not all distinct / all identical")
    for s, d in rep["repeated_captions"].items():
        ex = f" (e.g. {', '.join(d['examples'][:3])})" if d["examples"] else ""
        out.append(f"  {s:>12}: {d['not_all_distinct']} / {d['all_identical']} of {d['images']}{ex}")

    ic = rep["image_check"]
    out.append("")
    if ic is None:
        out.append("images: not checked" + ("" if rep["image_root"] else " (no image folder given)"))
    else:
        out.append(f"images under {rep['image_root']}: {ic['checked']} decoded, {ic['by_stem']} found by stem, "
                   f"{ic['missing']['count']} missing, {len(ic['unreadable'])} unreadable")
        if ic["missing"]["count"]:
            out.append(f"  missing e.g. {', '.join(ic['missing']['examples'][:10])}")
        for u in ic["unreadable"][:LISTED_PROBLEMS]:
            out.append(f"  unreadable {u['path']}: {u['error']}")
        if len(ic["unreadable"]) > LISTED_PROBLEMS:
            out.append(f"  ... and {len(ic['unreadable']) - LISTED_PROBLEMS} more unreadable")
        out.append("  identical pixels within a split:" + ("" if ic["duplicates_within"] else " none"))
        for s, groups in ic["duplicates_within"].items():
            shown = "; ".join(" = ".join(g) for g in groups[:EXAMPLES])
            out.append(f"    {s}: {len(groups)} group(s): {shown}" + (" ..." if len(groups) > EXAMPLES else ""))
        out.append("  identical pixels across splits:" + ("" if ic["duplicates_across"] else " none"))
        for g in ic["duplicates_across"][:LISTED_PROBLEMS]:
            out.append("    " + " = ".join(f"{s}:{','.join(n)}" for s, n in g.items()))
        if len(ic["duplicates_across"]) > LISTED_PROBLEMS:
            out.append(f"    ... and {len(ic['duplicates_across']) - LISTED_PROBLEMS} more")
    flags = report_flags(rep)
    out.append("\nflags:" + ("" if flags else " none"))
    out += [f"  ! {f}" for f in flags]
    return "\n".join(out)


def report_flags(rep: dict) -> list[str]:
    """The findings that change what a score means: duplicate pixels or names, captions shared across splits."""
    out = []
    ic = rep.get("image_check")
    if ic:
        for s, groups in ic["duplicates_within"].items():
            out.append(f"pixel-identical images within {s}: " + "; ".join(" = ".join(g) for g in groups[:EXAMPLES]))
        if ic["duplicates_across"]:
            out.append(f"pixel-identical images across splits: {len(ic['duplicates_across'])} group(s)")
        if ic["missing"]["count"] or ic["unreadable"]:
            out.append(f"{ic['missing']['count']} images missing, {len(ic['unreadable'])} unreadable")
    for d in rep["duplicate_filenames"]["across"]:
        out.append(f"{d['count']} file names in both {d['splits'][0]} and {d['splits'][1]}")
    for d in rep["caption_leakage"]:
        if d["shared"]:
            out.append(f"identical captions across splits: {d['shared']} of {d['distinct']} distinct {d['split']} "
                       f"captions also in {d['against']}")
    return out
