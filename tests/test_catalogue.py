"""Finding checkpoints: one catalogue, one "best model for this imagery" rule (rsdemo.checkpoint.rank) behind both
default_model() (CLI, README, bench) and the page's model menu (Demo.models_for), and RSDEMO_CHECKPOINTS."""
import json

import pytest

from rsdemo.checkpoint import CHECKPOINT_DIR, catalogue, checkpoint_dirs, default_model, find_checkpoint, rank


def _card(folder, name, mr, data="synthetic", weights=True):
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": name, "data": data, "metrics": {"test": {"mr": mr}}}))
    if weights:
        path.with_suffix(".safetensors").write_bytes(b"x")


@pytest.fixture
def shelf(tmp_path, monkeypatch):
    _card(tmp_path, "a", 50.0)
    _card(tmp_path, "b", 61.5)
    _card(tmp_path, "ucm/c", 70.0, data="ucm:DIR")     # trained on other imagery, in a subfolder
    _card(tmp_path, "d", 80.0, weights=False)          # a card without its checkpoint is not offered
    (tmp_path / "README.json").write_text("[]")         # not a model card
    monkeypatch.setenv("RSDEMO_CHECKPOINTS", str(tmp_path))
    monkeypatch.delenv("RSDEMO_HF_REPO", raising=False)
    return tmp_path


def test_one_rule_orders_the_catalogue_and_names_the_default(shelf):
    assert checkpoint_dirs() == [shelf]
    assert [m["name"] for m in catalogue()] == ["ucm/c", "b", "a"]                   # by test mR
    assert [m["name"] for m in catalogue(prefer="synthetic")] == ["b", "a", "ucm/c"]  # that imagery first
    assert [m["name"] for m in catalogue(prefer="ucm")] == ["ucm/c", "b", "a"]
    assert default_model() == "b" and default_model("ucm:/data/ucm") == "ucm/c"
    # the page's menu: the catalogue re-ranked for a gallery's imagery, the same rule (Demo.models_for)
    rows = catalogue()
    assert rank(rows, "synthetic") == catalogue(prefer="synthetic")
    with pytest.raises(ValueError, match="no checkpoint"):
        default_model("rsitmd:x")


def test_names_resolve_in_order_over_the_folders(shelf, tmp_path_factory, monkeypatch):
    other = tmp_path_factory.mktemp("other")
    _card(other, "a", 10.0)
    _card(other, "e", 10.0)
    monkeypatch.setenv("RSDEMO_CHECKPOINTS", f"{shelf}:{other}")
    assert find_checkpoint("a") == shelf / "a.safetensors"          # the first folder wins
    assert find_checkpoint("e") == other / "e.safetensors"
    assert find_checkpoint("ucm/c") == shelf / "ucm" / "c.safetensors"
    assert find_checkpoint("nope") is None
    assert [m["name"] for m in catalogue()].count("a") == 1


def test_the_committed_default_is_the_best_synthetic_card(monkeypatch):
    monkeypatch.delenv("RSDEMO_CHECKPOINTS", raising=False)
    monkeypatch.delenv("RSDEMO_HF_REPO", raising=False)
    cards = {p.stem: json.loads(p.read_text()) for p in CHECKPOINT_DIR.glob("*.json") if p.stem != "README"}
    best = max((c["metrics"]["test"]["mr"], name) for name, c in cards.items()
               if c["data"] == "synthetic" and (CHECKPOINT_DIR / f"{name}.safetensors").is_file())[1]
    assert default_model() == best == catalogue(prefer="synthetic")[0]["name"]
    assert default_model("ucm:anywhere").startswith("ucm/")
