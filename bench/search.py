"""Gallery search speed and its cost as the gallery grows: exact (IndexFlatIP), fp16 (IndexScalarQuantizer),
HNSW (IndexHNSWFlat), IVF-flat and IVF-PQ, each against the exact top 10; and rsdemo's own search layer
(Retriever.search_vector) against raw faiss on the same index.

Synthetic, clustered, L2-normalised float32 embeddings: --clusters gaussian centres on the unit sphere plus
gaussian noise, so every query has real neighbours; queries are drawn the same way (fresh noise, so none is in
the gallery). HNSW uses the Retriever's defaults (M=32, efConstruction=200, efSearch=128), plus efSearch 64 and
256, set on the same index (efSearch is a query-time setting). IVF: nlist = min(1024, 4 sqrt(n)), k-means (10
iterations) on at most 64 gallery vectors a list, nprobe per row; IVF-PQ: dim/8 sub-quantizers of 8 bits (dim/8
bytes a vector; codebooks trained the same way), alone and with an exact refine of a 10x shortlist. Recall@10 is
the share of the exact top 10 returned, over the batch queries.
Usage: python bench/search.py [--sizes 1000 10000 100000 1000000] [--dims 256] [--queries 200] [--threads 1]
"""
from __future__ import annotations

import argparse
import math
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
# above --hnsw-max: a cheaper graph (faiss's own defaults), so the largest size still gets a measured HNSW row
M_FAST, EF_CONSTRUCTION_FAST = 16, 40
EFS = (64, 128, 256)
NPROBES = (8, 32)
REFINE = 10


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


def kinds(n: int, hnsw_max: int, pq_min: int = 100_000) -> list[str]:
    """The index kinds worth measuring at n: compressed and partitioned indexes only where they can pay off
    (below 10k an exact scan is already tens of microseconds)."""
    out = ["flat"]
    if n >= 10_000:
        out += ["fp16", "ivf-flat"]
    out.append("hnsw" if n <= hnsw_max else "hnsw-fast")
    if n >= pq_min:
        out.append("ivf-pq")
    return out


def nlist(n: int) -> int:
    return int(min(1024, round(4 * math.sqrt(n))))


