"""`python -m bench --toy`: every benchmark at toy size, into a temporary doc, so none of them can rot.

CI never runs the real benchmarks (20 minutes); this checks that each section is produced with numbers, that a
ratio to its baseline is there, that sections written by other scripts survive, and that the plots are written.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_at_toy_size(tmp_path):
    doc = tmp_path / "BENCH.md"
    doc.write_text("# Benchmarks\n\n<!-- other-script -->\n## Kept\nfrom another script\n<!-- /other-script -->\n")
    r = subprocess.run([sys.executable, "-m", "bench", "--toy", "--doc", str(doc)], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    text = doc.read_text()
    assert "failed in the last run" not in text
    marks = re.findall(r"<!-- ([\w-]+) -->", text)
    assert marks[:9] == ["machine", "encode", "search", "rerank", "explain", "train", "e2e", "synthetic", "plots"]
    assert "<!-- other-script -->\n## Kept\nfrom another script\n<!-- /other-script -->" in text

    def section(name):
        return re.search(rf"<!-- {name} -->(.*?)<!-- /{name} -->", text, re.S).group(1)

    # each section has a table row with numbers and a ratio to its baseline
    assert re.search(r"\| amfmn-slim \| 128 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+x \|", section("encode"))
    assert re.search(r"\| flat \(exact\) \| .*\| 1\.0x \|", section("search"))
    assert re.search(r"\| ivf-pq nprobe=32 \+ exact refine", section("search"))
    assert re.search(r"\| amfmn-slim \| checkpoint \| [\d.]+ \| state \| [\d.]+ \([\d.]+x\)", section("rerank"))
    assert re.search(r"\| amfmn-slim \| checkpoint \| [\d.]+ \| pixels \| [\d.]+ \([\d.]+x\)", section("rerank"))
    assert re.search(r"\| clip-tiny \| [\d,]+ \| [\d.]+ \| [\d.]+ \([\d.]+x\)", section("rerank"))  # build costs
    assert "clip-tiny" in section("rerank")  # named as separable: no stage 2
    assert re.search(r"\| clip-tiny \| checkpoint \| patch_sim \| [\d.]+ \| [\d.]+ \([\d.]+x\)", section("explain"))
    assert re.search(r"\| amfmn-slim \| cpu \| 128 \| [\d.]+ \| [\d.]+ \| [\d.]+x \|", section("train"))
    assert re.search(r"\| 2, gradio_client \| \d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+x \|", section("e2e")), section("e2e")
    assert re.search(r"\| 1, Gradio's HTTP API .*\| [\d.]+x \|", section("e2e"))
    assert re.search(r"no work .* \*\*[\d.]+ ms\*\* through gradio_client and \*\*[\d.]+ ms\*\*", section("e2e"))
    machine = section("machine")
    assert "cores" in machine and "faiss" in machine and "gradio" in machine and "Load average" in machine
    assert "rsdemo's search layer over raw FAISS" in machine
    for name in ("bench_search_latency", "bench_model_throughput"):
        assert (tmp_path / f"{name}.html").stat().st_size > 1000
        assert f"]({name}.html)" in section("plots")


def test_a_checkpoint_trained_at_another_size_gets_its_own_encode_row(tmp_path, monkeypatch):
    """bench/encode.py measures each registered config, and also a committed demo checkpoint at the input size it
    was trained at (the size the page runs it at) when that differs from its config's."""
    import json

    import rsdemo.checkpoint
    from bench.encode import checkpoint_sizes

    (tmp_path / "amfmn-slim.json").write_text(json.dumps({"config": {"image_size": 192}}))   # another size
    (tmp_path / "ccnet-slim.json").write_text(json.dumps({"config": {"image_size": 128}}))   # its config's
    monkeypatch.setattr(rsdemo.checkpoint, "CHECKPOINT_DIR", tmp_path)
    assert checkpoint_sizes(["amfmn-slim", "ccnet-slim", "dove-slim"]) == {"amfmn-slim @ 192 px": 192}
