"""The `rsdemo` command line, run as users run it (a subprocess), and the README <-> CI wiring."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rsdemo", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "syn"
    r = run("make-synthetic", "--out", str(out), "--n", "60", "--seed", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "wrote 60 images" in r.stdout and "images/s" in r.stdout
    return out


def test_help_explains_every_command():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("make-synthetic", "data-report", "eval"):
        assert cmd in r.stdout
        sub = run(cmd, "--help")
        assert sub.returncode == 0 and len(sub.stdout) > 300, cmd


def test_console_script_installed():
    exe = shutil.which("rsdemo")
    assert exe, "the `rsdemo` console script is missing: install with `python -m pip install -r requirements-dev.txt`"
    assert subprocess.run([exe, "--help"], capture_output=True).returncode == 0


def test_data_report_on_export(world):
    r = run("data-report", f"rsitmd:{world / 'dataset_synthetic.json'}", "--images", str(world / "images"))
    assert r.returncode == 0, r.stderr
    assert "60" in r.stdout
    j = run("data-report", str(world / "dataset_synthetic.json"), "--images", str(world / "images"), "--json")
    rep = json.loads(j.stdout)
    assert sum(rep["images_per_split"].values()) == 60 if "images_per_split" in rep else True


def test_eval_baselines_and_scores(world, tmp_path):
    data = f"rsitmd:{world / 'dataset_synthetic.json'}"
    r = run("eval", "--data", data, "--split", "all", "--baseline", "keywords", "--json")
    assert r.returncode == 0, r.stderr
    kw = json.loads(r.stdout)
    assert kw["n_images"] == 60 and kw["n_captions"] == 300 and 0 <= kw["mr"] <= 100
    # a perfect score matrix gives 100 everywhere
    owner = np.repeat(np.arange(60), 5)
    perfect = (owner[None, :] == np.arange(60)[:, None]).astype(np.float32)
    np.save(tmp_path / "s.npy", perfect)
    r = run("eval", "--data", data, "--split", "all", "--scores", str(tmp_path / "s.npy"))
    assert r.returncode == 0, r.stderr
    assert "mR 100.00" in r.stdout


@pytest.mark.parametrize("args,msg", [
    (("data-report", "rsitmd:/nonexistent/dataset.json"), "nonexistent"),
    (("data-report", "nosuchformat:/tmp"), "unknown format"),
    (("eval", "--data", "synthetic:abc"), "synthetic"),
])
def test_bad_input_is_one_line_not_a_traceback(args, msg):
    r = run(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr


def test_eval_rejects_wrong_shape(world, tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), np.float32))
    r = run("eval", "--data", f"rsitmd:{world / 'dataset_synthetic.json'}", "--split", "all",
            "--scores", str(tmp_path / "bad.npy"))
    assert r.returncode == 2 and "shape" in r.stderr and "Traceback" not in r.stderr


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    cmds = [l for l in blocks[0].splitlines() if l and not l.startswith("#")]
    assert len(cmds) == 2, cmds  # exactly two set-up commands
    assert "requirements.txt" in cmds[0] and "app.py" in cmds[0]
    assert "requirements-dev.txt" in cmds[1] and "pytest" in cmds[1]
    assert cmds[1] in (ROOT / ".ci" / "run").read_text()


def test_bench_synthetic_runs_at_toy_size():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "synthetic_speed.py"), "--n", "5", "--repeats", "1",
                        "--no-write"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| generate in memory |" in r.stdout
