"""Heatmaps (rsdemo.explain) and their measured faithfulness on the synthetic masks (rsdemo.faithfulness)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rsdemo import explain as E
from rsdemo import ui
from rsdemo.data.dataset import Record, Sample, Span
from rsdemo.faithfulness import (best_iou, evaluate_faithfulness, faithfulness_table, oracle, phrases, pointing_hit,
                                 write_results)
from rsdemo.checkpoint import CHECKPOINT_DIR, load_model

CHECKPOINTS = sorted(p.stem for p in CHECKPOINT_DIR.glob("*.safetensors"))
_models: dict = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # multi-threaded torch spin-waits under load; these models are tiny, one thread is fastest
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def model(name):
    if name not in _models:
        _models[name] = load_model(name)
    return _models[name]


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    """The first 120 images of the synthetic world (the default world's first test images), exported once."""
    from rsdemo.data.formats import open_dataset

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSDEMO_CACHE", str(tmp_path_factory.mktemp("cache")))
        ds = open_dataset("synthetic:120")
    return ds.split("test")


@pytest.fixture(scope="module")
def scene():
    from rsdemo.data.synthetic import generate

    w = next(generate(1, seed=5))
    return Image.fromarray(w.image), w.captions[0]


# ---- pictures -------------------------------------------------------------------------------------------
def test_to_heatmap_shapes_range_and_constant():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = E.to_heatmap(m, (30, 40))
    assert h.shape == (30, 40) and h.dtype == np.float32
    assert h.min() == 0 and h.max() == pytest.approx(1)
    assert E.to_heatmap(m, 16).shape == (16, 16)
    assert not E.to_heatmap(np.full((4, 4), 3.0), 32).any()
    with pytest.raises(ValueError):
        E.to_heatmap(np.zeros((2, 3, 3)), 8)


def test_colormap_and_overlay():
    rgb = ui.colormap(np.linspace(0, 1, 50).reshape(5, 10))
    assert rgb.shape == (5, 10, 3) and rgb.dtype == np.uint8
    assert tuple(ui.colormap(np.zeros((1, 1)))[0, 0]) != tuple(ui.colormap(np.ones((1, 1)))[0, 0])
    assert ui.colormap(np.array([[-1.0, 2.0, np.nan]]), "viridis").shape == (1, 3, 3)   # clipped, no IndexError
    im = Image.new("RGB", (40, 30), (10, 200, 30))
    out = ui.overlay(im, np.random.default_rng(0).random((4, 4)))     # a feature-resolution map is upsampled
    assert out.size == (40, 30) and out.mode == "RGB"
    assert np.array_equal(np.asarray(ui.overlay(im, np.zeros((30, 40)), alpha=0.0)), np.asarray(im))
    full = np.asarray(ui.overlay(im, np.ones((30, 40)), alpha=1.0))
    assert (full == ui.colormap(np.ones((1, 1)))[0, 0]).all()


# ---- every committed checkpoint -----------------------------------------------------------------------
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_explain_all_every_checkpoint(name, scene):
    image, text = scene
    m = model(name)
    ex = m.explain(image, text)
    maps = E.explain_all(m, image, text, ex=ex)
    assert {"baseline_region_sim", "baseline_gradcam"} <= set(maps)
    assert len(maps) > 2, "the model's own maps are missing"
    for k, v in maps.items():
        assert v.ndim == 2 and v.size > 1 and np.isfinite(v).all(), k
        assert E.to_heatmap(v, 64).shape == (64, 64)
    assert (maps["baseline_gradcam"] >= 0).all()
    fig = ui.cooccurrence_figure(E.cooccurrence(ex))    # the matrix as data, drawn by the page's renderer
    if name.startswith("ccnet"):
        import plotly.graph_objects as go

        assert isinstance(fig, go.Figure)
        assert fig.data[0].z.shape == ex.cfm.shape
        assert list(fig.layout.yaxis.ticktext) == ex.tokens        # repeated words keep their own rows
        words = E.word_maps(ex)
        assert len(words) == len(ex.tokens) and all(w.shape == maps["tam"].shape for w in words.values())
        assert E.word_sources(ex) == ["tam", "cfm"]
        assert E.word_maps(ex, "cfm")[ex.tokens[0]].shape == maps["cfm_regions"].shape
        p = E.phrase_map(m, image, text, (0, 2), ex=ex)
        assert np.allclose(p, ex.maps["tam"][:2].mean(0))
    else:
        assert fig is None
        # per-word maps without a co-occurrence matrix (the dual encoder's word_sim) still give phrase maps
        assert (E.phrase_map(m, image, text, (0, 2), ex=ex) is None) == (not E.word_sources(ex))
    if name.startswith("dove"):
        assert "roam" not in maps and "roam_text" in maps          # slots are not words


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_baselines_grid_and_range(name, scene):
    image, text = scene
    m = model(name)
    rs, cam = E.region_similarity(m, image, text), E.gradcam(m, image, text)
    if hasattr(m, "backbone"):
        f32 = m.backbone(m.preprocess(image))[-1]
        grid = tuple(f32.shape[-2:])
    else:
        grid = tuple(m.model.visual.grid_size)
        assert np.allclose(rs, m.explain(image, text).maps["patch_sim"])
    assert rs.shape == cam.shape == grid
    assert np.isfinite(rs).all() and np.abs(rs).max() <= 1 + 1e-5        # a cosine
    assert np.isfinite(cam).all() and (cam >= 0).all() and cam.max() > 0  # ReLU, and the score reaches the map
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())   # no stray .grad


