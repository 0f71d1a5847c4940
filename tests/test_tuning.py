"""Training more than the heads on frozen-backbone features: dihedral views of the cached images (train.views) and
the backbone's top layers tuned over cached stride-16 maps ("tune_top")."""
import json

import pytest
import torch

from rsdemo import features
from rsdemo.checkpoint import load
from rsdemo.data.transforms import dihedral, oriented
from rsdemo.models.factory import create_model

WORLD = "synthetic:60"


@pytest.fixture
def world(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "tuning-cache"
    monkeypatch.setenv("RSDEMO_CACHE", str(cache))
    from rsdemo.data.formats import open_dataset

    return open_dataset(WORLD)


def test_dihedral_views_are_the_8_rotations_and_mirrors():
    x = torch.arange(12.0).view(1, 3, 4)
    views = [dihedral(x, v) for v in range(8)]
    assert torch.equal(views[0], x)
    assert torch.equal(views[2], x.flip(-1).flip(-2))           # 180 degrees
    assert torch.equal(views[4], x.flip(-1))                    # left-right mirror
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert all(torch.equal(dihedral(dihedral(x, v), (4 - v) % 4), x) for v in range(4))   # rotations undo
    with pytest.raises(ValueError, match="0-7"):
        dihedral(x, 8)


@pytest.mark.parametrize("caption,expected", [
    ("many planes parked at the airport", False), ("a road on the left of the river", True),
    ("two vertical runways", True), ("buildings at the Top", True), ("a green tennis court", False),
    ("the lefty player", False)])
def test_oriented_captions_keep_the_original_view(caption, expected):
    assert oriented(caption) is expected


def test_cached_views_are_the_backbone_on_each_view(world):
    ds = world.split("train")
    m = create_model("ssjdn-lite0", image_size=64)
    feats = features.image_features(m, ds, views=8)
    n = len(ds)
    assert all(f.shape[0] == 8 * n for f in feats)
    assert features.image_features_path(m, ds, 8) != features.image_features_path(m, ds)
    x = m.preprocess([ds[i].image for i in (0, 5)])
    with torch.no_grad():
        for v in (0, 3, 6):
            direct = m.backbone(dihedral(x, v))
            for f, d in zip(feats, direct):
                assert torch.allclose(f[[v * n, v * n + 5]].float(), d, atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="views"):
        features.image_features(m, ds, views=9)


def test_tune_top_trains_the_top_layers_only_and_ships_them(world, tmp_path):
    from safetensors import safe_open

    from rsdemo.evaluate import evaluate_model
    from rsdemo.training import TrainArgs, train

    before = create_model("ssjdn-lite0").state_dict()
    over = {"tune_top": True, "image_size": 64, "train": {"views": 8, "backbone_lr_scale": 1.0}}
    card = train(TrainArgs(model="ssjdn-lite0", data=WORLD, out=str(tmp_path / "run"), epochs=1, batch_size=16,
                           lr=1e-3, progress=False, overrides=over))
    ck = tmp_path / "run" / "last.safetensors"
    m = load(ck)
    assert m.tune_top and card["train_settings"]["views"] == 8
    after = m.state_dict()
    top = tuple("backbone." + p for p in m.backbone.top_prefixes())
    moved = [k for k, v in before.items() if k.startswith("backbone.") and not torch.allclose(
        after[k].float(), v.float(), atol=1e-3)]
    assert moved and all(k.startswith(top) for k in moved)          # only the top layers changed
    assert any(k.startswith("backbone.net.blocks.6.") for k in moved)
    for k in before:               # BatchNorm statistics stay ImageNet's (the tuned layers' stored as fp16)
        if "running_" in k:
            assert torch.equal(after[k].float(), before[k].half().float() if k.startswith(top) else before[k]), k
    with safe_open(str(ck), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["rsdemo"])
    assert any(k.startswith(top) for k in keys)
    assert not any(k.startswith("backbone.") and not k.startswith(top) for k in keys)
    assert "backbone." not in meta["rebuilt"] and "backbone.net.blocks.4." in meta["rebuilt"]
    # scores on cached maps (f32 recomputed by the tuned layers) equal scores on the images themselves
    val = world.split(card["eval_split"])
    cached = evaluate_model(m, val)
    m.config = m.config.replace(freeze=["text"])   # evaluate through the backbone on every image instead
    direct = evaluate_model(m, val)
    assert abs(cached["mr"] - direct["mr"]) < 1.0
    # exact: the card was written by this run, on these kernels (committed cards: rsdemo.drift)
    assert card["metrics"][card["eval_split"]]["mr"] == pytest.approx(cached["mr"], abs=1e-6)


def test_views_and_tune_top_need_a_frozen_image_backbone():
    with pytest.raises(ValueError, match="tune_top"):
        create_model("ssjdn-lite0", tune_top=True, freeze=["text"])


def test_whole_backbone_fine_tuned_from_a_heads_only_run(world, tmp_path):
    """--init: a heads-only run (frozen backbone, cached maps) starts a run in which the whole pretrained backbone
    trains; its BatchNorm statistics stay ImageNet's; the card names the checkpoint it started from."""
    from rsdemo.training import TrainArgs, train
    from rsdemo.training.loop import model_for, warm_start

    small = {"image_size": 64}
    train(TrainArgs(model="ssjdn-lite0", data=WORLD, out=str(tmp_path / "heads"), epochs=1, batch_size=16, lr=1e-3,
                    progress=False, overrides=small))
    heads = tmp_path / "heads" / "last.safetensors"
    whole = {**small, "freeze": ["text"]}
    m, _ = model_for("ssjdn-lite0", whole, world.split("train"))       # as training builds it
    warm_start(m, str(heads))
    src = load(heads).state_dict()
    assert all(torch.equal(v, src[k]) for k, v in m.state_dict().items())
    card = train(TrainArgs(model="ssjdn-lite0", data=WORLD, out=str(tmp_path / "whole"), epochs=1, batch_size=16,
                           lr=1e-3, progress=False, overrides=whole, init=str(heads)))
    assert card["init"]["checkpoint"] == str(heads) and len(card["init"]["sha256"]) == 64
    assert f"--init {heads}" in card["command"]
    after = load(tmp_path / "whole" / "last.safetensors").state_dict()
    moved = {k for k, v in src.items() if k.startswith("backbone.") and not torch.equal(after[k], v.half().float())}
    assert any(k.startswith("backbone.net.blocks.1.") for k in moved)          # below tune_top's layers too
    assert not any("running_" in k for k in moved)                            # statistics: ImageNet's
    with pytest.raises(ValueError, match="cannot start"):
        warm_start(create_model("dove-lite0", **whole), str(heads))
    with pytest.raises(ValueError, match="does not fit"):
        warm_start(model_for("ssjdn-lite0", {**whole, "embed_dim": 128}, world.split("train"))[0], str(heads))


def test_text_top_layers_over_cached_states_equal_the_whole_encoder():
    """text_top: the cache stops below MiniLM's last k layers and project() runs them: the same word features as
    the whole encoder on the text (every k), and only those layers train."""
    m = create_model("ssjdn-lite0", text_top=2)
    text = m.text
    assert text.tuned == 2 and text.frozen
    trains = {k for k, p in text.named_parameters() if p.requires_grad}
    assert any(k.startswith("bert.encoder.layer.5.") for k in trains)
    assert any(k.startswith("bert.encoder.layer.4.") for k in trains)
    assert not any(k.startswith(("bert.encoder.layer.3.", "bert.embeddings.")) for k in trains)
    texts = ["two white planes parked near the terminal", "a river", ""]
    ids, attn = text.tokenize(texts)
    with torch.no_grad():
        cached = text.project(*text.raw(ids, attn))
        text.tuned = 0                   # the plain path: the whole encoder, then [CLS]/[SEP] dropped
        whole = text.project(*text.raw(ids, attn))
        text.tuned = 2
    assert torch.equal(cached[1], whole[1])
    assert torch.allclose(cached[0][cached[1]], whole[0][whole[1]], atol=1e-5)
    groups = m.parameter_groups()
    tuned = {id(p) for k, p in m.named_parameters() if k.startswith("text.bert.") and p.requires_grad}
    assert tuned and tuned <= {id(p) for p in groups["pretrained"]}
    assert not tuned & {id(p) for p in groups["heads"]}


@pytest.mark.parametrize("over,match", [({"text_top": 7}, "1-6"), ({"text_top": 2, "freeze": ["image"]}, "text_top"),
                                        ({"text_top": 1, "text": "gru", "freeze": ["image"]}, "text_top")])
def test_text_top_needs_a_frozen_minilm(over, match):
    with pytest.raises(ValueError, match=match):
        create_model("ssjdn-lite0", **over)


def test_text_top_trains_the_top_text_layers_only_and_ships_them(world, tmp_path):
    from safetensors import safe_open

    from rsdemo.evaluate import evaluate_model
    from rsdemo.training import TrainArgs, train

    before = create_model("dove-lite0").state_dict()
    over = {"text_top": 1, "image_size": 64, "train": {"backbone_lr_scale": 1.0}}
    card = train(TrainArgs(model="dove-lite0", data=WORLD, out=str(tmp_path / "run"), epochs=1, batch_size=16,
                           lr=1e-3, progress=False, overrides=over))
    ck = tmp_path / "run" / "last.safetensors"
    m = load(ck)
    assert m.text.tuned == 1
    after = m.state_dict()
    moved = [k for k, v in before.items() if k.startswith("text.bert.") and not torch.allclose(
        after[k].float(), v.float(), atol=1e-4)]
    assert moved and all(k.startswith("text.bert.encoder.layer.5.") for k in moved)
    with safe_open(str(ck), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()["rsdemo"])
    assert any(k.startswith("text.bert.encoder.layer.5.") for k in keys)
    assert not any(k.startswith("text.bert.") and not k.startswith("text.bert.encoder.layer.5.") for k in keys)
    assert "text.bert.embeddings." in meta["rebuilt"] and "text.bert." not in meta["rebuilt"]
    # scores over cached states (the tuned layer run on them) equal scores through the whole encoder
    val = world.split(card["eval_split"])
    cached = evaluate_model(m, val)
    assert card["metrics"][card["eval_split"]]["mr"] == pytest.approx(cached["mr"], abs=1e-6)
    m.config = m.config.replace(freeze=["image"])   # the text through the whole (tuned) encoder instead
    direct = evaluate_model(m, val)
    assert abs(cached["mr"] - direct["mr"]) < 1.0
