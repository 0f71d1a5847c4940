"""The grounding objective (train.mosaic_weight): mosaics of training photos, a caption of one tile must find that
tile through the model's own score map (models/common.py score maps, losses.tile_loss, training.inputs.Mosaics)."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rsdemo import losses
from rsdemo.data.transforms import mosaic
from rsdemo.models.common import spread

WORLD = "synthetic:60"


def test_tile_loss_on_constructed_maps():
    flat = torch.zeros(4, 8, 8)
    target = torch.arange(4)
    assert float(losses.tile_loss(flat, target)) == pytest.approx(math.log(4), abs=1e-6)   # no location: chance
    right = torch.zeros(4, 8, 8)
    for k in range(4):   # each map's mass in its target tile (row-major)
        r, c = divmod(k, 2)
        right[k, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0.1
    wrong = right.roll(1, 0)
    assert float(losses.tile_loss(right, target)) < 0.01 < math.log(4) < float(losses.tile_loss(wrong, target))
    # odd grids (224 px inputs: 7x7 stride-32 maps): a cell belongs to the tile holding its centre
    odd = torch.zeros(1, 7, 7)
    odd[0, 4:, 4:] = 1.0
    assert float(losses.tile_loss(odd, torch.tensor([3]))) < 1e-3


def test_spread_keeps_the_total_and_the_place():
    x = torch.arange(16.0).view(1, 4, 4)
    for size in [(8, 8), (2, 2), (7, 7), (4, 4)]:
        y = spread(x, size)
        assert y.shape == (1, *size) and float(y.sum()) == pytest.approx(float(x.sum()))
    one = torch.zeros(1, 4, 4)
    one[0, 3, 0] = 1.0
    assert torch.equal(spread(one, (2, 2))[0], torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    assert float(spread(one, (8, 8))[0, 6:, :2].sum()) == pytest.approx(1.0)


def test_mosaic_tiles_are_row_major():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    m = np.asarray(mosaic([Image.new("RGB", (30, 30), c) for c in colours], 64))
    assert [tuple(m[r, c]) for r, c in ((10, 10), (10, 50), (50, 10), (50, 50))] == colours


def test_mosaic_objective_trains_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path / "cache"))
    from rsdemo import features
    from rsdemo.checkpoint import load
    from rsdemo.data.formats import open_dataset
    from rsdemo.training import TrainArgs, train
    from rsdemo.training.inputs import Mosaics

    over = {"score_map": True, "image_size": 64,
            "train": {"mosaic_weight": 1.0, "mosaics": 12, "mosaic_batch": 6, "mosaic_size": 128}}
    card = train(TrainArgs(model="dove-lite0", data=WORLD, out=str(tmp_path / "run"), epochs=1, batch_size=16,
                           lr=1e-3, progress=False, overrides=over))
    m = load(tmp_path / "run" / "last.safetensors")
    assert m.config.score_map and m.config.train.mosaic_weight == 1.0 and card["metrics"]
    ex = m.explain(Image.new("RGB", (64, 64), (90, 120, 60)), "a green field")
    split = m.score_maps(m.preprocess(Image.new("RGB", (64, 64), (90, 120, 60))), ["a green field"])[0]
    assert abs(float(split.sum()) - ex.score) < 1e-4
    assert np.allclose(ex.maps["roam_score"], split.clamp(min=0).detach().numpy(), atol=1e-6)
    # the mosaics: four scene classes each, the target cycling, the maps cached on disk and read back
    train_ds = open_dataset(WORLD).split("train")
    mo = Mosaics(m, train_ds)
    labels = [{train_ds.records[i].label for i in t} for t in mo.tiles]
    assert all(len(s) == 4 for s in labels) and mo.target.tolist()[:5] == [0, 1, 2, 3, 0]
    assert len(list((tmp_path / "cache" / "features").glob("mosaic-*"))) == 1
    again = features.mosaic_features(m, train_ds, mo.tiles, 128)
    assert all(torch.equal(a, b) for a, b in zip(again, mo.maps))
    maps, caps, target = mo.step(0, 0, 0)
    told = {c for t, k in zip(mo.tiles, mo.target.tolist()) for c in train_ds.records[t[k]].captions}
    assert len(caps) == 6 and set(caps) <= told and maps[1].shape[0] == 6 and target.shape == (6,)
    assert mo.step(0, 0, 0)[1] == caps and mo.step(0, 0, 1)[1] != caps      # fixed by (seed, epoch, step)


def test_object_mosaics_join_the_pool(tmp_path, monkeypatch):
    """train.object_mosaics: per object word of the multi-labels, mosaics whose target photo holds the object and
    whose other tiles do not, the word as their caption; cached apart from the scene mosaics (whose cache stays
    valid), the words added to the frozen text encoder's cache; a clear error without the labels."""
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path / "cache"))
    from rsdemo.data.formats import open_dataset
    from rsdemo.data.labels import image_id
    from rsdemo.models.factory import create_model
    from rsdemo.training import TrainArgs, train
    from rsdemo.training.inputs import Batches, Mosaics

    train_ds = open_dataset(WORLD).split("train")
    csv = tmp_path / "labels_by_id.csv"
    rows = ["id,cars,trees"] + [f"{image_id(r)},{int(i % 3 == 0)},{int(i % 2 == 1)}"
                                for i, r in enumerate(train_ds.records)]
    csv.write_text("\n".join(rows) + "\n")
    have = {image_id(r): (i % 3 == 0, i % 2 == 1) for i, r in enumerate(train_ds.records)}
    base = {"score_map": True, "image_size": 64,
            "train": {"mosaic_weight": 1.0, "mosaics": 12, "mosaic_batch": 6, "mosaic_size": 128}}
    Mosaics(create_model("dove-lite0", **base), train_ds)
    scene_cache = set((tmp_path / "cache" / "features").glob("mosaic-*"))
    over = {**base, "train": {**base["train"], "object_mosaics": 2, "multilabels": str(tmp_path)}}
    m = create_model("dove-lite0", **over)
    mo = Mosaics(m, train_ds)
    assert len(mo.tiles) == 12 + 2 * 2 and mo.words() == ["cars", "trees"]
    for idx, t, text in zip(mo.tiles[12:], mo.target.tolist()[12:], mo.texts[12:]):
        k = 0 if text == ["cars"] else 1
        assert [have[image_id(train_ds.records[i])][k] for i in idx] == [j == t for j in range(4)]
    cached = set((tmp_path / "cache" / "features").glob("mosaic-*"))
    assert scene_cache < cached and len(cached) == 2 and mo.maps[0].shape[0] == 16
    b = Batches(m, train_ds, 16, 0, 1, torch.device("cpu"))
    assert {"cars", "trees"} <= set(b.words.texts)
    card = train(TrainArgs(model="dove-lite0", data=WORLD, out=str(tmp_path / "run"), epochs=1, batch_size=16,
                           lr=1e-3, progress=False, overrides=over))
    assert card["metrics"]
    with pytest.raises(ValueError, match="needs train.multilabels"):
        Mosaics(create_model("dove-lite0", **{**base, "train": {**base["train"], "object_mosaics": 2}}), train_ds)
    for train_over, msg in (({"object_mosaics": 2, "multilabels": str(tmp_path)}, "set train.mosaic_weight > 0"),
                            ({"mosaic_weight": 1.0, "multilabels": str(tmp_path)}, "set train.object_mosaics > 0"),
                            ({"mosaic_weight": 1.0, "object_mosaics": -1}, ">= 0; got -1")):
        with pytest.raises(ValueError, match=msg):
            Batches(create_model("dove-lite0", score_map=True, image_size=64, train=train_over), train_ds, 16, 0, 1,
                    torch.device("cpu"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "labels_by_id.csv").write_text("id,Cars\n1,1\n")
    with pytest.raises(ValueError, match="none of its columns \\(Cars\\).*airplane, bare-soil"):
        Mosaics(create_model("dove-lite0", **{**over, "train": {**over["train"],
                                                               "multilabels": str(tmp_path / "other")}}), train_ds)


def test_mosaic_objective_trains_a_whole_backbone(tmp_path, monkeypatch):
    """An image encoder left unfrozen: the mosaics are pixels (tiled as the frozen path tiles them) run through the
    training backbone every step, and the pretrained backbone learns at train.backbone_lr_scale of the rate."""
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path / "cache"))
    from rsdemo.checkpoint import load
    from rsdemo.data.formats import open_dataset
    from rsdemo.data.transforms import image_transform
    from rsdemo.models.factory import create_model
    from rsdemo.training import TrainArgs, train
    from rsdemo.training.inputs import Mosaics

    over = {"score_map": True, "image_size": 64, "freeze": ["text"],
            "train": {"mosaic_weight": 1.0, "mosaics": 12, "mosaic_batch": 6, "mosaic_size": 128}}
    m0 = create_model("dove-lite0", **over)
    groups = m0.parameter_groups()
    backbone = {id(p) for p in m0.backbone.parameters()}
    assert {id(p) for p in groups["pretrained"]} == backbone and not backbone & {id(p) for p in groups["heads"]}
    train_ds = open_dataset(WORLD).split("train")
    mo = Mosaics(m0, train_ds)
    assert mo.maps is None and not list((tmp_path / "cache").rglob("mosaic-*"))   # nothing cached: it trains
    images, caps, target = mo.step(0, 0, 0)
    assert images.shape == (6, 3, 64, 64) and len(caps) == 6 and target.shape == (6,)
    tf = image_transform(64, m0.config.normalize)
    tiled = torch.stack([tf(mosaic([train_ds[i].image for i in t], 128)) for t in mo.tiles])
    assert all(float((tiled - x).abs().amax((1, 2, 3)).min()) < 1e-5 for x in images)   # each one of the mosaics
    card = train(TrainArgs(model="dove-lite0", data=WORLD, out=str(tmp_path / "run"), epochs=1, batch_size=16,
                           lr=1e-3, progress=False, overrides=over))
    m = load(tmp_path / "run" / "last.safetensors")
    assert card["metrics"] and not m.backbone.frozen
    moved = [not torch.equal(a, b) for a, b in zip(m.backbone.state_dict().values(), m0.backbone.state_dict().values())
             if a.is_floating_point()]
    assert any(moved)


