"""Gallery search speed: exact (IndexFlatIP) against HNSW (IndexHNSWFlat), and rsdemo's own search layer against
raw faiss on the same index.

Synthetic, clustered, L2-normalised float32 embeddings: --clusters gaussian centres on the unit sphere plus
gaussian noise, so every query has real neighbours; queries are drawn the same way (fresh noise, so none is in
the gallery). HNSW uses the Retriever's defaults (M=32, efConstruction=200, efSearch=128), plus efSearch 64 and
256, set on the same index (efSearch is a query-time setting). Recall@10 is the fraction of the exact top 10
that HNSW returns, over the batch queries.
Usage: python bench/search.py [--sizes 1000 10000 100000] [--dim 256] [--queries 200] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import machine, median_time, write_section  # noqa: E402
from rsdemo.index import Retriever  # noqa: E402

K = 10
M, EF_CONSTRUCTION, EF_SEARCH = 32, 200, 128  # the Retriever's defaults
EFS = (64, 128, 256)


def vectors(n: int, centres: np.ndarray, noise: float, rng) -> np.ndarray:
    """n unit vectors around randomly chosen centres."""
    d = centres.shape[1]
    x = centres[rng.integers(0, len(centres), n)]
    x += noise / np.sqrt(d) * rng.standard_normal((n, d), dtype=np.float32)  # noise of norm ~ `noise`
    faiss.normalize_L2(x)
    return x


def data(n: int, nq: int, dim: int, clusters: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    faiss.normalize_L2(centres)
    return vectors(n, centres, noise, rng), vectors(nq, centres, noise, rng)


def build(kind: str, x: np.ndarray, threads: int, search_threads: int):
    """-> (index, build seconds). Flat: median of 3 (it is only a copy); HNSW: one build."""
    def make():
        if kind == "flat":
            index = faiss.IndexFlatIP(x.shape[1])
        else:
            index = faiss.IndexHNSWFlat(x.shape[1], M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = EF_CONSTRUCTION
            index.hnsw.efSearch = EF_SEARCH
        index.add(x)
        return index

    faiss.omp_set_num_threads(threads)
    try:
        if kind == "flat":
            return make(), median_time(make, 3)
        t = time.perf_counter()
        index = make()
        return index, time.perf_counter() - t
    finally:
        faiss.omp_set_num_threads(search_threads)


def latency(fn, qs: np.ndarray, repeats: int) -> np.ndarray:
    """Seconds per single query: median of `repeats` calls for each query."""
    for q in qs[:10]:  # warm-up
        fn(q)
    return np.array([median_time(lambda: fn(q), repeats) for q in qs])


def overhead(r: Retriever, qs: np.ndarray, repeats: int):
    """Median seconds per query for raw index.search and Retriever.search_vector, interleaved on each query."""
    raw, ours = [], []
    for i in range(len(qs)):
        q = qs[i:i + 1]
        a, b = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            r.index.search(q, K)
            a.append(time.perf_counter() - t)
            t = time.perf_counter()
            r.search_vector(q, K)
            b.append(time.perf_counter() - t)
        raw.append(statistics.median(a))
        ours.append(statistics.median(b))
    return float(np.median(raw)), float(np.median(ours))


def run_size(n: int, a) -> str:
    nq = max(a.queries, a.batch)
    x, q = data(n, nq, a.dim, a.clusters, a.noise)
    singles, batch = q[:a.queries], q[:a.batch]
    rows, over = [], []
    base = None
    for kind in ("flat", "hnsw"):
        index, secs = build(kind, x, a.build_threads, a.threads)
        mem = len(faiss.serialize_index(index))
        r = Retriever(None, x, index, {"paths": [f"{i}.png" for i in range(n)]})  # no model: vectors in
        for ef in (None,) if kind == "flat" else EFS:
            if ef is not None:
                index.hnsw.efSearch = ef
            t = latency(lambda v: index.search(v[None], K), singles, a.repeats)
            qps = len(batch) / median_time(lambda: index.search(batch, K), a.repeats)
            ids = index.search(batch, K)[1]
            if base is None:
                base = {"ids": ids, "p50": np.median(t), "build": secs}
            recall = np.mean([len(np.intersect1d(i, g)) / K for i, g in zip(ids, base["ids"])])
            name = "flat (exact)" if ef is None else f"hnsw efSearch={ef}" + (" (default)" if ef == EF_SEARCH else "")
            rows.append(f"| {name} | {secs:.3g} | {mem / 2**20:.1f} | {np.median(t) * 1e3:.3f} | "
                        f"{np.percentile(t, 95) * 1e3:.3f} | {qps:,.0f} | {recall:.3f} | "
                        f"{base['p50'] / np.median(t):.1f}x | {secs / base['build']:,.0f}x |")
            if ef in (None, EF_SEARCH):
                raw, ours = overhead(r, singles, a.repeats)
                over.append(f"| {name} | {raw * 1e3:.3f} | {ours * 1e3:.3f} | {(ours - raw) / raw * 100:+.1f}% |")
    return "\n".join([
        f"### {n:,} vectors", "",
        "| index | build s | memory MiB | p50 ms | p95 ms | batch queries/s | recall@10 | p50 speedup vs flat "
        "| build cost vs flat |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "| rsdemo overhead | raw faiss p50 ms | Retriever.search_vector p50 ms | overhead |",
        "|---|---|---|---|", *over, ""])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="gallery sizes")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200, help="single queries timed one by one")
    ap.add_argument("--batch", type=int, default=1000, help="queries in the batched run (and for recall)")
    ap.add_argument("--repeats", type=int, default=3, help="timings per measurement; the median is kept")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.5, help="noise norm around a unit centre")
    ap.add_argument("--threads", type=int, default=1, help="faiss (OpenMP) threads for queries")
    ap.add_argument("--build-threads", type=int, default=None, help="threads for building (default: --threads)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    args = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(args)
    a.build_threads = a.build_threads or a.threads
    faiss.omp_set_num_threads(a.threads)
    lines = [
        "## Gallery search: exact vs HNSW", "",
        f"`{' '.join(['python bench/search.py', *args])}`", "",
        f"Synthetic L2-normalised float32 embeddings, dim {a.dim}: {a.clusters} gaussian cluster centres, noise "
        f"norm {a.noise}; queries drawn the same way, none in the gallery. Top {K}. HNSW M={M}, "
        f"efConstruction={EF_CONSTRUCTION} (the Retriever's defaults), one index, efSearch set per row. "
        f"Queries on {a.threads} faiss thread(s), builds on {a.build_threads}. Latency: {a.queries} queries one "
        f"by one, each the median of {a.repeats}; p50/p95 over queries. Batch: {a.batch} queries in one call, "
        f"median of {a.repeats}. Recall@10: share of the exact top {K} found, over the batch queries. Build: flat "
        f"median of 3, HNSW one build. Memory: faiss.serialize_index size. rsdemo overhead: "
        f"`Retriever.search_vector` (copy, normalise, search, result dicts) against `index.search` on the same "
        f"index, interleaved per query.", "",
        f"Machine: {machine()}, faiss {faiss.__version__}.", ""]
    for n in a.sizes:
        lines.append(run_size(n, a))
    body = "\n".join(lines)
    print(body)
    if not a.no_write:
        write_section("search", body)
    return body


if __name__ == "__main__":
    main()
