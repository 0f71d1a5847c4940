"""Maps a stakeholder can read: plain names, measured figures per map, words and maps in step, the co-occurrence
view, image->image explanations, and the default model chosen by retrieval AND grounding (rsdemo.checkpoint.rank).

The page itself, in a browser, is tests/test_browser_maps.py."""
import json

import numpy as np
import pytest
from PIL import Image

from rsdemo import results, ui
from rsdemo import explain as E
from rsdemo.checkpoint import MR_TIE, catalogue, default_model, rank
from rsdemo.data.formats import domain
from rsdemo.models.base import Explanation

QUERY = "two white planes parked beside the runway"


# ---- names and figures -------------------------------------------------------------------------------------
def test_every_measured_map_has_a_plain_name():
    measured = {r["map"] for s in ("faithfulness", "grounding") for r in results.rows(s)}
    shown = {m for m in measured if results.own_map(m) or m.startswith("baseline")}
    assert shown, "no measured maps"
    for m in shown:
        plain, desc = ui.map_name(m)
        assert plain != m.replace("_", " ") and desc, f"{m} has no entry in ui.MAPS"
        assert "_" not in plain
    assert ui.map_name("sem16")[0] == "SSJDN salience, stride 16 (SEM)"
    assert ui.map_name("some_new_map") == ("some new map", "")       # a new model's map still reads as words


def _section(folder, name, rows):
    (folder / f"{name}.json").write_text(json.dumps({"title": name, "columns": [], "rows": rows}))


def test_pointing_reads_the_measurement_of_the_imagery(tmp_path):
    _section(tmp_path, "grounding", [{"model": "m", "map": "tam", "hit": 60.0},
                                     {"model": "m", "map": "baseline_region_sim", "hit": 80.0},
                                     {"model": "m", "map": "random", "hit": 25.0}])
    _section(tmp_path, "faithfulness", [{"model": "m", "map": "tam", "pointing": 40.0},
                                        {"model": "m", "map": "tam_phrase", "pointing": 90.0},
                                        {"model": "s", "map": "mvsa", "pointing": 30.0}])
    assert results.pointing("m", "ucm", tmp_path) == ({"tam": 60.0, "baseline_region_sim": 80.0, "random": 25.0},
                                                      results.REAL)
    assert results.pointing("m", "synthetic", tmp_path)[1] == results.SYNTHETIC
    assert results.pointing("s", "ucm", tmp_path) == ({"mvsa": 30.0}, results.SYNTHETIC)  # the only one measured
    assert results.pointing("x", "ucm", tmp_path) == ({}, None)
    # own maps only (no baseline, reference or phrase average); the imagery's measurement wins
    assert results.best_own_pointing("ucm", tmp_path) == {"m": 60.0, "s": 30.0}
    assert results.best_own_pointing("synthetic", tmp_path) == {"m": 40.0, "s": 30.0}


def test_map_menu_labels_say_what_was_measured():
    figures = {"tam": 62.0, "random": 25.0}
    labels = dict((n, lab) for lab, n in ui.map_choices(["tam", "baseline_gradcam"], figures, results.REAL))
    assert labels["tam"] == "CCNet attention to the words (TAM) · 62% (photos)"
    assert labels["baseline_gradcam"] == "baseline: Grad-CAM"                      # not measured: no figure
    info = ui.map_info({"map": "tam", "figures": figures, "measured_on": results.REAL})
    assert "UCM photos" in info and "25%" in info and "62%" in info


# ---- words -------------------------------------------------------------------------------------------------
def test_words_join_wordpieces_and_mark_function_words():
    ws = E.words(["the", "air", "##plane", "##s", "near", "the", "runway", "."])
    assert [w["key"] for w in ws] == ["the", "airplanes", "near", "the@3", "runway", "."]
    assert ws[1]["tokens"] == [1, 2, 3]
    assert [w["function"] for w in ws] == [True, False, True, True, False, True]
    assert E.find_word(["a", "red", "ship"], "ship")["tokens"] == [2]
    with pytest.raises(ValueError, match="no word"):
        E.find_word(["a", "red", "ship"], "plane")


def test_word_map_reads_the_word_rows_of_its_own_map():
    T, h, w = 4, 2, 3
    rng = np.random.default_rng(0)
    tam = rng.random((T, h, w))
    cfm = rng.random((T, h * w))
    cfm /= cfm.sum()
    ex = Explanation({"tam": tam, "cfm_regions": cfm.sum(0).reshape(h, w), "mvsa": rng.random((h, w))},
                     ["a", "air", "##plane", "field"], 0.5, cfm=cfm)
    assert np.allclose(E.word_map(ex, "tam", "airplane"), tam[1:3].mean(0))         # a word's pieces, averaged
    assert np.allclose(E.word_map(ex, "cfm_regions", "airplane"), cfm[1:3].sum(0).reshape(h, w))  # mass adds up
    assert E.word_map(ex, "mvsa", "field") is None              # not built word by word: the caller asks again
    assert E.word_map(ex, "baseline_region_sim", "field") is None


