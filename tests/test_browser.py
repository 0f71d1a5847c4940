"""The page in a real browser: Debian's chromium driven by Python playwright (never `playwright install`); skipped
without either.

One page start for the synthetic checks (the session's app_page, shared with tests/test_app.py): a refused upload
keeps the results and its message, result captions are readable, a link reopens what is on screen. The UCM check
starts its own page over ../shared (skipped without it): example images from the gallery, no file-system path in
the page. Screenshots go to a temp folder, or to $RSDEMO_SCREENSHOTS (how the README's pictures are made:
RSDEMO_SCREENSHOTS=docs/screenshots python -m pytest tests/test_browser.py -k synthetic; the UCM page is never
kept: its pictures are UCM's), and each is checked to show a real page, not a blank one. The maps are
tests/test_browser_maps.py's.
"""
import csv
import json
import re
from pathlib import Path
from urllib.parse import unquote

import numpy as np
from PIL import Image

from fixtures import real

QUERY = "two white planes parked beside the runway"
# a file-system path in page text: absolute, ./ ../ or ~/ (a URL's //host is not one)
PATH = re.compile(r"(?<![\w/:])(?:~|\.{1,2})?/(?:[\w.@+-]+/)+[\w.@+-]+")


def shoot(pg, path: Path) -> Path:
    pg.screenshot(path=str(path), full_page=True)
    a = np.asarray(Image.open(path).convert("RGB"))
    colours = len(np.unique(a.reshape(-1, 3)[::7], axis=0))
    assert a.std() > 10 and colours > 500, f"{path.name} looks blank (std {a.std():.1f}, {colours} colours)"
    return path


def open_page(browser, url):
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.goto(url, wait_until="load")
    pg.locator("#query textarea").wait_for(timeout=60_000)
    return pg


def search(pg, text: str) -> None:
    pg.locator("#query textarea").fill(text)
    old = pg.locator("#results img").first.get_attribute("src") if pg.locator("#results img").count() else None
    pg.locator("#search-btn").click()
    pg.wait_for_function("old => { const i = document.querySelector('#results img'); return i && i.src !== old; }",
                         arg=old, timeout=60_000)


def captions(pg) -> list[str]:
    """Each result's caption (what its thumbnail says, and its hover text)."""
    return pg.locator("#results .thumbnail-item").evaluate_all("bs => bs.map(b => b.title)")


def pick_model(pg, name: str) -> None:
    pg.locator("#model input").click()
    pg.locator("ul[role=listbox] li", has_text=name).first.click()
    pg.locator("#model-note", has_text=f"{name}:").wait_for(timeout=60_000)


def open_heatmap(pg, index: int = 0) -> str:
    pg.locator("#results img").nth(index).click()
    pg.locator("#overlay img").wait_for(timeout=60_000)
    return pg.locator("#overlay img").get_attribute("src")


def test_synthetic_refused_upload_keeps_the_results(app_page, browser, shots, tmp_path):
    """A file the model cannot use changes nothing on the page but the notice line, which stays after the
    pop-up has gone; the text box stops at the server's limit."""
    from rsdemo.demo import MAX_QUERY

    _, url = app_page
    pg = open_page(browser, url)
    assert pg.locator("#query textarea").get_attribute("maxlength") == str(MAX_QUERY)
    search(pg, QUERY)
    before = captions(pg)
    heat = open_heatmap(pg)
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"these bytes are not a picture " * 40)
    pg.locator("#upload input[type=file]").set_input_files(str(bad))
    pg.locator("#upload", has_text=re.compile(r"holiday\s*\.png")).wait_for(timeout=30_000)   # its whole name
    label, name = (pg.locator(f"#upload {q}").first.bounding_box() for q in ("label", ".file-preview-holder"))
    assert label["y"] + label["height"] <= name["y"] + 1, "the upload box's label covers the file"
    pg.locator("#image-btn").click()
    notice = pg.locator("#notice")
    pg.wait_for_function("() => document.querySelector('#notice').innerText.trim().startsWith('⚠')",
                         timeout=60_000)
    message = notice.inner_text()
    pg.wait_for_timeout(10_500)   # gradio's pop-up lasts 10 s; the notice line stays
    assert notice.is_visible() and notice.inner_text() == message and "image" in message.lower(), message
    assert captions(pg) == before and pg.locator("#overlay img").get_attribute("src") == heat
    for part in ("#results", "#overlay", "#status"):
        assert "Error" not in pg.locator(part).inner_text(), f"{part} shows an error badge"
    assert "Top 10" in pg.locator("#status").inner_text()
    shoot(pg, tmp_path / "refused.png")
    # the next good search clears the notice
    search(pg, "a red ship next to a pier")
    assert "⚠" not in notice.inner_text()
    pg.close()


