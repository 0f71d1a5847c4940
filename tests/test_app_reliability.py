"""The running demo page under bad input, path probing, oversized uploads and several users at once.

One app on loopback (app.build + app.serve, the launch settings of `python app.py`), driven with gradio_client
and plain HTTP. After every refused request the app must still answer a normal query.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from .badfiles import encoded, noise, png_bomb_header, write_tiff
    from .fixtures import serve_app
except ImportError:
    from badfiles import encoded, noise, png_bomb_header, write_tiff
    from fixtures import serve_app

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
GALLERY = "synthetic:24:7"
QUERY = "two white planes parked beside the runway"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(page, client, url, a folder added to allowed_paths that holds a link out of it, a file outside)."""
    import app

    outside = tmp_path_factory.mktemp("secret") / "secret.txt"
    outside.write_text("not for the web\n")
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "ok.txt").write_text("served\n")
    (allowed / "link.txt").symlink_to(outside)
    sys.path.insert(0, str(ROOT))
    from bench.load import free_port
    from gradio_client import Client

    with serve_app(GALLERY, tmp_path_factory.mktemp("cache"), server_port=free_port(),
                   allowed_paths=[*app.LAUNCH["allowed_paths"], str(allowed)]) as page:
        yield {"page": page, "client": Client(page.local_url, verbose=False), "url": page.local_url,
               "allowed": allowed, "outside": outside}


def still_answers(client):
    hits = client.predict(QUERY, "", 3, api_name="/search_text")
    assert [h["rank"] for h in hits] == [1, 2, 3]


def refused(client, pattern, *args, api_name):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as e:
        client.predict(*args, api_name=api_name)
    msg = str(e.value)
    assert pattern.lower() in msg.lower(), msg
    assert "Traceback" not in msg and "\n" not in msg.strip()
    still_answers(client)


# ---- text ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "Type a description"),
    ("  \t\n ", "Type a description"),
    ("\x00\x07\x1b", "Type a description"),
    ("a" * 10_000, "10,000 characters long; please keep it under 1,000"),
], ids=["empty", "whitespace", "only control characters", "10,000 characters"])
def test_bad_text_gets_a_message(served, text, message):
    refused(served["client"], message, text, "", 5, api_name="/search_text")


@pytest.mark.parametrize("text", ["跑道旁停着两架白色飞机", "✈️✈️ 🛫 next to the 🏢",
                                  "planes\x00 on\x07 the\x1b[31m runway",
                                  "\u202edrawnur\u202c e\u0301te\u0301 ْمطار"],
                         ids=["non-Latin", "emoji", "control characters", "bidi and combining"])
def test_odd_text_is_searched(served, text):
    hits = served["client"].predict(text, "", 4, api_name="/search_text")
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]


@pytest.mark.parametrize("model, k, message", [("no-such-model", 5, "'no-such-model' has no trained checkpoint"),
                                               ("", 0, "k must be between 1 and 50"),
                                               ("", 10_000, "k must be between 1 and 50")])
def test_bad_model_or_k_gets_a_message(served, model, k, message):
    refused(served["client"], message, QUERY, model, k, api_name="/search_text")


# ---- uploads ---------------------------------------------------------------------------------------------------

def _cmyk(t):
    return encoded(Image.new("CMYK", (32, 32), (200, 0, 0, 0)), "JPEG")


def _rgbn(t):
    return write_tiff(t / "x.tif", np.random.default_rng(0).integers(0, 4096, (32, 32, 4)).astype(np.uint16),
                      photometric=2, extra=0).read_bytes()


def _u16(t):
    return encoded(Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60), "PNG")


def _float(t):
    return write_tiff(t / "f.tif", np.random.default_rng(0).random((32, 32, 3)).astype(np.float32),
                      photometric=2).read_bytes()