# ---- rendering -----------------------------------------------------------------------------------------------
def test_colour_bar_beside_the_map():
    im = Image.new("RGB", (200, 200), (128, 128, 128))
    out = ui.with_colorbar(im)
    assert out.size[1] == 200 and out.size[0] > 220
    a = np.asarray(out).astype(int)
    strip = a[:, 200:, :]
    reddish = (strip[..., 0] > 150) & (strip[..., 2] < 80)
    bluish = (strip[..., 2] > 150) & (strip[..., 0] < 80)
    rows_red, rows_blue = np.nonzero(reddish.any(1))[0], np.nonzero(bluish.any(1))[0]
    assert rows_red.size and rows_blue.size and rows_red.mean() < rows_blue.mean()   # high (red) at the top


def test_cooccurrence_view_keeps_function_words_apart():
    tokens = ["the", "red", "ship", "near", "the", "pier"]
    m = np.full((6, 4), 0.01)
    m[0] = 0.2                         # "the" carries the largest mass, as CCNet's CFM often gives it
    m[2, 3] = 0.3                      # "ship": bottom right
    data = {"matrix": m / m.sum(), "tokens": tokens, "regions": [f"r{i}" for i in range(4)], "grid": (2, 2),
            "score": 0.4}
    fig = ui.cooccurrence_view(data, Image.new("RGB", (64, 64)), "ship")
    bars = fig.data[0]
    labels = list(fig.layout.yaxis.ticktext)
    assert labels[0] == "the  (function word)" and labels[2] == "ship"
    assert bars.marker.color[0] == ui.MUTED and bars.marker.color[2] != ui.MUTED     # marked apart, ship picked
    heat = fig.data[2].z
    assert np.unravel_index(np.argmax(heat), heat.shape) == (1, 1)    # ship's mass lies bottom right
    assert abs(heat.sum() - 100) < 1e-6
    assert ui.cooccurrence_view(None) is None
    assert "has no word–region co-occurrence" in ui.cooccurrence_note("amfmn-slim", {"cooccurrence": None,
                                                                                     "map": "mvsa"})


# ---- the default model: retrieval AND grounding -----------------------------------------------------------
def _row(name, mr, data="ucm:x"):
    return {"name": name, "mr": mr, "data": data}


def test_rank_settles_a_close_retrieval_race_by_grounding():
    rows = [_row("a", 50.0), _row("b", 50.0 - MR_TIE / 2), _row("c", 50.0 - 2 * MR_TIE), _row("u", 49.9),
            _row("d", 60.0, "synthetic")]
    ground = {"a": 30.0, "b": 70.0, "c": 99.0}          # c points best but retrieves clearly worse; u unmeasured
    assert [r["name"] for r in rank(rows, "ucm", ground)] == ["b", "a", "u", "c", "d"]
    assert [r["name"] for r in rank(rows, None, ground)] == ["d", "a", "u", "b", "c"]   # no imagery: mR only
    assert [r["name"] for r in rank(rows, "synthetic", ground)][0] == "d"


def test_the_committed_defaults_follow_the_rule():
    """Read from the cards and rsdemo/results at run time: whatever is measured, the default retrieves within
    MR_TIE of the best on its imagery and no such model points better with its own maps."""
    rows = catalogue()
    for imagery in ("synthetic", "ucm"):
        mine = [r for r in rows if domain(r["data"]) == imagery and r["mr"] is not None]
        if not mine:
            continue
        best = default_model(f"{imagery}:x" if imagery != "synthetic" else "synthetic")
        ground = results.best_own_pointing(imagery)
        top = max(r["mr"] for r in mine)
        tied = [r for r in mine if r["mr"] >= top - MR_TIE]
        chosen = next(r for r in mine if r["name"] == best)
        assert chosen in tied
        assert ground.get(best, -1.0) == max(ground.get(r["name"], -1.0) for r in tied)


# ---- the service: words and maps in step, image->image explained ------------------------------------------------
def test_word_and_map_stay_in_step(app_page):
    page, _ = app_page
    demo = page.rsdemo
    model = demo.default
    name = demo.search_text(QUERY, model, 1)[0]["name"]
    out = demo.explain(name, QUERY, model)
    figures, where = demo.map_figures(model)
    if figures:   # opens on its best-measured map
        assert out["map"] == max((m for m in out["maps"] if m in figures), key=lambda m: figures[m])
    assert out["word"] is None and "planes" in out["words"] and "the" not in out["words"]
    own = [m for m in out["maps"] if E.word_stack(demo.explanation(name, QUERY, model)["ex"], m) is not None]
    for m in own[:1] + ["baseline_region_sim"]:
        w = demo.explain(name, QUERY, model, map=m, word="planes")
        assert (w["map"], w["word"]) == (m, "planes")
        assert w["word_source"] == ("stack" if m in own else "alone")
        whole = demo.explain(name, QUERY, model, map=m, word=E.SENTENCE)
        assert whole["word"] is None and not np.allclose(whole["heat"], w["heat"])


def test_an_image_result_is_explained_against_the_image(app_page):
    page, _ = app_page
    demo = page.rsdemo
    path = demo.retriever().paths[3]
    hit = demo.search_image(path, None, 1)[0]
    out = demo.explain_image(hit["name"], path)
    assert out["map"] == E.IMAGE_MAP and out["heat"].ndim == 2 and np.isfinite(out["heat"]).all()
    assert out["score"] == pytest.approx(1.0, abs=1e-3)        # the image itself: its own best match
    assert out["cooccurrence"] is None and out["words"] == []
