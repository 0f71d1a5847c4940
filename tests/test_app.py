"""The demo page starts on the embedded default and serves its page (loopback only)."""
import os
import urllib.request

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def test_app_starts_and_serves(tmp_path, monkeypatch):
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path))
    import app

    demo = app.build("synthetic:24")
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        html = urllib.request.urlopen(demo.local_url, timeout=30).read().decode()
        assert "rsdemo" in html
    finally:
        demo.close()