def test_synthetic_captions_readable(app_page, browser):
    """Under each thumbnail, not over it: rank, scene and score, whole; the file name on hover."""
    page, url = app_page
    pg = open_page(browser, url)
    search(pg, QUERY)
    hits = page.rsdemo.search_text(QUERY, page.rsdemo.default, 10)
    pg.wait_for_function("n => document.querySelectorAll('#results .caption-label[data-line1]').length === n",
                         arg=len(hits), timeout=30_000)
    boxes = pg.locator("#results .thumbnail-item").evaluate_all("""bs => bs.map(b => {
        const i = b.querySelector('img').getBoundingClientRect(), c = b.querySelector('.caption-label');
        const r = c.getBoundingClientRect(), g = b.getBoundingClientRect();
        return {img: [i.top, i.bottom, i.width, i.height], cap: [r.top, r.bottom, r.right], box: [g.right],
                shown: getComputedStyle(c, '::before').content, title: b.title,
                cut: c.scrollWidth > c.clientWidth + 1 || c.scrollHeight > c.clientHeight + 1};
    })""")
    assert len(boxes) == len(hits)
    for b, h in zip(boxes, hits):
        line = " · ".join([f"#{h['rank']}"] + ([h["label"]] if h["label"] else []) + [f"{h['score']:.3f}"])
        assert json.loads(b["shown"]) == line, b
        assert b["cap"][0] >= b["img"][1] - 1 and b["img"][3] > 60, f"the caption covers the thumbnail: {b}"
        assert not b["cut"] and b["cap"][2] <= b["box"][0] + 1, f"caption cut: {b}"
        assert h["name"] in b["title"] and b["title"].startswith(line)
    pg.close()


def test_synthetic_link_reopens_the_view(app_page, browser):
    """The link under the results reopens the gallery, model, query and results shown."""
    page, url = app_page
    pg = open_page(browser, url)
    other = page.rsdemo.names()[1]
    pick_model(pg, other)
    search(pg, "a red ship next to a pier")
    link = pg.locator("#share textarea, #share input").first.input_value()
    assert link.startswith(url.rstrip("/")) and "q=a+red+ship" in link and f"model={other.replace('/', '%2F')}" in link
    shown = captions(pg)
    pg.close()

    again = browser.new_page(viewport={"width": 1400, "height": 1000})
    again.goto(link, wait_until="load")
    again.locator("#results img").first.wait_for(timeout=60_000)
    assert again.locator("#query textarea").input_value() == "a red ship next to a pier"
    assert other in again.locator("#model input").input_value()
    again.wait_for_function("n => [...document.querySelectorAll('#results .thumbnail-item')].filter(b => b.title)"
                            ".length === n", arg=len(shown), timeout=30_000)
    assert captions(again) == shown
    assert again.locator("#share textarea, #share input").first.input_value() == link
    again.close()


