"""The committed demo checkpoints: small, loadable by name, and their cards' numbers reproduce (rsdemo.drift): exactly
on the kernels that wrote them, and within the interval that the measured cross-CPU score drift allows on any other
kernels, which test_cards_reproduce_on_other_kernels emulates in subprocesses (MKL_CBWR=COMPATIBLE is what MKL does
on an AMD CPU, AVX2 / AVX512 what it does on an Intel one; see docs/REPRODUCIBILITY.md)."""
import json

import numpy as np
import pytest
import torch

from rsdemo import drift
from rsdemo.data.formats import open_dataset
from rsdemo.evaluate import model_scores
from rsdemo.checkpoint import CHECKPOINT_DIR, load_model
from rsdemo.models.factory import create_model
from rsdemo.models.registry import list_models

CARDS = sorted(CHECKPOINT_DIR.glob("*.json"))


def test_demo_checkpoints_exist():
    names = {p.stem for p in CARDS}
    assert {"amfmn-slim", "clip-tiny"} <= names, names


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    """scores(name) -> {"full", "embed", "owner"}: a card's checkpoint, loaded by name, scored on its test split in
    this process (one feature cache for the module, which the emulating subprocesses share all but the features of)."""
    cache = tmp_path_factory.getbasetemp() / "cache"
    done = {}

    def get(name):
        if name not in done:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("RSDEMO_CACHE", str(cache))
                card = json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())
                test = open_dataset(card["data"]).split("test")
                full, embed = model_scores(load_model(name), test)
                done[name] = {"full": full, "embed": embed, "owner": test.captions()[1]}
        return done[name]

    get.cache = cache
    return get


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_card_metrics_reproduce(card_path, scores):
    card = json.loads(card_path.read_text())
    ck = card_path.with_suffix(".safetensors")
    assert ck.stat().st_size <= 15 * 2**20
    assert card["model"] in list_models() and card["model"] == card_path.stem
    s = scores(card_path.stem)
    problems = drift.check(card, "test", s["full"], s["embed"], s["owner"])
    assert not problems, f"{card_path.stem} on {drift.kernel_setting()}: " + "; ".join(problems)
    assert card["metrics"]["test"]["mr"] > 30  # far above random (see docs/RESULTS.md)


# MKL_CBWR=AVX512 only where the CPU has AVX-512 (MKL refuses a branch the CPU cannot run)
EMULATED = [s for s in ("mkl-compatible", "mkl-avx2", "mkl-avx512") if s in drift.settings_here()]


@pytest.mark.parametrize("setting", EMULATED)
def test_cards_reproduce_on_other_kernels(setting, scores, tmp_path, monkeypatch):
    """Every card, scored in a subprocess under another CPU's kernel choice (drift.SETTINGS): its scores stay within
    drift.tolerance of this process's, and its metrics within the interval that tolerance allows (exact when the
    setting is the card's own)."""
    for p in CARDS:
        scores(p.stem)          # this process's scores first (and the exported data the subprocess shares)
    monkeypatch.setenv("RSDEMO_CACHE", str(scores.cache))
    got = drift.run_setting(setting, tmp_path / "scores.npz", ucm=False)
    assert got["kernels"]["env"] == drift.SETTINGS[setting]
    problems = []
    for p in CARDS:
        card, s, here = json.loads(p.read_text()), got[p.stem], scores(p.stem)
        for what in ("full", "embed"):
            if here[what] is not None:
                d, eps = float(np.max(np.abs(s[what] - here[what]))), drift.tolerance(here[what])
                if d > eps:
                    problems.append(f"{p.stem} {what}: scores moved {d:.3g} > tolerance {eps:.3g}")
        problems += [f"{p.stem}: {m}" for m in drift.check(card, "test", s["full"], s["embed"], s["owner"],
                                                          now=got["kernels"])]
    assert not problems, f"under {setting} {drift.SETTINGS[setting]}:\n" + "\n".join(problems)


def test_backbone_weights_load_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    m = create_model("amfmn", pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(m.backbone.stem[0].weight, ref.conv1.weight)
    assert torch.equal(m.backbone.stages[-1][0].conv1.weight, ref.layer4[0].conv1.weight)
