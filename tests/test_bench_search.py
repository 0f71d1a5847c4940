"""bench/search.py at toy size: it runs, HNSW at the Retriever's default efSearch finds the exact top 10, and the
compressed/partitioned indexes appear where they are meant to."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _table(lines, start, row_prefix, col):
    header = next(line for line in lines[start:] if line.startswith("| index |"))
    i = [c.strip() for c in header.split("|")].index(col)
    row = next(line for line in lines[start:] if line.startswith(row_prefix))
    return float(row.split("|")[i].replace(",", "")), row


def test_bench_search_runs_at_toy_size():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "search.py"), "--sizes", "2000", "--queries", "50",
                        "--no-write"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("### 2,000 vectors, dim 256")
    recall, row = _table(lines, start, "| hnsw efSearch=128 ", "recall@10")
    assert recall >= 0.95, row
    assert not any(line.startswith(("| ivf", "| fp16")) for line in lines[start:]), "IVF/fp16 below 10k"
    assert any(line.startswith("| flat (exact) |") and line.count("|") == 7 for line in lines[start:]), \
        "no rsdemo-vs-raw overhead row for flat"


def test_ivf_pq_refine_recovers_recall():
    """At 10k, IVF-PQ alone loses recall to its approximate distances; the exact refine wins most of it back."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "search.py"), "--sizes", "10000", "--queries", "10",
                        "--batch", "100", "--overhead-queries", "5", "--repeats", "1", "--pq-min", "10000",
                        "--hnsw-max", "1000", "--no-write"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("### 10,000 vectors, dim 256")
    plain, _ = _table(lines, start, "| ivf-pq nprobe=32 |", "recall@10")
    refined, row = _table(lines, start, "| ivf-pq nprobe=32 + exact refine", "recall@10")
    assert refined > plain and refined >= 0.9, row
    hnsw = [line for line in lines[start:] if line.startswith("| hnsw")]
    assert hnsw and all(line.startswith("| hnsw M=16 efC=40 ") for line in hnsw), "above --hnsw-max: the cheap graph"
