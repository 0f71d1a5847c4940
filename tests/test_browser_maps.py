"""The maps in a real browser (Debian's chromium driven by Python playwright; skipped without either): plain map
names with their measured figures, a colour bar beside the map, the word and map menus in step, and a model
without a co-occurrence module saying so. Screenshots go to $RSDEMO_SCREENSHOTS, else a temp folder."""
import io

import numpy as np
from PIL import Image

from test_browser import search as _search

QUERY = "two white planes parked beside the runway"


def _overlay_changes(pg, action):
    old = pg.locator("#overlay img").get_attribute("src") if pg.locator("#overlay img").count() else None
    action()
    pg.wait_for_function("old => { const i = document.querySelector('#overlay img'); return i && i.src !== old; }",
                         arg=old, timeout=60_000)


def _note(pg) -> str:
    return pg.locator("#explain-note").inner_text()


def _checked(pg, elem: str) -> str:
    return pg.locator(f"#{elem} input:checked").evaluate("e => e.closest('label').innerText").strip()


def test_maps_read_plainly_and_stay_in_step(app_page, browser, shots):
    page, url = app_page
    demo = page.rsdemo
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(url, wait_until="load")
    pg.locator("#query textarea").wait_for(timeout=60_000)
    _search(pg, QUERY)
    _overlay_changes(pg, lambda: pg.locator("#results img").first.click())

    # plain names, no identifiers; the measured figure where there is one
    labels = [t.strip() for t in pg.locator("#map label").all_inner_texts()]
    assert "baseline: Grad-CAM" in " ".join(labels) and not any("_" in t for t in labels), labels
    pg.wait_for_function("() => [...document.querySelectorAll('#map label')].every(l => l.title)",
                         timeout=10_000)                           # each choice's description on hover
    assert "gradient" in pg.locator("#map label", has_text="baseline: Grad-CAM").get_attribute("title")
    figures, _ = demo.map_figures(demo.default)
    if figures:
        assert any("%" in t for t in labels)

    # a colour bar at the picture's right: red (high) above blue (low), in the picture the page was sent
    sent = pg.request.get(pg.locator("#overlay img").get_attribute("src")).body()
    picture = np.asarray(Image.open(io.BytesIO(sent)).convert("RGB")).astype(int)
    strip = picture[:, int(picture.shape[1] * 0.8):]
    red = np.nonzero(((strip[..., 0] > 150) & (strip[..., 2] < 90)).any(1))[0]
    blue = np.nonzero(((strip[..., 2] > 150) & (strip[..., 0] < 90)).any(1))[0]
    assert red.size and blue.size and red.mean() < blue.mean(), "no colour bar beside the map"

    # a word, then another map: the word stays chosen and the note names both
    word = "planes"
    _overlay_changes(pg, lambda: pg.locator("#words label", has_text=word).first.click())
    assert word in _note(pg)
    other = next(t for t in labels if t.startswith("baseline: region"))
    _overlay_changes(pg, lambda: pg.locator("#map label", has_text=other).first.click())
    assert _checked(pg, "words") == word
    assert word in _note(pg) and "region–text similarity" in _note(pg)
    pg.screenshot(path=str(shots / "maps-word.png"), full_page=True)
    # back to the whole sentence
    _overlay_changes(pg, lambda: pg.locator("#words label", has_text="whole sentence").click())
    assert "whole sentence" in _note(pg) and _checked(pg, "map").startswith("baseline: region")
    pg.screenshot(path=str(shots / "maps-sentence.png"), full_page=True)

    # a model without a co-occurrence module says so in one line
    plain = next(n for n in demo.names() if not demo.info(n)["card"].get("arch", n).startswith("ccnet")
                 and "slim" in n)
    pg.locator("#model input").click()
    pg.locator("ul[role=listbox] li", has_text=plain).first.click()
    pg.get_by_text(f"{plain}", exact=False).first.wait_for(timeout=60_000)
    _search(pg, QUERY)
    _overlay_changes(pg, lambda: pg.locator("#results img").first.click())
    pg.locator("#cooc-note", has_text="no word–region co-occurrence").wait_for(timeout=30_000)
    assert not pg.locator("#cooc .js-plotly-plot").count()
    pg.screenshot(path=str(shots / "maps-no-cooc.png"), full_page=True)
    pg.close()
