"""Results as data: docs/RESULTS.md is generated from rsdemo/results/*.json, the same rows the Models tab draws."""
from pathlib import Path

import pytest

from rsdemo import results

ROOT = Path(__file__).resolve().parents[1]


def test_doc_is_generated_from_the_section_files():
    """Nobody edited the doc by hand, and no section file was changed without regenerating it
    (`python -m rsdemo.results`)."""
    assert (ROOT / "docs" / "RESULTS.md").read_text() == results.document()


@pytest.mark.parametrize("name", results.names())   # every stored section
def test_every_section_has_numeric_rows(name):
    sec = results.load(name)
    assert sec["title"] and sec["rows"], name
    for _, templates in sec["columns"]:
        for t in [templates] if isinstance(templates, str) else templates:
            assert all(isinstance(f, str) for f in results._fields(t))
    numbers = [v for r in sec["rows"] for v in r.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numbers, f"{name}: rows hold numbers, not formatted text"


def test_cell_takes_the_first_template_the_row_fills():
    t = ["{a:.2f} ± {a_sd:.2f}", "{a:.2f}", "{note}"]
    assert results.cell(t, {"a": 1.234, "a_sd": 0.5}) == "1.23 ± 0.50"
    assert results.cell(t, {"a": 1.234, "a_sd": None}) == "1.23"
    assert results.cell(t, {"note": "-"}) == "-"
    assert results.cell(t, {}) == ""


def test_save_refuses_a_section_without_rows(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        results.save("x", {"title": "t", "columns": []}, doc=False, folder=tmp_path)


def test_models_tab_charts_draw_the_section_rows():
    """The Models tab's charts are the results rows themselves (no markdown read back)."""
    from rsdemo import ui

    demo = results.rows("demo")
    fig = ui.retrieval_figure("demo", "mr", "t")   # horizontal bars: labels on y, mR on x, best first
    assert list(fig.data[0].x) == sorted((r["mr"] for r in demo), reverse=True)
    assert "baseline: random" in fig.data[0].y
    ucm = ui.retrieval_figure("ucm", "val_mr", "t")
    labels = list(ucm.data[0].y)
    assert "published AMFMN-fusion" in labels and "amfmn-lite0 (zero-shot)" in labels and "dual-label-lite0" in labels
    best = max(results.rows("ucm"), key=lambda r: r["val_mr"])
    assert ucm.data[0].x[0] == best["val_mr"]
    faith = ui.faithfulness_figure()
    rows = {(r["model"], r["map"]): r["pointing"] for r in results.rows("faithfulness")}
    bars = {t.name: {y.split(" · ")[0]: x for y, x in zip(t.y, t.x)} for t in faith.data}  # "model · its best map"
    assert bars["random map"]["ccnet-lite0"] == rows[("ccnet-lite0", "random")]
    assert bars["own map (the best, named)"]["ccnet-lite0"] == max(
        v for (m, k), v in rows.items() if m == "ccnet-lite0" and results.own_map(k))   # the maps the page offers