UPLOADS = {
    "zero-byte file": ("empty.png", lambda t: b"", "empty file (0 bytes)"),
    "text file": ("notes.png", lambda t: b"hello, not pixels\n" * 40, "not an image file"),
    "truncated PNG": ("cut.png", lambda t: encoded(Image.fromarray(noise()), "PNG")[:900], "truncated or corrupt PNG"),
    "corrupt JPEG": ("bad.jpg", lambda t: b"\xff\xd8\xff\xe0" + bytes(300), "not an image file"),
    "400-megapixel PNG header": ("bomb.png", lambda t: png_bomb_header(20000, 20000),
                                 "image is 400.0 megapixels, over the"),
    "1x1 image": ("one.png", lambda t: encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), None),
    "16-bit PNG": ("u16.png", _u16, None),
    "float TIFF": ("f.tif", _float, None),
    "CMYK JPEG": ("cmyk.jpg", _cmyk, None),
    "palette GIF": ("p.gif", lambda t: encoded(Image.fromarray(noise()).quantize(8), "GIF"), None),
    "RGBA PNG": ("a.png", lambda t: encoded(Image.fromarray(noise()).convert("RGBA"), "PNG"), None),
    "grayscale JPEG": ("g.jpg", lambda t: encoded(Image.fromarray(noise()[..., 0]), "JPEG"), None),
    "4-band 16-bit RS TIFF": ("rgbn.tif", _rgbn, None),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_upload(served, case, tmp_path):
    from gradio_client import handle_file

    name, make, message = UPLOADS[case]
    p = tmp_path / name
    p.write_bytes(make(tmp_path))
    if message is None:
        hits = served["client"].predict(handle_file(str(p)), "", 3, api_name="/search_image")
        assert [h["rank"] for h in hits] == [1, 2, 3]
    else:
        refused(served["client"], f"{name}: {message}", handle_file(str(p)), "", 3, api_name="/search_image")


def test_50_megapixel_upload_refused(served, tmp_path):
    from gradio_client import handle_file

    p = tmp_path / "big.png"
    Image.new("RGB", (7072, 7072), (10, 20, 30)).save(p, compress_level=1)
    refused(served["client"], "big.png: image is 7072x7072 (50.0 megapixels), over the 40-megapixel limit",
            handle_file(str(p)), "", 3, api_name="/search_image")


def test_upload_over_the_size_limit_refused(served, tmp_path):
    """max_file_size=25mb in app.LAUNCH: gradio refuses the upload itself (HTTP 413) before any handler runs."""
    import httpx

    p = tmp_path / "huge.png"
    p.write_bytes(encoded(Image.new("RGB", (8, 8)), "PNG") + os.urandom(26 * 2**20))
    with open(p, "rb") as f:
        r = httpx.post(served["url"] + "gradio_api/upload", files={"files": ("huge.png", f)}, timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "exceeded maximum allowed size of 26214400 bytes" in r.text
    still_answers(served["client"])


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "secret.txt", "link.txt", ""])
def test_explain_only_names_gallery_images(served, name):
    message = "Pick a result first" if not name else "is not an image of this gallery"
    refused(served["client"], message, name, QUERY, "", "", api_name="/explain")


# ---- the file route: only assets/ (and files gradio made) are served ----------------------------------------------

def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def _file_url(served, path, prefix="gradio_api/"):
    return served["url"] + prefix + "file=" + urllib.parse.quote(str(path), safe="/")


def test_assets_are_served(served):
    import app

    asset = sorted(Path(app.ASSETS).rglob("*.png"))[0]
    status, body = _get(_file_url(served, asset))
    assert status == 200 and body == asset.read_bytes()
    ok = served["allowed"] / "ok.txt"
    assert _get(_file_url(served, ok)) == (200, b"served\n")


@pytest.mark.parametrize("what", ["/etc/passwd", "../ out of assets", "app.py (repo, not assets)", "gallery image",
                                  "checkpoint", "symlink in an allowed folder pointing out", "encoded ../",
                                  "without the gradio_api prefix"])
