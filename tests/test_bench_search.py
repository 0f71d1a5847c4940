"""bench/search.py at toy size: it runs, and HNSW at the Retriever's default efSearch finds the exact top 10."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_search_runs_at_toy_size():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "search.py"), "--sizes", "2000", "--queries", "50",
                        "--no-write"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    start = lines.index("### 2,000 vectors")
    header = next(line for line in lines[start:] if line.startswith("| index |"))
    col = [c.strip() for c in header.split("|")].index("recall@10")
    row = next(line for line in lines[start:] if line.startswith("| hnsw efSearch=128 "))
    assert float(row.split("|")[col]) >= 0.95, row
