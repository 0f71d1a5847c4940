"""Shared fixtures: the demo page, served once per test session on loopback over a small synthetic gallery."""
import os
import shutil
from pathlib import Path

import pytest

from fixtures import serve_app

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
APP_GALLERY = "synthetic:60:7"


@pytest.fixture(scope="session")
def app_page(tmp_path_factory):
    """(page, url): app.build over APP_GALLERY, launched the way app.py launches it, closed at the end."""
    with serve_app(APP_GALLERY, tmp_path_factory.mktemp("app-cache")) as page:
        yield page, page.local_url


# Debian's chromium, never a browser playwright downloads; no sandbox (containers), no network side traffic
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """One chromium for every browser test (tests/test_browser*.py); skips without playwright or chromium."""
    sync = pytest.importorskip("playwright.sync_api")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no chromium: install Debian's package (apt-get install chromium); these tests never "
                    "download a browser of their own")
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    """Where screenshots go: $RSDEMO_SCREENSHOTS (how the README's pictures are made), else a temp folder."""
    out = Path(os.environ.get("RSDEMO_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out