def test_other_paths_are_refused(served, what):
    import app

    page = served["page"]
    gallery_image = page.rsdemo.retriever().paths[0]
    target = {
        "/etc/passwd": "/etc/passwd",
        "../ out of assets": f"{app.ASSETS}/../page.py",   # rsdemo/page.py: a real file next door
        "app.py (repo, not assets)": ROOT / "app.py",
        "gallery image": gallery_image,
        "checkpoint": sorted((ROOT / "rsdemo" / "checkpoints").glob("*.safetensors"))[0],
        "symlink in an allowed folder pointing out": served["allowed"] / "link.txt",
        "encoded ../": None,
        "without the gradio_api prefix": "/etc/passwd",
    }[what]
    if what == "encoded ../":
        url = served["url"] + "gradio_api/file=" + urllib.parse.quote(f"{app.ASSETS}/", safe="/") + "%2e%2e/page.py"
    else:
        url = _file_url(served, target, prefix="" if what.startswith("without") else "gradio_api/")
    status, body = _get(url)
    assert status in (403, 404), (what, status)
    assert b"not for the web" not in body and b"root:" not in body
    still_answers(served["client"])


# ---- several users at once (toy size; bench/load.py runs 32 x 50) -------------------------------------------------

@pytest.mark.parametrize("kind", ["http", "gradio_client"])
def test_concurrent_users_get_their_own_answers(served, kind):
    """Both ways bench/load.py's users talk to the app: Gradio's HTTP API (one session per user, as a browser tab)
    and gradio_client."""
    sys.path.insert(0, str(ROOT))
    from bench.load import run

    res = run(served["url"], GALLERY, clients=3, queries=4, rounds=2, pid=os.getpid(), log=lambda *_: None,
              kind=kind)
    assert res["client"] == kind
    for r in res["rounds"]:
        assert r["errors"] == 0, r["error_examples"]
        assert r["mismatches"] == 0
        assert r["queries"] == 12 and r["p95_s"] > 0
    assert len(res["rss_mib"]) == 3


def test_allocator_is_tamed_where_glibc_is():
    """python app.py limits glibc's heap arenas (memory flat across load rounds) unless told otherwise."""
    import platform

    import app

    env = {k: os.environ.pop(k) for k in ("MALLOC_ARENA_MAX", "RSDEMO_MALLOC") if k in os.environ}
    try:
        assert app.tame_malloc() is (platform.libc_ver()[0] == "glibc")
        os.environ["RSDEMO_MALLOC"] = "glibc"
        assert app.tame_malloc() is False
    finally:
        os.environ.pop("RSDEMO_MALLOC", None)
        os.environ.update(env)


def _handlers(page) -> set[str]:
    return {getattr(f, "name", "") for f in page.fns.values()}


def test_add_folder_not_offered_on_a_space(served, monkeypatch):
    """Events hidden from the API (api_visibility="private") still run when posted to /gradio_api/queue/join,
    so "add a folder on this machine" must not exist at all where strangers reach the page."""
    import app

    monkeypatch.setenv("SPACE_ID", "someone/rsdemo")
    assert "add_folder" not in _handlers(app.build(demo=served["page"].rsdemo))
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("RSDEMO_ALLOW_FOLDERS", "0")
    assert "add_folder" not in _handlers(app.build(demo=served["page"].rsdemo))
    monkeypatch.delenv("RSDEMO_ALLOW_FOLDERS")
    assert "add_folder" in _handlers(app.build(demo=served["page"].rsdemo))  # the check can see it


def test_rsdemo_serve_starts_the_same_page(tmp_path):
    """`rsdemo serve` (the command line) and app.py start one page: same tabs, same named endpoints."""
    import subprocess

    from bench.load import free_port
    from gradio_client import Client

    port = free_port()
    env = {**os.environ, "RSDEMO_CACHE": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "rsdemo", "serve", "--data", GALLERY, "--port", str(port)],
                         env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = []
        for line in p.stdout:
            log.append(line)
            if "page ready" in line:
                break
        assert p.poll() is None, "".join(log[-20:])
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        assert {"/search_text", "/search_image", "/explain", "/models"} <= set(api)
        assert [h["rank"] for h in client.predict(QUERY, "", 3, api_name="/search_text")] == [1, 2, 3]
    finally:
        p.terminate()
        p.wait(30)
