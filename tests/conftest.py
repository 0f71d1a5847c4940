"""Shared fixtures: the demo page, served once per test session on loopback over a small synthetic gallery."""
import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
APP_GALLERY = "synthetic:60:7"


@pytest.fixture(scope="session")
def app_page(tmp_path_factory):
    """(page, url): app.build over APP_GALLERY, launched the way app.py launches it, closed at the end."""
    cache = tmp_path_factory.mktemp("app-cache")
    old = os.environ.get("RSDEMO_CACHE")
    os.environ["RSDEMO_CACHE"] = str(cache)
    import app

    page = app.build(data=APP_GALLERY)
    app.serve(page, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield page, page.local_url
    finally:
        page.close()
        if old is None:
            os.environ.pop("RSDEMO_CACHE", None)
        else:
            os.environ["RSDEMO_CACHE"] = old