# ---- metrics -------------------------------------------------------------------------------------------
def test_pointing_and_iou_on_hand_made_maps():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 12:18] = True
    peak = np.zeros((20, 20))
    peak[7, 14] = 1
    assert pointing_hit(peak, mask, tolerance=0)
    assert not pointing_hit(np.roll(peak, 8, axis=0), mask, tolerance=0)
    assert not pointing_hit(np.zeros((20, 20)), mask, tolerance=0)   # ties: the first pixel, outside
    assert pointing_hit(np.roll(peak, 8, axis=0), mask, tolerance=6)  # 6 rows below the mask
    assert not pointing_hit(np.roll(peak, 8, axis=0), mask, tolerance=5.9)
    assert best_iou(mask.astype(float), mask) == pytest.approx(1.0)
    assert best_iou(1 - mask.astype(float), mask) < 0.1
    assert best_iou(np.zeros((20, 20)), mask) == pytest.approx(mask.mean())   # everything hot
    smooth = E.to_heatmap(oracle(mask, (10, 10)), mask.shape)
    assert pointing_hit(smooth, mask, tolerance=0) and best_iou(smooth, mask) > 0.6


def test_random_floor_is_the_area_fraction():
    mask = np.zeros((64, 64), bool)
    mask[:, :16] = True                                          # a quarter of the image
    rng = np.random.default_rng(0)
    hits = [pointing_hit(E.to_heatmap(rng.random((8, 8)), 64), mask, tolerance=0) for _ in range(400)]
    assert abs(np.mean(hits) - 0.25) < 0.08


def test_phrases_skip_structures_and_specks():
    ids = np.zeros((100, 100), np.int32)
    ids[:50] = 1                                                 # a structure
    ids[60:70, 60:70] = 2                                        # an object, 1% of the image
    ids[99, 99] = 3                                              # a speck
    objects = [{"id": 1, "class": "river", "structure": True}, {"id": 2, "class": "ship"}, {"id": 3, "class": "car"}]
    spans = [[Span(0, 2, (2,)), Span(3, 5, (1,)), Span(6, 7, (2, 1)), Span(8, 9, (3,))]]
    rec = Record("x.png", ["a ship on a river"], spans=spans, objects=objects)
    got = list(phrases(Sample(None, rec.captions, None, ids, rec)))
    assert [(ci, sp.objects) for ci, sp, _ in got] == [(0, (2,))]
    assert got[0][2].sum() == 100
    assert list(phrases(Sample(None, rec.captions, None, None, rec))) == []


