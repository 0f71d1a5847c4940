"""The committed demo checkpoints: small, loadable by name, and their cards' numbers reproduce exactly."""
import json
from pathlib import Path

import pytest
import torch

from rsdemo.data.formats import open_dataset
from rsdemo.evaluate import evaluate_model
from rsdemo.checkpoint import CHECKPOINT_DIR, load_model
from rsdemo.models.factory import create_model
from rsdemo.models.registry import list_models

CARDS = sorted(CHECKPOINT_DIR.glob("*.json"))


def test_demo_checkpoints_exist():
    names = {p.stem for p in CARDS}
    assert {"amfmn-slim", "clip-tiny"} <= names, names


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_card_metrics_reproduce(card_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    card = json.loads(card_path.read_text())
    ck = card_path.with_suffix(".safetensors")
    assert ck.stat().st_size <= 15 * 2**20
    assert card["model"] in list_models() and card["model"] == card_path.stem
    model = load_model(card_path.stem)
    test = open_dataset(card["data"]).split("test")
    got = evaluate_model(model, test)
    for k, v in card["metrics"]["test"].items():
        assert got[k] == pytest.approx(v, abs=1e-6), k
    assert card["metrics"]["test"]["mr"] > 30  # far above random (see docs/RESULTS.md)


def test_backbone_weights_load_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    m = create_model("amfmn", pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(m.backbone.stem[0].weight, ref.conv1.weight)
    assert torch.equal(m.backbone.stages[-1][0].conv1.weight, ref.layer4[0].conv1.weight)