def test_score_map_needs_an_architecture_with_score_maps():
    from rsdemo.models.factory import create_model

    with pytest.raises(ValueError, match="score_map"):
        create_model("dual-lite0", score_map=True)


def test_roam_mosaic_trains_roams_own_share_beside_the_split():
    """DOVE's roam_mosaic: the grounding objective's maps are the split and ROAM's regional share of it (each its own
    tile loss); the two parts of the split add up to the score map; off, only the split."""
    from rsdemo.models.factory import create_model
    from rsdemo.training.step import TrainStep

    torch.manual_seed(0)
    m = create_model("dove-lite0", image_size=64, score_map=True, roam_mosaic=True)
    x = m.preprocess([Image.new("RGB", (64, 64), c) for c in ((90, 120, 60), (30, 60, 160))])
    texts = ["a green field", "a lake"]
    split, own = m.grounding_maps(x, texts)
    assert torch.allclose(split, m.score_maps(x, texts), atol=1e-6)
    assert not torch.allclose(own, split)
    st = m.state_tensors(m.image_state(x))
    part, rest = m._split(st, m._text_global(*m._words(texts)))
    assert torch.allclose(part + rest, split, atol=1e-6) and torch.allclose(part, own, atol=1e-6)
    off = create_model("dove-lite0", image_size=64, score_map=True)
    assert len(off.grounding_maps(x, texts)) == 1
    # the training step adds one tile loss per map
    m.config = m.config.replace(train=m.config.train.replace(mosaic_weight=1.0))
    res = TrainStep(m)(x, texts, texts, mosaics=(x, texts, torch.tensor([0, 3])))
    assert "mosaic_module" in res and float(res["mosaic_module"]) > 0
