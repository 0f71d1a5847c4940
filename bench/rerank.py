"""Stage-2 rerank cost against the shortlist size K, and what caching the models' image state costs at build time.

Rerank: for every registered model whose score is not the embedding dot product (model.separable is False),
Retriever.search_text with rerank=K from the image state cached in the index (float16, rsdemo.models.base
score_state: no image backbone runs) and from the pixels (an index without state: the K shortlisted images are
reloaded and model.score runs the backbone on them, what rsdemo did before the state was cached), against stage 1
alone (rerank=False) on the same index. The three arms run interleaved, query by query, in the same run, so a
machine shared with other jobs moves them alike: read the ratios, not the absolute times.
Build: Retriever.build with the state (float16) and without it (state=None: one encode_image pass, the build of
before), interleaved, for every registered model; sizes on disk and the state's bytes per image.
Gallery: the synthetic world's images (PNG, 256 px).
Usage: python bench/rerank.py [--models NAME ...] [--gallery 300] [--ks 10 25 50 100 200] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import gallery_paths, model_for, queries  # noqa: E402
from bench.report import write_section  # noqa: E402


def _ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and "chunks" not in f.parts)


def build_costs(m, paths, builds: int) -> dict:
    """Build without and with the state, interleaved: median seconds of each, bytes on disk (chunks aside)."""
    from rsdemo.index import Retriever

    times = {None: [], "float16": []}
    size, per = {}, 0
    for _ in range(builds):
        for state in (None, "float16"):
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                r = Retriever.build(m, paths, out=d, progress=False, resume=False, state=state)
                times[state].append(time.perf_counter() - t)
                size[state] = _size(Path(d))
                if state:
                    per = r.manifest["state"]["bytes_per_image"]
    return {"plain_s": statistics.median(times[None]), "state_s": statistics.median(times["float16"]),
            "plain_bytes": size[None], "state_bytes": size["float16"], "bytes_per_image": per}


def run(models=None, gallery=300, ks=(10, 25, 50, 100, 200), n_queries=5, repeats=3, threads=None, builds=1,
        build_images=None, log=print) -> tuple[str, dict]:
    import torch

    from rsdemo import list_models
    from rsdemo.index import Retriever

    torch.set_num_threads(threads or os.cpu_count())
    paths = gallery_paths(gallery)
    qs = queries(n_queries)
    ks = [k for k in ks if k <= len(paths)]
    res, built = {}, {}
    for name in models or list_models():
        t0 = time.perf_counter()
        m, how = model_for(name)
        built[name] = {"weights": how, **build_costs(m, paths[:build_images or len(paths)], builds)}
        if m.separable:
            log(f"  rerank {name} (build only): {time.perf_counter() - t0:.0f} s")
            continue
        r = Retriever.build(m, paths, progress=False)                     # float16 state
        px = Retriever(m, r.embeddings, r.index, {**r.manifest, "state": None})  # same index, no state: pixels
        for arm in (r, px):
            arm.search_text(qs[0], k=10, rerank=max(ks))  # warm-up (the pixel arm keeps decoded images, as before)
        arms = {"stage1": [], **{(a, k): [] for k in ks for a in ("state", "pixels")}}
        # the median over every (query, repeat) run, arms interleaved: a stall from another process hits all alike
        for _ in range(repeats):
            for q in qs:
                for k in ks:
                    arms["stage1"].append(_ms(lambda: r.search_text(q, k=10, rerank=False)))
                    arms[("state", k)].append(_ms(lambda: r.search_text(q, k=10, rerank=k)))
                    arms[("pixels", k)].append(_ms(lambda: px.search_text(q, k=10, rerank=k)))
        med = {a: statistics.median(v) for a, v in arms.items()}
        res[name] = {"weights": how, "stage1_ms": med["stage1"],
                     "state": {k: med[("state", k)] for k in ks}, "pixels": {k: med[("pixels", k)] for k in ks}}
        log(f"  rerank {name}: {time.perf_counter() - t0:.0f} s")
    n_runs = len(qs) * repeats
    lines = ["## 4. Rerank cost against the shortlist size K", "",
             f"Non-separable models (their score is not the embedding dot product, so search_text reranks a stage-1 "
             f"shortlist of K with the model's full score). Two arms: **state** reads the model's image state "
             f"cached in the index (float16; `score_state`, no image backbone runs) and **pixels** reloads the K "
             f"images and runs `model.score` on them (an index built with `state=None`, what every query cost "
             f"before the state was cached). Gallery: {len(paths)} synthetic-world images; top 10 returned; each "
             f"figure the median of {n_runs} runs ({len(qs)} caption queries x {repeats}), torch threads "
             f"{threads or os.cpu_count()}. Baseline: stage 1 alone (`rerank=False`: encode the text, search the "
             f"flat index) on the same index. Stage 1, state and pixels run interleaved query by query in one run "
             f"(the machine may be shared: the ratios are the figures to read). The rsdemo default is "
             f"K = {Retriever.rerank_k}. Separable models (no stage 2): "
             f"{', '.join(n for n in built if n not in res) or 'none'}.", "",
             "| model | weights | stage 1 ms | arm | " + " | ".join(f"K={k} ms (x stage 1)" for k in ks) +
             " | ms per reranked image | pixels / state at K=" + str(ks[-1]) + " |",
             "|---|---|---|---|" + "---|" * len(ks) + "---|---|"]
    for name, row in res.items():
        s1 = row["stage1_ms"]
        for arm in ("state", "pixels"):
            t = row[arm]
            cells = " | ".join(f"{t[k]:.1f} ({t[k] / s1:.1f}x)" for k in ks)
            per = (t[ks[-1]] - t[ks[0]]) / (ks[-1] - ks[0]) if len(ks) > 1 else float("nan")
            row[f"{arm}_per_image_ms"] = per
            speed = f"{row['pixels'][ks[-1]] / row['state'][ks[-1]]:.0f}x" if arm == "state" else ""
            lines.append(f"| {name} | {row['weights']} | {s1:.1f} | {arm} | {cells} | {per:.3f} | {speed} |")
    lines += ["", "ms per reranked image: slope between the smallest and largest K (state: score_state on the "
              "cached rows; pixels: image loading, preprocessing and model.score).", "",
              "### Index build with and without the image state", "",
              f"Retriever.build over the same {build_images or len(paths)} images with the image state (float16, the "
              f"default) and "
              f"without it (`state=None`: encode_image only, the build before the state was cached), interleaved, "
              f"median of {builds} build(s) each; size: the index folder (manifest, embeddings, FAISS index, "
              f"state files; the resume chunks aside). State bytes per image: what the index keeps per gallery image "
              f"for stage 2 and the model's own maps (float32 doubles it).", "",
              "| model | state bytes per image (float16) | build without state s | with state s (x) | "
              "size without MB | with state MB (x) |", "|---|---|---|---|---|---|"]
    for name, b in built.items():
        lines.append(f"| {name} | {b['bytes_per_image']:,} | {b['plain_s']:.1f} | {b['state_s']:.1f} "
                     f"({b['state_s'] / b['plain_s']:.2f}x) | {b['plain_bytes'] / 2**20:.2f} | "
                     f"{b['state_bytes'] / 2**20:.2f} ({b['state_bytes'] / b['plain_bytes']:.1f}x) |")
    lines.append("")
    return "\n".join(lines), {"models": res, "build": built, "ks": ks, "gallery": len(paths)}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    ap.add_argument("--gallery", type=int, default=300)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--builds", type=int, default=1, help="builds per arm (with / without state)")
    ap.add_argument("--build-images", type=int, default=None, help="images per build (default: the gallery)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    body, _ = run(a.models, a.gallery, a.ks, a.queries, a.repeats, builds=a.builds, build_images=a.build_images)
    print(body)
    if not a.no_write:
        write_section("rerank", body)
    return body


if __name__ == "__main__":
    main()
