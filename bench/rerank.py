"""Stage-2 rerank cost against the shortlist size K, for every registered model whose score is not the embedding
dot product (model.separable is False): Retriever.search_text with rerank=K against stage 1 alone (rerank=False)
on the same index, measured in the same run.

Stage 2 reloads the K shortlisted images from disk and runs model.score on them, so its cost grows linearly with
K; stage 1 is one text encoding plus one FAISS search. Gallery: the synthetic world's images (PNG, 256 px).
Usage: python bench/rerank.py [--models NAME ...] [--gallery 300] [--ks 10 25 50 100 200] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import gallery_paths, model_for, queries  # noqa: E402
from bench.report import write_section  # noqa: E402


def runs_ms(fn, qs, repeats: int) -> float:
    """Median ms over `repeats` runs of fn(q) for each query q."""
    out = []
    for _ in range(repeats):
        for q in qs:
            t = time.perf_counter()
            fn(q)
            out.append(time.perf_counter() - t)
    return statistics.median(out) * 1e3


def run(models=None, gallery=300, ks=(10, 25, 50, 100, 200), n_queries=5, repeats=3, threads=None,
        log=print) -> tuple[str, dict]:
    import torch

    from rsdemo import list_models
    from rsdemo.index import Retriever

    torch.set_num_threads(threads or os.cpu_count())
    paths = gallery_paths(gallery)
    qs = queries(n_queries)
    ks = [k for k in ks if k <= len(paths)]
    res, skipped = {}, []
    for name in models or list_models():
        t0 = time.perf_counter()
        m, how = model_for(name)
        if m.separable:
            skipped.append(name)
            continue
        r = Retriever.build(m, paths, progress=False)
        r.search_text(qs[0], k=10, rerank=ks[0])  # warm-up
        # the median over every (query, repeat) run: one run stalled by another process must not move the figure
        stage1 = runs_ms(lambda q: r.search_text(q, k=10, rerank=False), qs, repeats)
        row = {"weights": how, "stage1_ms": stage1, "k": {}}
        for k in ks:
            row["k"][k] = runs_ms(lambda q, k=k: r.search_text(q, k=10, rerank=k), qs, repeats)
        res[name] = row
        log(f"  rerank {name}: {time.perf_counter() - t0:.0f} s")
    lines = ["## 4. Rerank cost against the shortlist size K", "",
             f"Non-separable models (their score is not the embedding dot product, so search_text reranks a stage-1 "
             f"shortlist of K with model.score). Gallery: {len(paths)} synthetic-world images; top 10 returned; "
             f"each figure the median of {len(qs) * repeats} runs ({len(qs)} caption queries x {repeats}), torch "
             f"threads "
             f"{threads or os.cpu_count()}. Baseline: stage 1 alone (`rerank=False`: encode the text, search the "
             f"flat index) on the same index. The rsdemo default is K = {Retriever.rerank_k}. "
             f"Separable models (no stage 2): {', '.join(skipped) or 'none'}.", "",
             "| model | weights | stage 1 ms | " + " | ".join(f"K={k} ms (x stage 1)" for k in ks) +
             " | ms per reranked image |",
             "|---|---|---|" + "---|" * len(ks) + "---|"]
    for name, row in res.items():
        cells = " | ".join(f"{row['k'][k]:.1f} ({row['k'][k] / row['stage1_ms']:.0f}x)" for k in ks)
        per = (row["k"][ks[-1]] - row["k"][ks[0]]) / (ks[-1] - ks[0]) if len(ks) > 1 else float("nan")
        row["per_image_ms"] = per
        lines.append(f"| {name} | {row['weights']} | {row['stage1_ms']:.1f} | {cells} | {per:.2f} |")
    lines += ["", "ms per reranked image: slope between the smallest and largest K (image loading, preprocessing "
              "and model.score).", ""]
    return "\n".join(lines), {"models": res, "ks": ks, "gallery": len(paths)}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    ap.add_argument("--gallery", type=int, default=300)
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 25, 50, 100, 200])
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    body, _ = run(a.models, a.gallery, a.ks, a.queries, a.repeats)
    print(body)
    if not a.no_write:
        write_section("rerank", body)
    return body


if __name__ == "__main__":
    main()
