"""The page in a real browser: Debian's chromium driven by Python playwright (never `playwright install`).

The test setup installs chromium from Debian's packages when it is missing. Screenshots go to a temp folder, or
to $RSDEMO_SCREENSHOTS (how the README's pictures are made: RSDEMO_SCREENSHOTS=docs/screenshots python -m pytest
tests/test_browser.py -k synthetic), and each is checked to show a real page, not a blank one.
"""
import csv
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures import real

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False, capture_output=True,
                       timeout=900)
        path = shutil.which("chromium")
    if not path:
        pytest.fail("no chromium: install Debian's package (apt-get install chromium); this test never downloads "
                    "a browser of its own")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    out = Path(os.environ.get("RSDEMO_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


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


def open_heatmap(pg, index: int = 0) -> str:
    pg.locator("#results img").nth(index).click()
    pg.locator("#overlay img").wait_for(timeout=60_000)
    return pg.locator("#overlay img").get_attribute("src")


def changed(pg, old_src: str) -> str:
    pg.wait_for_function("old => { const i = document.querySelector('#overlay img'); return i && i.src !== old; }",
                         arg=old_src, timeout=60_000)
    return pg.locator("#overlay img").get_attribute("src")


def test_synthetic_search_heatmap_switch_model(app_page, browser, shots):
    page, url = app_page
    pg = open_page(browser, url)
    search(pg, "two white planes parked beside the runway")
    assert pg.locator("#results img").count() == 10
    src = open_heatmap(pg)
    maps = pg.locator("#map label").all_inner_texts()
    assert maps and "baseline_gradcam" in maps
    words = pg.locator("#words label").all_inner_texts()
    if words:  # the default model has per-word maps: pick one, the overlay changes
        pg.locator("#words label").nth(min(1, len(words) - 1)).click()
        src = changed(pg, src)
    pg.locator("#map label", has_text="baseline_region_sim").click()
    changed(pg, src)
    shoot(pg, shots / "search.png")

    other = page.rsdemo.names()[1]
    pg.locator("#model input").click()
    pg.locator("ul[role=listbox] li", has_text=other).first.click()
    pg.get_by_text(f"{other}:", exact=False).first.wait_for(timeout=60_000)
    search(pg, "a red ship next to a pier")
    open_heatmap(pg)
    assert other in pg.locator("#model input").input_value()

    pg.get_by_role("tab", name="Compare").click()
    pg.get_by_role("button", name="Compare", exact=True).click()
    pg.locator("#compare-0 img").first.wait_for(timeout=120_000)
    shoot(pg, shots / "compare.png")

    pg.get_by_role("tab", name="Models").click()
    pg.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    shoot(pg, shots / "models.png")
    pg.close()


def test_ucm_airplanes(browser, shots, tmp_path, monkeypatch):
    """The app on the 210 UCM images of the AMFMN test split (the `val` ids): a plane query finds planes."""
    images, captions = real("ucm_images"), real("ucm_captions")
    with open(images / "labels.csv", newline="") as f:
        labels = {row["file"]: row["class"] for row in csv.DictReader(f)}
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path))
    import app

    page = app.build(gallery=str(images), data=f"ucm:{captions}", split="val")
    app.serve(page, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        assert page.rsdemo.gallery.domain == "ucm"
        pg = open_page(browser, page.local_url)
        search(pg, "many airplanes parked at the airport")
        hits = page.rsdemo.search_text("many airplanes parked at the airport", k=5)
        planes = sum(labels.get(Path(h["path"]).name) == "airplane" for h in hits)
        assert planes >= 3, f"only {planes} of the top 5 are airplane images ({[h['name'] for h in hits]})"
        open_heatmap(pg)
        shoot(pg, tmp_path / "ucm.png")  # never kept: the pictures are UCM's, not the project's
        pg.close()
    finally:
        page.close()