def test_synthetic_search_heatmap_switch_model(app_page, browser, shots):
    """The tour the README's screenshots show: search, a heatmap, another model, Compare, Models."""
    page, url = app_page
    pg = open_page(browser, url)
    search(pg, QUERY)
    assert pg.locator("#results img").count() == 10
    src = open_heatmap(pg)
    assert pg.locator("#map label").count() >= 2
    pg.wait_for_function("() => { const c = document.querySelector('#cooc');"   # the co-occurrence chart drawn
                         " return !c || c.offsetParent === null || c.querySelector('.js-plotly-plot .main-svg'); }",
                         timeout=30_000)
    pg.wait_for_timeout(500)
    shoot(pg, shots / "search.png")

    other = page.rsdemo.names()[1]
    pick_model(pg, other)
    search(pg, "a red ship next to a pier")
    assert open_heatmap(pg) != src
    assert other in pg.locator("#model input").input_value()

    pg.get_by_role("tab", name="Compare").click()
    pg.get_by_role("button", name="Compare", exact=True).click()
    pg.locator("#compare-0 img").first.wait_for(timeout=120_000)
    shoot(pg, shots / "compare.png")

    pg.get_by_role("tab", name="Models").click()
    pg.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    shoot(pg, shots / "models.png")
    from rsdemo import ui
    if ui.section_frame("ucm_grounding") is not None:   # the seed models over seeds, module off, the dual encoder
        table = pg.locator("#grounding-seeds").inner_text()
        assert all(m in table for m in ("amfmn-lite0", "ccnet-lite0", "ssjdn-lite0", "dove-lite0", "dual-lite0"))
        assert "patch_sim" in table and "±" in table
    pg.close()


def test_ucm_page_feels_native(browser, tmp_path, monkeypatch):
    """The app on the 210 UCM images of the AMFMN test split (the `val` ids): a readable title, the gallery's own
    example images, no file-system path in the page; a plane query finds planes."""
    images, captions_dir = real("ucm_images"), real("ucm_captions")
    with open(images / "labels.csv", newline="") as f:
        labels = {Path(row["file"]).stem: row["class"] for row in csv.DictReader(f)}
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path))
    import app

    page = app.build(gallery=str(images), data=f"ucm:{captions_dir}", split="val")
    app.serve(page, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        assert page.rsdemo.gallery.domain == "ucm"
        pg = open_page(browser, page.local_url)
        pg.locator("#card").click()   # the model card and its JSON fold open too: their text is checked below
        pg.locator("#card summary").first.click()
        pg.locator("#card pre, #card code").first.wait_for(timeout=30_000)
        text = pg.locator("body").inner_text()
        assert "UCM-captions · val · 210 images" in text
        for where in (images, captions_dir, images.parent, tmp_path):
            assert str(where) not in text and str(where.name) + "/" not in text, where
        assert not PATH.findall(text), PATH.findall(text)[:5]

        srcs = pg.locator("#example-images img").evaluate_all("is => is.map(i => i.src)")
        stems = [Path(unquote(s).split("?")[0]).stem for s in srcs]
        assert len(stems) >= 3 and all(s in labels for s in stems), stems   # UCM images, not the cartoons
        pg.locator("#example-images img").first.click()
        pg.locator("#results img").first.wait_for(timeout=60_000)
        pg.locator("#upload", has_text=re.compile(rf"\b{stems[0]}\s*\.png")).wait_for(timeout=30_000)
        pg.wait_for_function("() => document.querySelector('#results .thumbnail-item')?.title", timeout=30_000)
        assert stems[0] in captions(pg)[0]   # the gallery image itself comes first

        search(pg, "many airplanes parked at the airport")
        hits = page.rsdemo.search_text("many airplanes parked at the airport", k=5)
        planes = sum(labels.get(Path(h["path"]).stem) == "airplane" for h in hits)
        assert planes >= 3, f"only {planes} of the top 5 are airplane images ({[h['name'] for h in hits]})"
        open_heatmap(pg)
        text = pg.locator("body").inner_text()
        pg.get_by_role("tab", name="Models").click()   # the cards there too
        pg.locator("#cards-table").wait_for(timeout=30_000)
        text += pg.locator("body").inner_text()
        assert "ucm_captions" in text and not PATH.findall(text) and str(images) not in text, PATH.findall(text)[:5]
        shoot(pg, tmp_path / "ucm.png")  # never kept: the pictures are UCM's, not the project's
        pg.close()
    finally:
        page.close()
