"""A non-editable install works on its own: `pip install .` into a fresh venv (its other dependencies come from this
machine's site-packages), then, from another folder, `rsdemo models` finds the packaged checkpoints, `rsdemo index`
and `rsdemo search` run on a tiny folder of images, and RSDEMO_CHECKPOINTS points it at another checkpoint folder.
Everything runs from the installed copy (checked), so nothing the package reads may live beside it in the repo."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, env, timeout=600):
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"   # a copy of what the sdist holds, so the build writes nothing into the repo
    src.mkdir()
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    shutil.copytree(ROOT / "rsdemo", src / "rsdemo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env_dir = tmp / "venv"
    # without pip: the venv runs this machine's pip and setuptools (ensurepip's bundled setuptools may be too old
    # to build a wheel), which install into the venv all the same
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)],
                   check=True, timeout=300)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RSDEMO_CHECKPOINTS", "RSDEMO_HF_REPO")}
    env["RSDEMO_CACHE"] = str(tmp / "cache")
    _run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q", src], tmp, env)
    shutil.rmtree(src)   # the installed copy must not need its source
    work = tmp / "elsewhere"
    work.mkdir()
    return {"py": py, "bin": env_dir / "bin", "env": env, "work": work, "dir": env_dir}


def test_installed_copy_is_the_one_imported(venv):
    where = _run([venv["py"], "-c", "import rsdemo, rsdemo.checkpoint as c; print(rsdemo.__file__); "
                  "print(c.CHECKPOINT_DIR)"], venv["work"], venv["env"]).split()
    pkg, ckpts = Path(where[0]).resolve(), Path(where[1]).resolve()
    assert venv["dir"].resolve() in pkg.parents and ROOT not in pkg.parents, pkg
    assert (ckpts / "amfmn-slim.safetensors").is_file() and (ckpts / "ucm" / "amfmn-lite0.json").is_file()
    # every file of the package folder is installed: nothing it reads at run time is left behind in the repo
    # (a data file the package-data globs in pyproject.toml miss shows up here)
    def files(root):
        return {p.relative_to(root).as_posix() for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = files(ROOT / "rsdemo") - files(pkg.parent)
    assert not missing, f"not installed (add them to [tool.setuptools.package-data]): {sorted(missing)[:10]}"


def test_models_lists_the_packaged_checkpoints(venv):
    out = _run([venv["bin"] / "rsdemo", "models"], venv["work"], venv["env"])
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "[checkpoint]" in rows["amfmn-slim"] and "[checkpoint]" in rows["clip-tiny"]
    assert "[checkpoint]" not in rows["amfmn"]       # a registered model without trained weights


def test_index_and_search_a_tiny_folder(venv, tmp_path):
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    rs, work, env = venv["bin"] / "rsdemo", venv["work"], venv["env"]
    _run([rs, "index", "--model", "amfmn-slim", "--images", imgs, "--out", tmp_path / "idx", "--quiet"], work, env)
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert venv["dir"].resolve() in Path(man["checkpoint"]).resolve().parents   # the packaged checkpoint
    hits = json.loads(_run([rs, "search", tmp_path / "idx", "two planes beside the runway", "--k", "3", "--json"],
                           work, env))
    assert len(hits) == 3 and {Path(h["path"]).parent for h in hits} == {imgs.resolve()}


def test_rsdemo_checkpoints_points_elsewhere(venv, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    ck = Path(_run([venv["py"], "-c", "import rsdemo.checkpoint as c; print(c.CHECKPOINT_DIR)"], venv["work"],
                   venv["env"]).strip())
    for suffix in (".safetensors", ".json"):
        shutil.copy(ck / f"dove-slim{suffix}", mine / f"dove-slim{suffix}")
    env = {**venv["env"], "RSDEMO_CHECKPOINTS": str(mine)}
    rows = {ln.split()[0]: ln for ln in _run([venv["bin"] / "rsdemo", "models"], venv["work"], env).splitlines()}
    assert "[checkpoint]" in rows["dove-slim"] and "[checkpoint]" not in rows["amfmn-slim"]
    out = _run([venv["py"], "-c", "from rsdemo.checkpoint import default_model; print(default_model())"],
               venv["work"], env)
    assert out.strip() == "dove-slim"
