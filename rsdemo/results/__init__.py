"""Measured results as data: one JSON file per section of docs/RESULTS.md, and the one generator of that doc.

Each section (demo, faithfulness, ablation, ucm, probe, pretraining) is written by the script that measures it
(scripts/results.py, rsdemo eval-explain --write, bench/ablate.py, scripts/ucm.py, bench/probe.py) as
rsdemo/results/NAME.json: rows of plain numbers, the table's columns as format templates over those rows, and the
prose around the table. `write_doc()` renders every section into docs/RESULTS.md; the demo page's Models tab reads
the same rows (`rows(name)`), so a chart and the doc cannot disagree and nothing parses markdown at run time.
The files ship inside the package (package data), so an installed copy has them too.

Section file: {"title": str, "before": [markdown blocks], "columns": [[header, template or [templates]]],
"rows": [{field: value}], "after": [markdown blocks]}. A cell is the first template whose fields the row has
(None counts as missing), formatted with str.format; none -> an empty cell.
`python -m rsdemo.results` regenerates the doc from the files (no measuring).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

from ..files import write_text

DIR = Path(__file__).resolve().parent
ORDER = ["demo", "faithfulness", "grounding", "grounding_objects", "ablation", "ucm", "ucm_grounding", "probe",
         "pretraining"]   # the doc's order; others follow
TITLE = "# Results\n\nEvery number here is written by a script.\n"


def _repo_doc() -> Path | None:
    """docs/RESULTS.md of the checkout this package sits in; None for an installed copy (no doc to write)."""
    root = DIR.parents[1]
    return root / "docs" / "RESULTS.md" if (root / "pyproject.toml").is_file() and (root / "docs").is_dir() else None


DOC = _repo_doc()


def names(folder: Path = DIR) -> list[str]:
    """Sections with a file, in the doc's order."""
    have = {p.stem for p in Path(folder).glob("*.json")}
    return [n for n in ORDER if n in have] + sorted(have - set(ORDER))


def load(name: str, folder: Path = DIR) -> dict:
    """One section's data; {} when nothing was measured yet (the page then shows no chart)."""
    path = Path(folder) / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}


def rows(name: str, folder: Path = DIR) -> list[dict]:
    return load(name, folder).get("rows", [])


def save(name: str, section: dict, doc: Path | None | bool = True, folder: Path = DIR) -> Path:
    """Stores a section's data in `folder` (default: the package's) and regenerates the doc from that folder
    (doc=True: the checkout's docs/RESULTS.md; a path; or None/False: leave the doc alone). Returns the file."""
    for key in ("title", "columns", "rows"):
        if key not in section:
            raise ValueError(f"results section {name!r} lacks {key!r}")
    path = Path(folder) / f"{name}.json"
    write_text(path, json.dumps(section, indent=1, ensure_ascii=False) + "\n")
    if doc:
        write_doc(DOC if doc is True else Path(doc), folder)
    return path


def _fields(template: str) -> list[str]:
    return [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f]


def cell(templates, row: dict) -> str:
    for t in [templates] if isinstance(templates, str) else templates:
        if all(row.get(f) is not None for f in _fields(t)):
            return t.format(**row)
    return ""


def table(section: dict) -> str:
    cols = section["columns"]
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(t, r) for _, t in cols) + " |" for r in section["rows"]]
    return "\n".join(lines)


def markdown(section: dict) -> str:
    """One section as the doc shows it: title, prose before, table, prose after."""
    return "\n\n".join([f"## {section['title']}", *section.get("before", []), table(section),
                        *section.get("after", [])])


def document(folder: Path = DIR) -> str:
    blocks = [f"<!-- {n} -->\n{markdown(load(n, folder)).rstrip()}\n<!-- /{n} -->" for n in names(folder)]
    return TITLE + "\n" + "\n\n".join(blocks) + "\n"


def write_doc(doc: Path | None = None, folder: Path = DIR) -> Path | None:
    """docs/RESULTS.md from every section file (the one place that writes it)."""
    doc = doc or DOC
    if doc is None:
        return None
    write_text(Path(doc), document(folder))
    return Path(doc)


# ---- how well each map points (the page's map menu, its first map, and the default model read these) ----------
REAL, SYNTHETIC = "real photos", "synthetic scenes"
# where -> (section, field, chance level in %): the grid pointing game on 2x2 mosaics of UCM photos (the peak on
# the tile of the scene named: chance is one tile in four) and the pointing game on the synthetic scenes' object
# masks (the peak inside the object named; the random map's rate is the floor, measured per model)
POINTING = {REAL: ("grounding", "hit", 25.0), SYNTHETIC: ("faithfulness", "pointing", None)}


def own_map(name: str) -> bool:
    """A model's own map a page can show (not a baseline, a reference map, or a phrase average)."""
    return not name.startswith(("baseline", "oracle")) and name not in ("random", "centre") \
        and not name.endswith("_phrase")


def pointing(model: str, imagery: str | None = None, folder: Path = DIR) -> tuple[dict[str, float], str | None]:
    """How often each of `model`'s maps points at the thing named, in %, and where that was measured (REAL or
    SYNTHETIC); ({}, None) when it was not. imagery: a domain word ("synthetic", "ucm", ...): that imagery's
    measurement first (synthetic scenes for "synthetic", real photos for anything else), else the other one.
    Read from the section files on every call, so a re-measured model shows its new figures."""
    order = [SYNTHETIC, REAL] if imagery == "synthetic" else [REAL, SYNTHETIC]
    for where in order:
        section, field, _ = POINTING[where]
        got = {r["map"]: float(r[field]) for r in rows(section, folder)
               if r.get("model") == model and r.get("map") and r.get(field) is not None}
        if got:
            return got, where
    return {}, None


def best_own_pointing(imagery: str | None = None, folder: Path = DIR) -> dict[str, float]:
    """model -> its best own map's pointing % on that imagery's measurement (as `pointing`, one read per section)."""
    out = {}
    order = [SYNTHETIC, REAL] if imagery == "synthetic" else [REAL, SYNTHETIC]
    for where in reversed(order):   # the preferred measurement last, so it wins where a model has both
        section, field, _ = POINTING[where]
        best: dict[str, float] = {}
        for r in rows(section, folder):
            if r.get("model") and r.get("map") and own_map(r["map"]) and r.get(field) is not None:
                best[r["model"]] = max(best.get(r["model"], float("-inf")), float(r[field]))
        out.update(best)
    return out
