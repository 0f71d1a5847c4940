"""Synthetic-world generation speed on one core, against a floor measured in the same run.

The floor does only what every generator must: make a 256x256 RGB array and its mask and, for export, write both
as PNG. The ratio says how much the scene logic (planning, drawing, captions) costs above that.
Usage: python bench/synthetic_speed.py [--n 1000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import machine, median_time, write_section  # noqa: E402
from rsdemo.data import synthetic  # noqa: E402


def floor(n: int, out: Path | None) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
        ids = np.zeros((256, 256), np.uint8)
        if out is not None:
            Image.fromarray(img).save(out / f"{i}.png", compress_level=1)
            Image.fromarray(ids).save(out / f"{i}_m.png", compress_level=1)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen = median_time(lambda: sum(1 for _ in synthetic.generate(a.n, seed=0)), a.repeats)
        base_gen = median_time(lambda: floor(a.n, None), a.repeats)
        exp = median_time(lambda: synthetic.export(tmp / "w", a.n, seed=0), a.repeats)
        (tmp / "f").mkdir()
        base_exp = median_time(lambda: floor(a.n, tmp / "f"), a.repeats)
    rows.append(("generate in memory", a.n / gen, a.n / base_gen))
    rows.append(("export (PNG images + masks + JSON)", a.n / exp, a.n / base_exp))
    lines = [f"## Synthetic world generation", "",
             f"`python bench/synthetic_speed.py --n {a.n}`: {a.n} images, median of {a.repeats} runs, one process. "
             f"Machine: {machine()}.", "",
             "| task | rsdemo images/s | floor images/s | floor / rsdemo |", "|---|---|---|---|"]
    for name, ours, base in rows:
        lines.append(f"| {name} | {ours:.0f} | {base:.0f} | {base / ours:.1f}x |")
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        write_section("synthetic", body)
    return body


if __name__ == "__main__":
    main()