# ---- trained checkpoints on the synthetic masks ---------------------------------------------------------
def test_a_trained_map_points_at_named_objects(test_split):
    """Measured (30 test images of the default world): SSJDN's sem8 points at the named objects in ~25% of
    phrases against ~1% for a random map; most other maps are near the floor (see the faithfulness table)."""
    best = []
    for name in CHECKPOINTS:
        res = evaluate_faithfulness(model(name), test_split)
        floor = res["random"]["pointing"]
        assert res["random"]["n"] >= 30
        for k, r in res.items():
            assert 0 <= r["pointing"] <= 100 and 0 <= r["iou"] <= 100 and r["n"] == res["random"]["n"], k
            if not k.startswith(("random", "oracle_", "baseline_region_sim")) and not k.endswith("_phrase"):
                best.append((r["pointing"] - floor, name, k))
    gain, name, k = max(best)
    assert gain > 10, f"no own map or Grad-CAM beats the random floor clearly: best {name} {k} +{gain:.1f}"


def test_table_and_results_section(tmp_path):
    res = {"m1": {"sem8": {"pointing": 25.0, "iou": 17.5, "n": 10}, "random": {"pointing": 1.0, "iou": 2.5, "n": 10},
                  "baseline_gradcam": {"pointing": 2.0, "iou": 4.0, "n": 10}}}
    table = faithfulness_table(res)
    rows = table.splitlines()
    assert rows[0].startswith("| model | map | pointing game % | mean best IoU % | n |")
    assert [r.split(" | ")[1] for r in rows[2:]] == ["sem8", "baseline_gradcam", "random"]
    assert "| m1 | sem8 | 25.0 | 17.5 | 10 |" in rows
    # the section is stored as data beside the others; the doc is regenerated from all of them
    from rsdemo import results

    folder, doc = tmp_path / "results", tmp_path / "RESULTS.md"
    results.save("demo", {"title": "Demo", "before": ["keep me"], "columns": [["model", "{model}"]],
                          "rows": [{"model": "x"}]}, doc=False, folder=folder)
    write_results(res, doc=doc, folder=folder)
    write_results(res, doc=doc, folder=folder)                   # replaced, not appended twice
    text = doc.read_text()
    assert "keep me" in text and text.count("<!-- faithfulness -->") == 1 and "| m1 | random | 1.0 | 2.5 | 10 |" in text
    assert text.index("<!-- demo -->") < text.index("<!-- faithfulness -->")    # the doc's section order
    rows = results.rows("faithfulness", folder)
    assert [(r["model"], r["map"], r["pointing"], r["iou"], r["n"]) for r in rows] == \
        [("m1", "sem8", 25.0, 17.5, 10), ("m1", "baseline_gradcam", 2.0, 4.0, 10), ("m1", "random", 1.0, 2.5, 10)]


def test_cli_eval_explain(test_split):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RSDEMO_CACHE": str(Path(test_split.image_root).parents[1])}
    run = lambda *a: subprocess.run([sys.executable, "-m", "rsdemo", "eval-explain", *a], capture_output=True,
                                    text=True, env=env)
    name = "ssjdn-slim" if "ssjdn-slim" in CHECKPOINTS else CHECKPOINTS[0]
    r = run("--models", name, "--data", "synthetic:120", "--max-images", "1", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"| {name} | random |" in r.stdout and "baseline_gradcam" in r.stdout
    bad = run("--models", "no-such-model", "--data", "synthetic:120")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "error" in bad.stderr


def test_goal_sentence_reads_own_seed_maps_only():
    from rsdemo.faithfulness import goals

    def r(p):
        return {"pointing": p, "iou": 1.0, "n": 10}

    res = {"ccnet-x": {"tam": r(60.0), "tam_phrase": r(90.5), "baseline_gradcam": r(95.0), "random": r(10.0),
                       "oracle_8x8": r(97.0)},
           "dove-x": {"roam_text": r(5.0), "random": r(8.0)},
           "dual-x": {"patch_sim": r(2.0), "random": r(8.0)}}          # not a seed model: a reference
    s = goals(res)
    assert "ccnet-x `tam_phrase` at 90.5% pointing (+0.5 vs the goal 90)" in s
    assert "dove-x `roam_text` 5.0 (floor 8.0)" in s and "dual-x" not in s
    res["dove-x"]["roam_text"] = r(9.0)
    assert "no seed map is below its random floor" in goals(res)
