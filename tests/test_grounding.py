"""Real-photo grounding metrics (rsdemo/grounding.py): checked on constructed maps and a toy score; one test runs the
whole measure on the real UCM photos in ../shared (skipped without them)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from rsdemo import grounding as g
from rsdemo.data.dataset import Record
from rsdemo.explain import to_heatmap

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def indicator(tile, size=g.SIZE):
    m = np.zeros((size, size), np.float32)
    m[g.tile_slices(tile, size)] = 1
    return m


@pytest.mark.parametrize("tile", range(4))
def test_a_tile_indicator_scores_100(tile):
    heat = indicator(tile)
    assert g.pointing(heat, tile) == 1.0 and g.energy_share(heat, tile) == 1.0
    assert all(g.pointing(heat, t) == 0.0 and g.energy_share(heat, t) == 0.0 for t in range(4) if t != tile)


def test_an_indicator_at_map_resolution_still_hits_after_upsampling():
    m = np.zeros((4, 4), np.float32)
    m[2:, :2] = 1                                   # bottom-left tile of a 4x4 map
    heat = to_heatmap(m, g.SIZE)
    assert g.pointing(heat, 2) == 1.0 and g.energy_share(heat, 2) > 0.85   # bilinear bleed over the edge


def test_a_constant_map_scores_chance():
    heat = to_heatmap(np.full((7, 7), 3.0), g.SIZE)     # no location: to_heatmap gives zeros
    assert [g.pointing(heat, t) for t in range(4)] == [0.25] * 4
    assert [g.energy_share(heat, t) for t in range(4)] == [0.25] * 4
    flat = np.ones((g.SIZE, g.SIZE))
    assert g.energy_share(flat, 1) == 0.25


def test_a_map_with_a_favourite_tile_scores_chance_over_cycling_targets():
    heat = indicator(0)
    assert np.mean([g.pointing(heat, i % 4) for i in range(100)]) == 0.25


def test_centre_prior_is_symmetric():
    c = g.centre_prior((64, 64))
    assert c.argmax() in {31 * 64 + 31, 31 * 64 + 32, 32 * 64 + 31, 32 * 64 + 32}
    assert np.allclose(c, c[::-1]) and np.allclose(c, c[:, ::-1])
    assert [g.energy_share(c, t) for t in range(4)] == pytest.approx([0.25] * 4)


def test_deletion_and_insertion_on_a_known_toy_score():
    """Score = mean of the top-left quarter. The quarter's indicator removes it in the first 2 of 8 steps:
    deletion 1, .5, 0, ... -> AUC 1/8; insertion 0, .5, 1, ... -> AUC 7/8. The reverse map is the worst case."""
    S = 16
    x = torch.ones(3, S, S)
    score = lambda b: b[:, 0, :S // 2, :S // 2].mean((1, 2))       # noqa: E731
    zeros = torch.zeros_like(x)
    heat = np.zeros((S, S))
    heat[:S // 2, :S // 2] = 1
    d, i = g.deletion_insertion(score, x, heat, steps=8, removed=zeros, blurred=zeros)
    assert d == pytest.approx([1, .5] + [0] * 7) and i == pytest.approx([0, .5] + [1] * 7)
    assert g.normalised_auc([d], "deletion") == pytest.approx(1 / 8)
    assert g.normalised_auc([i], "insertion") == pytest.approx(7 / 8)
    d2, i2 = g.deletion_insertion(score, x, 1 - heat, steps=8, removed=zeros, blurred=zeros)
    assert g.normalised_auc([d2], "deletion") == pytest.approx(7 / 8)
    assert g.normalised_auc([i2], "insertion") == pytest.approx(1 / 8)
    # a score blind to the pixels has no curve to normalise
    assert np.isnan(g.normalised_auc([[1.0] * 9], "deletion"))


def test_average_precision():
    assert g.average_precision(np.array([3, 2, 1.0]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert g.average_precision(np.array([3, 2, 1.0]), np.array([1, 1, 0])) == 1.0


class FakeDS:
    def __init__(self, records):
        self.records = records


def _records():
    classes = sorted(g.CLASS_PHRASES)[:6]
    return [Record(f"{100 * k + j + 1}.tif", [], "val", c) for k, c in enumerate(classes) for j in range(3)]


def test_scene_mosaics_are_four_classes_seeded_and_cycle_the_target():
    ds = FakeDS(_records())
    ms = g.scene_mosaics(ds, 12, seed=3)
    assert ms == g.scene_mosaics(ds, 12, seed=3)
    assert [t for _, t, _ in ms] == [0, 1, 2, 3] * 3
    for idx, t, phrase in ms:
        labels = [ds.records[i].label for i in idx]
        assert len(set(labels)) == 4 and g.CLASS_PHRASES[labels[t]] == phrase
    with pytest.raises(ValueError, match="classes"):
        g.scene_mosaics(FakeDS(_records()[:9]), 1)


def test_object_mosaics_differ_in_the_queried_object():
    ds = FakeDS(_records())
    labels = {g.image_id(r): ({"cars", "trees"} if i % 2 else {"trees"}) for i, r in enumerate(ds.records)}
    ms = g.object_mosaics(ds, labels, per_object=3)
    assert len(ms) == 3                             # only "cars" has images with and without it
    for idx, t, word, obj in ms:
        assert (obj, word) == ("cars", "cars")
        assert [obj in labels[g.image_id(ds.records[i])] for i in idx] == [k == t for k in range(4)]
    # photos the labels do not name are neither the object's tile nor a tile without it
    unnamed = {g.image_id(r) for r in ds.records[::3]}
    some = {k: v for k, v in labels.items() if k not in unnamed}
    used = {g.image_id(ds.records[i]) for idx, *_ in g.object_mosaics(ds, some, per_object=20) for i in idx}
    assert used and not used & unnamed


def test_load_multilabels(tmp_path):
    (tmp_path / "labels_by_id.csv").write_text("id,cars,trees\n1,1,0\n2,0,0\n")
    assert g.load_multilabels(tmp_path) == {"1": {"cars"}, "2": set()}
    with pytest.raises(FileNotFoundError, match="labels_by_id.csv"):
        g.load_multilabels(tmp_path / "nope")


def test_write_results_makes_two_sections(tmp_path):
    res = {"m": {"maps": {"own": {"hit": 50.0, "energy": 30.0, "n": 4, "deletion": float("nan")}},
                 "objects": {"ap": 60.0, "p_at_k": 70.0, "prevalence": 20.0, "k": 10, "objects": 2,
                             "per_object": {"cars": {"ap": 60.0, "p_at_k": 70.0}}}}}
    setup = {"split": "val", "seed": 0, "mosaics": 4, "per_object": 1, "images": 1}
    paths = g.write_results(res, setup, "rsdemo eval-explain --real", doc=tmp_path / "R.md", folder=tmp_path)
    assert [p.name for p in paths] == ["grounding.json", "grounding_objects.json"]
    text = (tmp_path / "R.md").read_text()
    assert "| m | own | 50.0 | 30.0 |" in text and "| m | 60.0 | 70.0 | 20.0 | 2 |" in text


@pytest.mark.skipif(not (SHARED / "ucm_images").is_dir() or not (SHARED / "ucm_multilabels").is_dir(),
                    reason="needs ../shared/data/ucm_images, ucm_captions and ucm_multilabels")
def test_real_photos_end_to_end():
    from rsdemo.checkpoint import load_model
    from rsdemo.data.formats import open_dataset

    full = open_dataset(f"ucm:{SHARED / 'ucm_captions'}", images=SHARED / "ucm_images")
    val = full.split("val")
    val.records = val.records[::5]                  # 2 photos per class
    labels = g.load_multilabels(SHARED / "ucm_multilabels")
    model = load_model("ucm/ssjdn-lite0")
    r = g.evaluate_grounding(model, val, labels, mosaics=4, images=1, per_object=0, seed=0)
    maps = r["maps"]
    assert {"sem16", "baseline_gradcam", "baseline_region_sim", "random", "centre"} <= set(maps)
    assert maps["centre"]["hit"] == pytest.approx(25.0) and maps["sem16"]["n"] == 4
    assert all(0 <= m["hit"] <= 100 and 0 <= m["energy"] <= 100 for m in maps.values())
    assert r["objects"]["objects"] >= 10 and r["objects"]["ap"] > r["objects"]["prevalence"]
    dev = g.dev_blocks(full)
    assert len(dev) == 210 and all(70 <= (int(g.image_id(x)) - 1) % 100 < 80 for x in dev.records)
    assert {x.split for x in dev.records} == {"train"}


@pytest.mark.skipif(not (SHARED / "ucm_images").is_dir(), reason="needs ../shared/data/ucm_images and ucm_captions")
def test_deletion_is_defined_when_a_flat_image_scores_like_the_photo():
    """DOVE scores a flat (mean) image about as high as the photo for its class phrase; deletion against the
    blurred copy (the insertion canvas) still has two distinct end points, so every map gets a number."""
    from rsdemo.checkpoint import load_model
    from rsdemo.data.formats import open_dataset

    val = open_dataset(f"ucm:{SHARED / 'ucm_captions'}", images=SHARED / "ucm_images").split("val")
    model = load_model("ucm/dove-lite0")
    r = g.rise(model, val, g.pick_images(val, 3))
    assert r and all(np.isfinite(v["deletion"]) and np.isfinite(v["insertion"]) for v in r.values())
    # end points well apart keep the normalised AUCs near [0, 100] (the flat canvas gave -918 to -2020 here)
    assert all(-50 < v["deletion"] < 150 for v in r.values()), r


def test_trim_keeps_a_border_maximum_from_winning():
    m = np.zeros((6, 6), np.float32)
    m[0, 0], m[2, 3] = 9, 1                         # a corner artefact and the real peak
    t = g.trim(m, 1)
    assert np.unravel_index(t.argmax(), t.shape) == (2, 3) and t[0, 0] == 0
    assert np.array_equal(g.trim(m, 0), m) and np.array_equal(g.trim(np.ones((2, 2)), 1), np.ones((2, 2)))


class ToyStateModel:
    """A score that reads only the top-right region of a 2x2 region grid, and a read-out map it ignores."""

    def one_image(self, image):
        return torch.ones(1, 3, 4, 4)

    def image_state(self, x):
        regions = x.unflatten(2, (2, 2)).unflatten(4, (2, 2)).mean((3, 5)).permute(0, 2, 3, 1)   # [1, 2, 2, 3]
        return {"global": regions.mean((1, 2)), "regions": regions, "readout": regions.sum(-1).detach() + 0}

    def score_state(self, state, texts):
        return state["regions"][:, 0, 1].sum(-1, keepdim=True) * 2


def test_gradient_maps_show_what_the_score_reads():
    maps = g.gradient_maps(ToyStateModel(), None, "x")
    assert set(maps) == {"grad_x_regions"}          # the read-out map has no graph, so no map
    assert maps["grad_x_regions"].tolist() == [[0.0, 6.0], [0.0, 0.0]]


def test_write_results_per_model_keeps_the_other_models_rows(tmp_path):
    def res(hit):
        return {"maps": {"own": {"hit": hit, "energy": 30.0, "n": 4}},
                "objects": {"ap": 60.0, "p_at_k": 70.0, "prevalence": 20.0, "k": 10, "objects": 2, "per_object": {}}}
    setup = {"split": "val", "seed": 0, "mosaics": 4, "per_object": 1, "images": 1}
    g.write_results({"a": res(1.0)}, setup, "c", doc=False, folder=tmp_path)
    g.write_results({"b": res(2.0)}, setup, "c", doc=False, folder=tmp_path)
    g.write_results({"a": res(3.0)}, setup, "c", doc=False, folder=tmp_path)
    from rsdemo import results
    assert [(r["model"], r["hit"]) for r in results.rows("grounding", tmp_path)] == [("a", 3.0), ("b", 2.0)]
    assert [r["model"] for r in results.rows("grounding_objects", tmp_path)] == ["a", "b"]
    g.write_results({"c": res(4.0)}, dict(setup, seed=1), "c", doc=False, folder=tmp_path)   # another setup
    assert [r["model"] for r in results.rows("grounding", tmp_path)] == ["c"]


def test_signed_lever_adds_the_split_whose_positive_part_is_shown():
    """The `signed` lever: beside the own score map (its positive part), "<key>_signed" is the signed split of the
    score; a model without score maps gets nothing."""
    from PIL import Image

    from rsdemo import create_model

    torch.manual_seed(0)
    m = create_model("dove-slim", score_map=True).eval()
    image = Image.new("RGB", (96, 96), (40, 120, 60))
    image.paste((200, 200, 210), (0, 0, 48, 48))
    maps = g.all_maps(m, image, "a white roof", np.random.default_rng(0), signed=True)
    signed = maps["roam_score_signed"]
    assert np.allclose(maps["roam_score"], np.maximum(signed, 0), atol=1e-6)
    assert signed.min() < 0 <= maps["roam_score"].min()
    assert g.signed_maps(create_model("dove-slim").eval(), image, "a white roof", ["roam_text"]) == {}