def make(kind: str, d: int, n: int):
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "fp16":
        return faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, ip)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, M, ip)
        index.hnsw.efConstruction = EF_CONSTRUCTION
        index.hnsw.efSearch = EF_SEARCH
        return index
    if kind == "hnsw-fast":
        index = faiss.IndexHNSWFlat(d, M_FAST, ip)
        index.hnsw.efConstruction = EF_CONSTRUCTION_FAST
        index.hnsw.efSearch = EF_SEARCH
        return index
    quant = faiss.IndexFlatIP(d)
    if kind == "ivf-flat":
        index = faiss.IndexIVFFlat(quant, d, nlist(n), ip)
    else:
        index = faiss.IndexIVFPQ(quant, d, nlist(n), d // 8, 8, ip)
        index.pq.cp.niter = 10  # the same budget for the 256-centroid codebook of each sub-vector
        index.pq.cp.max_points_per_centroid = 64
    # k-means on at most 64 points a list, 10 iterations: training cost stays seconds at 1M (faiss's defaults,
    # 256 points and 25 iterations, take minutes on 2 cores for a few hundredths of recall)
    index.cp.max_points_per_centroid = 64
    index.cp.niter = 10
    return index  # faiss's python wrapper keeps `quant` alive with the index


def build(kind: str, x: np.ndarray, threads: int, search_threads: int):
    """-> (index, build seconds: train + add). Flat: median of 3 (it is only a copy); the others: one build."""
    def once():
        index = make(kind, x.shape[1], len(x))
        if not index.is_trained:
            index.train(x)
        index.add(x)
        return index

    faiss.omp_set_num_threads(threads)
    try:
        if kind == "flat":
            return once(), median_time(once, 3)
        t = time.perf_counter()
        index = once()
        return index, time.perf_counter() - t
    finally:
        faiss.omp_set_num_threads(search_threads)


def settings(kind: str):
    """(label, setter) for each query-time setting measured, the default one marked."""
    if kind.startswith("hnsw"):
        return [(f"efSearch={ef}" + (" (default)" if ef == EF_SEARCH else ""),
                 lambda index, ef=ef: setattr(index.hnsw, "efSearch", ef)) for ef in EFS]
    if kind.startswith("ivf"):
        out = [(f"nprobe={p}", lambda index, p=p: setattr(index, "nprobe", p)) for p in NPROBES]
        if kind == "ivf-pq":  # PQ distances are approximate: rescore a 10x shortlist with the exact vectors
            out.append((f"nprobe={NPROBES[-1]} + exact refine of {REFINE}x", "refine"))
        return out
    return [("", None)]


def latency(fn, qs: np.ndarray, repeats: int) -> np.ndarray:
    """Seconds per single query: median of `repeats` calls for each query."""
    for q in qs[:max(2, min(10, len(qs) // 10))]:  # warm-up
        fn(q)
    return np.array([median_time(lambda: fn(q), repeats) for q in qs])


def overhead(r: Retriever, qs: np.ndarray, repeats: int):
    """Median seconds per query, interleaved on each query: bare index.search; raw faiss doing the same job as the
    layer (normalise a copy of the query for cosine, search, turn ids into the images' paths), which is the
    baseline; and Retriever.search_vector."""
    paths = r.paths

    def direct(q):
        q = q.copy()
        faiss.normalize_L2(q)
        _, ids = r.index.search(q, K)
        return [paths[j] for j in ids[0].tolist()]

    bare, raw, ours = [], [], []
    for q in qs[:2]:  # warm-up
        direct(q[None])
        r.search_vector(q[None], K)
    for i in range(len(qs)):
        q = qs[i:i + 1]
        a, b, c = [], [], []
        for _ in range(repeats):
            t = time.perf_counter()
            r.index.search(q, K)
            c.append(time.perf_counter() - t)
            t = time.perf_counter()
            direct(q)
            a.append(time.perf_counter() - t)
            t = time.perf_counter()
            r.search_vector(q, K)
            b.append(time.perf_counter() - t)
        bare.append(statistics.median(c))
        raw.append(statistics.median(a))
        ours.append(statistics.median(b))
    return float(np.median(bare)), float(np.median(raw)), float(np.median(ours))


def plan(n: int, a):
    """(single queries, batch queries, repeats, overhead queries) at size n: fewer at 1M, where an exact
    query is tens of ms."""
    if n >= a.big:
        return a.big_queries, a.big_batch, 1, max(10, a.big_queries // 2)
    return a.queries, a.batch, a.repeats, a.overhead_queries


def run_size(n: int, dim: int, a, log=print) -> tuple[str, list[dict]]:
    nq_single, nq_batch, repeats, nq_over = plan(n, a)
    x, q = data(n, max(nq_single, nq_batch), dim, a.clusters, a.noise)
    singles, batch = q[:nq_single], q[:nq_batch]
    rows, over, recs = [], [], []
    base = None
    for kind in kinds(n, a.hnsw_max, a.pq_min):
        t0 = time.perf_counter()
        index, secs = build(kind, x, a.build_threads, a.threads)
        mem = len(faiss.serialize_index(index))
        r = Retriever(None, x, index, {"paths": [f"{i}.png" for i in range(n)]})  # no model: vectors in
        for label, setter in settings(kind):
            target = index
            if setter == "refine":  # the float32 vectors (which the Retriever holds anyway) beside the codes
                target = faiss.IndexRefineFlat(index, faiss.swig_ptr(x))
                target.k_factor = REFINE
                mem = mem + x.nbytes
            elif setter is not None:
                setter(index)
            t = latency(lambda v: target.search(v[None], K), singles, repeats)
            got = []
            qps = len(batch) / median_time(lambda: got.append(target.search(batch, K)[1]), repeats)
            ids = got[-1]
            if base is None:
                base = {"ids": ids, "p50": np.median(t), "build": secs}
            recall = np.mean([len(np.intersect1d(i, g)) / K for i, g in zip(ids, base["ids"])])
            name = ("flat (exact)" if kind == "flat" else
                    f"hnsw M={M_FAST} efC={EF_CONSTRUCTION_FAST} {label}" if kind == "hnsw-fast" else
                    f"{kind} {label}".strip())
            rec = {"n": n, "dim": dim, "index": name, "kind": kind, "build_s": secs, "memory_mib": mem / 2**20,
                   "p50_ms": float(np.median(t)) * 1e3, "p95_ms": float(np.percentile(t, 95)) * 1e3, "qps": qps,
                   "recall": float(recall), "speedup": float(base["p50"] / np.median(t))}
            rows.append(f"| {name} | {secs:.3g} | {mem / 2**20:.1f} | {rec['p50_ms']:.3f} | {rec['p95_ms']:.3f} | "
                        f"{qps:,.0f} | {recall:.3f} | {rec['speedup']:.1f}x | {secs / base['build']:,.0f}x |")
            # rsdemo's layer on each kind, at its default (or first) setting
            if label == "" or "default" in label or (kind.startswith("ivf") and label == f"nprobe={NPROBES[-1]}"):
                bare, raw, ours = overhead(r, singles[:nq_over], repeats)
                rec.update(raw_ms=raw * 1e3, rsdemo_ms=ours * 1e3, overhead=(ours - raw) / raw,
                           bare_ms=bare * 1e3)
                over.append(f"| {name} | {bare * 1e3:.3f} | {raw * 1e3:.3f} | {ours * 1e3:.3f} | "
                            f"{(ours - raw) * 1e6:+.1f} | {(ours - raw) / raw * 100:+.1f}% |")
            recs.append(rec)
        log(f"  search n={n:,} dim={dim} {kind}: {time.perf_counter() - t0:.0f} s")
        del r, index
    note = (f"Reduced counts at this size: {nq_single} single queries (one timing each), batch of {nq_batch}, "
            f"overhead over {nq_over} queries.\n\n" if n >= a.big else "")
    head = [f"### {n:,} vectors, dim {dim}", ""] + ([note.strip(), ""] if note else [])
    return "\n".join(head + [
        "| index | build s | memory MiB | p50 ms | p95 ms | batch queries/s | recall@10 | p50 speedup vs flat "
        "| build cost vs flat |",
        "|---|---|---|---|---|---|---|---|---|", *rows, "",
        "| rsdemo overhead | bare index.search p50 ms | raw faiss, same job p50 ms | Retriever.search_vector p50 ms "
        "| added us | overhead |",
        "|---|---|---|---|---|---|", *over, ""]), recs


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000], help="gallery sizes")
    ap.add_argument("--dims", type=int, nargs="+", default=[256],
                    help="embedding dims: the first gets every size, the others sizes up to --small-max")
    ap.add_argument("--small-max", type=int, default=10000, help="largest size for the extra dims")
    ap.add_argument("--queries", type=int, default=200, help="single queries timed one by one")
    ap.add_argument("--batch", type=int, default=1000, help="queries in the batched run (and for recall)")
    ap.add_argument("--overhead-queries", type=int, default=100, help="queries for the rsdemo-vs-raw timing")
    ap.add_argument("--repeats", type=int, default=3, help="timings per measurement; the median is kept")
    ap.add_argument("--big", type=int, default=1000000, help="from this size on, reduced query counts")
    ap.add_argument("--big-queries", type=int, default=30)
    ap.add_argument("--big-batch", type=int, default=100)
    ap.add_argument("--hnsw-max", type=int, default=100000,
                    help="largest size with HNSW (its build at the Retriever's settings grows ~n log n)")
    ap.add_argument("--pq-min", type=int, default=100000, help="smallest size with IVF-PQ")
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.5, help="noise norm around a unit centre")
    ap.add_argument("--threads", type=int, default=1, help="faiss (OpenMP) threads for queries")
    ap.add_argument("--build-threads", type=int, default=None, help="threads for building (default: --threads)")
    ap.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    return ap


def run(args: list[str], log=print) -> tuple[str, list[dict]]:
    a = parser().parse_args(args)
    a.build_threads = a.build_threads or a.threads
    faiss.omp_set_num_threads(a.threads)
    hnsw_note = (f" Above {a.hnsw_max:,} HNSW is built with M={M_FAST}, efConstruction={EF_CONSTRUCTION_FAST} "
                 f"(faiss's defaults): its build with the Retriever's settings grows faster than linearly (see the "
                 f"build column) and at 1M alone would exceed this run's time budget." if max(a.sizes) > a.hnsw_max
                 else "")
    lines = [
        "## 3. Gallery search: exact, fp16, HNSW, IVF", "",
        f"`{' '.join(['python bench/search.py', *args])}`", "",
        f"Synthetic L2-normalised float32 embeddings: {a.clusters} gaussian cluster centres, noise norm {a.noise}; "
        f"queries drawn the same way, none in the gallery. Top {K}. Dim {a.dims[0]} (the embedding size of "
        f"the demo models) at every size; "
        + (f"the other model dims ({', '.join(map(str, a.dims[1:]))}) up to {a.small_max:,}. " if a.dims[1:] else "")
        + f"HNSW M={M}, efConstruction={EF_CONSTRUCTION} (the Retriever's defaults), one index, efSearch set per row. "
        f"IVF nlist = min(1024, 4 sqrt(n)), k-means of 10 iterations on at most 64 gallery vectors a list; "
        f"IVF-PQ dim/8 bytes a vector (8-d sub-vectors, 8-bit codes), alone and with an exact refine of a "
        f"{REFINE}x shortlist from the float32 vectors (IndexRefineFlat; its memory counts them). fp16: "
        f"IndexScalarQuantizer QT_fp16. fp16 and IVF from 10k, IVF-PQ from {a.pq_min:,} (below, the exact scan "
        f"is already fast and small). The clustered data suit IVF; real embeddings cluster less, so take its "
        f"recall here as an upper bound.{hnsw_note} "
        f"Queries on {a.threads} faiss thread(s), builds on {a.build_threads}. Latency: {a.queries} queries one "
        f"by one, each the median of {a.repeats}; p50/p95 over queries. Batch: {a.batch} queries in one call, "
        f"median of {a.repeats}. Recall@10: share of the exact top {K} found, over the batch queries. Build: "
        f"train + add; flat median of 3, the others one build. Memory: faiss.serialize_index size. rsdemo "
        f"overhead: `Retriever.search_vector` (copy, dimension check, normalise, search, result dicts with rank, "
        f"path, score) against raw faiss doing the same job on the same index (normalise a copy of the query, "
        f"`index.search`, ids to paths), interleaved per query, {a.overhead_queries} queries each the median of "
        f"{a.repeats}; the bare `index.search` time is shown beside it.", "",
        f"Machine: {machine()}, faiss {faiss.__version__}.", ""]
    recs = []
    for i, dim in enumerate(a.dims):
        for n in a.sizes:
            if i and n > a.small_max:
                continue
            body, r = run_size(n, dim, a, log)
            lines.append(body)
            recs += r
    hn = [r for r in recs if r["kind"] == "hnsw" and r["dim"] == a.dims[0]]
    if hn and max(a.sizes) > a.hnsw_max:
        last = max(hn, key=lambda r: r["n"])
        n = max(a.sizes)
        guess = last["build_s"] * n * math.log(n) / (last["n"] * math.log(last["n"]))
        fast = [r for r in recs if r["kind"] == "hnsw-fast" and r["n"] == n]
        lines += [f"HNSW with the Retriever's settings (M={M}, efConstruction={EF_CONSTRUCTION}) was not built at "
                  f"{n:,}: scaling the measured {last['n']:,} build ({last['build_s']:.0f} s) by n log n gives about "
                  f"{guess / 60:.0f} min on the same threads (an extrapolation, not a measurement)"
                  + (f"; the M={M_FAST}, efConstruction={EF_CONSTRUCTION_FAST} graph measured above took "
                     f"{fast[0]['build_s']:.0f} s and reaches recall@10 {max(r['recall'] for r in fast):.3f}."
                     if fast else "."), ""]
    over = [r for r in recs if "overhead" in r]
    if over:
        worst = max(over, key=lambda r: r["overhead"])
        big = [r["overhead"] for r in over if r["n"] >= 10_000]
        lines += ["### rsdemo's layer over raw faiss", "",
                  f"Largest overhead {worst['overhead'] * 100:+.1f}% ({worst['index']}, {worst['n']:,} x "
                  f"{worst['dim']}, {worst['raw_ms'] * 1e3:.0f} us raw). From 10k vectors on the largest is "
                  f"{max(big) * 100:+.1f}%." if big else "", "",
                  "Against raw faiss doing the same job, the layer adds a fixed microsecond or two a query (the "
                  "dimension check and result dicts), whatever the gallery size; against a bare `index.search` "
                  "(which skips normalising the query, so its cosine ranking is not what a caller needs) it adds "
                  "a few microseconds more, which matters only where a search takes tens of microseconds and "
                  "vanishes once the query must also be embedded (milliseconds, section 2).", ""]
    return "\n".join(lines), recs


def main(argv=None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    body, _ = run(args)
    print(body)
    if not parser().parse_args(args).no_write:
        write_section("search", body)
    return body


if __name__ == "__main__":
    main()
