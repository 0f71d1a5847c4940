"""Training engine: a tiny end-to-end run, exact resume after SIGKILL mid-epoch, 2-process gloo DDP, CLI eval."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rsdemo.training import TrainArgs, train

TINY = {"embed_dim": 64, "mvsa_dim": 32, "word_dim": 32}
DATA = "synthetic:80:4"


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    """A shared cache, and one thread in this process and in the runs it starts: bitwise comparisons between an
    in-process run and a subprocess hold only when both sum in the same order (earlier tests in a session may
    leave torch with another thread count than a fresh process gets)."""
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


def _args(out, **kw):
    return TrainArgs(model="amfmn-slim", data=DATA, out=str(out), epochs=3, batch_size=16, lr=2e-3,
                     save_every=4, overrides=dict(TINY), progress=False, **kw)


def _cmd(out, *extra):
    args = [sys.executable, "-m", "rsdemo", "train", "--model", "amfmn-slim", "--data", DATA, "--out", str(out),
            "--epochs", "3", "--batch-size", "16", "--lr", "2e-3", "--save-every", "4", "--quiet"]
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def test_train_writes_carded_checkpoints(tmp_path):
    card = train(_args(tmp_path / "run"))
    run = tmp_path / "run"
    for f in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.state.pt"):
        assert (run / f).is_file(), f
    best = json.loads((run / "best.json").read_text())
    assert best["model"] == "amfmn-slim" and best["seed"] == 0 and best["data"] == DATA
    assert set(best["metrics"]) == {"val", "test"} and 0 <= best["metrics"]["test"]["mr"] <= 100
    assert best["command"].startswith("rsdemo train --model amfmn-slim")
    assert card["steps"] == 3 * (card["train_pairs"] // 16)
    # `rsdemo eval --checkpoint` reproduces the card's numbers: exactly, as the card was written by this run on these
    # kernels (committed cards are checked across CPUs by rsdemo.drift: tests/test_checkpoints.py)
    r = subprocess.run([sys.executable, "-m", "rsdemo", "eval", "--checkpoint", str(run / "best.safetensors"),
                        "--split", "test", "--json"], capture_output=True, text=True, env=os.environ)
    assert r.returncode == 0, r.stderr
    assert abs(json.loads(r.stdout)["mr"] - best["metrics"]["test"]["mr"]) < 1e-6


def test_seed_deterministic_on_cpu(tmp_path):
    a = train(_args(tmp_path / "a", eval_split="test"))
    b = train(_args(tmp_path / "b", eval_split="test"))
    assert a["metrics"] == b["metrics"]


def test_sigkill_mid_epoch_then_resume_matches(tmp_path):
    ref = train(_args(tmp_path / "ref"))
    out = tmp_path / "killed"
    p = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ)
    state = out / "last.state.pt"
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and p.poll() is None:
        if state.is_file():
            try:
                st = torch.load(state, weights_only=True)
            except Exception:  # being replaced right now; atomic rename means the next read is whole
                continue
            if st["step"] > 0:  # a mid-epoch checkpoint exists: kill without warning
                p.send_signal(signal.SIGKILL)
                killed_at = (st["epoch"], st["step"])
                break
        time.sleep(0.05)
    p.wait()
    assert killed_at is not None, "training finished before a mid-epoch checkpoint could be killed"
    assert not (out / "last.safetensors").exists()
    card = train(_args(out, resume=True))
    assert card["metrics"] == ref["metrics"]
    a = torch.load(tmp_path / "ref" / "last.state.pt", weights_only=True)["model"]
    b = torch.load(out / "last.state.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_two_process_gloo_matches_single(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = train(_args(tmp_path / "single", eval_split="test"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "rsdemo"] + _cmd(tmp_path / "ddp", "--eval-split", "test")[3:]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "last.json").read_text())
    assert ddp["world_size"] == 2 and ddp["steps"] == single["steps"]
    # each rank sees half of every batch (its own in-batch negatives), so results agree within noise, not bitwise
    mr_s, mr_d = single["metrics"]["test"]["mr"], ddp["metrics"]["test"]["mr"]
    assert abs(mr_s - mr_d) < 15, (mr_s, mr_d)


def test_ablation_bench_runs_at_toy_size(tmp_path):
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "ablate.py"), "--models", "amfmn-slim", "--epochs", "1",
                        "--n", "80", "--seeds", "1", "--jobs", "2", "--out", str(tmp_path), "--no-write"],
                       capture_output=True, text=True, env=os.environ, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = r.stdout
    for variant in ("full", "-mvsa", "-vgt", "-dynamic_margin"):
        assert f"| amfmn-slim | {variant} |" in table, table
