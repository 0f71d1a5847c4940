"""Shared fixtures: the demo page, served once per test session on loopback over a small synthetic gallery."""
import os

import pytest

from fixtures import serve_app

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
APP_GALLERY = "synthetic:60:7"


@pytest.fixture(scope="session")
def app_page(tmp_path_factory):
    """(page, url): app.build over APP_GALLERY, launched the way app.py launches it, closed at the end."""
    with serve_app(APP_GALLERY, tmp_path_factory.mktemp("app-cache")) as page:
        yield page, page.local_url
