"""Datasets by name (rsdemo.data.sources) and their downloads, offline: a loopback HTTP server (127.0.0.1 only)
serves a stand-in UC Merced archive and annotation files built here from generated images, with a manifest made
for them. The real manifest is checked against ../shared/data where that is present."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rsdemo
from rsdemo.data import sources
from rsdemo.data.download import FetchError, download
from rsdemo.data.sources import SOURCES, VerifyError, fetch, pixel_sha256, resolve_gallery
from rsdemo.files import file_sha256

try:
    from . import fixtures as fx
except ImportError:
    import fixtures as fx

ROOT = Path(__file__).resolve().parents[1]
# (class, file number) of the stand-in images: ids 1, 2, 102, 104, 2100 (100 x class index + number + 1)
PICKS = [("agricultural", 0), ("agricultural", 1), ("airplane", 1), ("airplane", 3), ("tenniscourt", 99)]
SPLITS = {"train": [1, 102, 2100], "val": [2], "test": [104]}


# ---- a loopback server with Range support ------------------------------------------------------------------------

class Server:
    """Serves `files` (path -> bytes) on 127.0.0.1; records each request's path and Range header. `cut[path] = n`
    makes the next answer for path stop after n bytes of the body (the connection drops); `no_range` ignores
    Range headers (answers 200 with the whole file)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None]] = []
        self.cut: dict[str, int] = {}
        self.no_range = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                owner.log.append((self.path, rng))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not owner.no_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Connection", "close")
                self.end_headers()
                stop = owner.cut.pop(self.path, None)
                chunk = body[start:] if stop is None else body[start:start + stop]
                self.wfile.write(chunk)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.log if p == path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_url(path: str = "/x") -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


# ---- a stand-in dataset: generated images, generated captions, its own manifest ----------------------------------

def _image(seed: int, size=(24, 20)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _tif(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="TIFF")
    return buf.getvalue()


def standin(tmp_path: Path, corrupt: str | None = None):
    """(files to serve: name -> bytes, manifest path). `corrupt` names a Land Use file whose served pixels differ
    from the manifest's."""
    from rsdemo.data.labels import UCM_CLASSES

    images, sizes, zbuf = {}, {}, io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("UCMerced_LandUse/readme.txt", "stand-in")
        z.writestr("__MACOSX/UCMerced_LandUse/Images/._x", "junk")
        z.writestr("../evil.tif", "outside")   # never unpacked: not in the layout
        for k, (c, n) in enumerate(PICKS):
            i = 100 * UCM_CLASSES.index(c) + n + 1
            arr = _image(i)
            images[str(i)] = pixel_sha256(io.BytesIO(_tif(arr)))[0]
            sizes[str(i)] = [arr.shape[1], arr.shape[0]]
            name = f"{c}/{c}{n:02d}.tif"
            if name == corrupt:
                arr = arr.copy()
                arr[0, 0, 0] ^= 1   # one bit of one pixel
            z.writestr(f"UCMerced_LandUse/Images/{name}", _tif(arr))
    files = {"UCMerced_LandUse.zip": zbuf.getvalue()}
    for split, ids in SPLITS.items():
        coco = {"images": [{"id": i, "file_name": f"{i}.tif"} for i in ids],
                "annotations": [{"image_id": i, "id": 10 * i + j, "caption": f"stand-in caption {j} of {i} ."}
                                for i in ids for j in range(5)]}
        files[f"ucm_captions/data_{split}_UCM.json"] = json.dumps(coco).encode()
    man = {"dataset": "ucm", "classes": list(UCM_CLASSES), "size": [256, 256], "sizes": sizes, "images": images,
           "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)}
                     for n, b in files.items() if n.endswith(".json")}}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(man))
    return files, path


def entry(server: Server, manifest: Path, mirrors=None) -> sources.Source:
    """The registry's ucm entry pointed at the loopback server (and `mirrors` tried before it)."""
    first = list(mirrors or [])

    def urls(name):
        return tuple(first) + (server.url("/" + name),)

    src = SOURCES["ucm"]
    return replace(src, manifest=manifest, archive=replace(src.archive, urls=urls(src.archive.name)),
                   annotations=tuple(replace(r, urls=urls(r.name)) for r in src.annotations))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    c = tmp_path / "cache"
    monkeypatch.setenv("RSDEMO_CACHE", str(c))
    monkeypatch.setenv("RSDEMO_NET_TIMEOUT", "5")
    return c


def serve(server, files):
    server.files.update({"/" + n: b for n, b in files.items()})


# ---- the tests ---------------------------------------------------------------------------------------------------

def test_fetch_verifies_and_opens_by_name(server, cache, tmp_path, monkeypatch):
    files, man = standin(tmp_path)
    serve(server, files)
    src = entry(server, man)
    seen = []
    root = fetch(src, progress=lambda done, total, what: seen.append((what, done, total)))
    assert root == cache / "datasets" / "ucm"
    img = root / "UCMerced_LandUse" / "Images"
    assert sorted(p.relative_to(img).as_posix() for p in img.rglob("*.tif")) == sorted(
        f"{c}/{c}{n:02d}.tif" for c, n in PICKS)
    assert not (root / "UCMerced_LandUse.zip").exists()            # unpacked, verified, deleted
    assert not (cache.parent / "evil.tif").exists() and not list(root.rglob("*evil*"))
    assert {w for w, _, _ in seen} >= {"UCMerced_LandUse.zip", "data_train_UCM.json", "verify images"}
    assert ("verify images", len(PICKS), len(PICKS)) in seen
    # a second start makes no request and decodes nothing (the stamp of verified files)
    n = len(server.log)
    monkeypatch.setattr(sources, "pixel_sha256", lambda p: pytest.fail("decoded again"))
    assert fetch(src) == root and len(server.log) == n
    # by name, from Python and for the page
    monkeypatch.setitem(SOURCES, "ucm", src)
    ds = rsdemo.open_dataset("ucm")
    assert len(ds) == 5 and ds.split_counts() == {"train": 3, "val": 1, "test": 1}
    assert {r.filename: r.label for r in ds.records}["104.tif"] == "airplane"
    assert ds.image_path(ds.records.index(next(r for r in ds.records if r.filename == "2100.tif"))) == \
        img / "tenniscourt" / "tenniscourt99.tif"
    assert ds[0].image.size == (24, 20)
    images, data, split = resolve_gallery("ucm")
    assert (images, data, split) == (str(img), "ucm", "test")
    assert resolve_gallery("ucm:all")[2] is None and resolve_gallery("ucm", split="val")[2] == "val"
    g = rsdemo.Gallery(*resolve_gallery("ucm"))
    assert len(g.dataset) == 1 and g.domain == "ucm" and g.folder == str(img)  # names below the class folders


def test_two_fetches_at_once_download_once(server, cache, tmp_path):
    files, man = standin(tmp_path)
    serve(server, files)
    src, out = entry(server, man), []
    threads = [threading.Thread(target=lambda: out.append(fetch(src, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [cache / "datasets" / "ucm"] * 2
    assert len(server.ranges("/UCMerced_LandUse.zip")) == 1


def test_not_names_pass_through(tmp_path):
    assert resolve_gallery(None) == (None, None, None)
    assert resolve_gallery(str(tmp_path), "ucm:x", "val") == (str(tmp_path), "ucm:x", "val")
    (tmp_path / "ucm").mkdir()
    os.chdir(tmp_path)  # a folder called ucm in the working directory stays a folder
    try:
        assert resolve_gallery("ucm") == ("ucm", None, None)
    finally:
        os.chdir(ROOT)


def test_corrupted_image_is_named_and_not_used(server, cache, tmp_path):
    files, man = standin(tmp_path, corrupt="airplane/airplane03.tif")
    serve(server, files)
    with pytest.raises(VerifyError) as e:
        fetch(entry(server, man), progress=False)
    msg = str(e.value)
    assert "airplane/airplane03.tif" in msg and "decoded pixels differ" in msg and "\n" not in msg
    assert [Path(f).name for f in e.value.files] == ["airplane03.tif"]
    root = cache / "datasets" / "ucm"
    assert not (root / "UCMerced_LandUse").exists()   # nothing left that a later start could use unchecked
    assert not list(root.glob(".*tmp"))


def test_corrupted_annotation_file_is_named(server, cache, tmp_path):
    files, man = standin(tmp_path)
    files["ucm_captions/data_val_UCM.json"] = files["ucm_captions/data_val_UCM.json"].replace(b"caption", b"captain")
    serve(server, files)
    with pytest.raises(VerifyError, match=r"data_val_UCM\.json.*sha256.*differs"):
        fetch(entry(server, man), progress=False)
    assert not (cache / "datasets" / "ucm" / "ucm_captions" / "data_val_UCM.json").exists()


def test_hand_placed_folder_is_checked_in_place(server, cache, tmp_path):
    files, man = standin(tmp_path)
    serve(server, {n: b for n, b in files.items() if n.endswith(".json")})  # the archive is not served
    root = cache / "datasets" / "ucm"
    with zipfile.ZipFile(io.BytesIO(files["UCMerced_LandUse.zip"])) as z:
        for n in z.namelist():
            if n.startswith("UCMerced_LandUse/Images/"):
                z.extract(n, root)
    # one file edited by hand after unpacking: named, never used
    bad = root / "UCMerced_LandUse/Images/agricultural/agricultural01.tif"
    bad.write_bytes(_tif(_image(7)))
    with pytest.raises(VerifyError, match="agricultural01.tif"):
        fetch(entry(server, man), progress=False)
    bad.write_bytes(_tif(_image(2)))   # id 2's real pixels
    assert fetch(entry(server, man), progress=False) == root


def test_interrupted_download_resumes_with_range(server, cache, tmp_path):
    files, man = standin(tmp_path)
    serve(server, files)
    size = len(files["UCMerced_LandUse.zip"])
    half = size // 2
    server.cut["/UCMerced_LandUse.zip"] = half   # the first answer drops after half the bytes
    fetch(entry(server, man), progress=False)
    assert server.ranges("/UCMerced_LandUse.zip") == [None, f"bytes={half}-"]
    assert (cache / "datasets/ucm/UCMerced_LandUse/Images/airplane/airplane01.tif").is_file()


def test_part_left_by_an_earlier_run_is_continued(server, tmp_path):
    body = bytes(range(256)) * 400
    server.files["/f.bin"] = body
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(body[:1000])
    (tmp_path / "f.bin.part.url").write_text(server.url("/f.bin"))
    assert download([server.url("/f.bin")], dest, hashlib.sha256(body).hexdigest(), progress=False) == \
        server.url("/f.bin")
    assert dest.read_bytes() == body and server.ranges("/f.bin") == ["bytes=1000-"]
    assert not (tmp_path / "f.bin.part").exists() and not (tmp_path / "f.bin.part.url").exists()
    # a part written from another URL is not continued; a server that ignores Range is read from the start
    server.files["/g.bin"] = body
    (tmp_path / "g.bin.part").write_bytes(b"x" * 1000)
    (tmp_path / "g.bin.part.url").write_text("http://elsewhere/g.bin")
    download([server.url("/g.bin")], tmp_path / "g.bin", hashlib.sha256(body).hexdigest(), progress=False)
    assert server.ranges("/g.bin") == [None]
    server.no_range = True
    (tmp_path / "h.bin.part").write_bytes(body[:1000])
    (tmp_path / "h.bin.part.url").write_text(server.url("/h.bin"))
    server.files["/h.bin"] = body
    download([server.url("/h.bin")], tmp_path / "h.bin", hashlib.sha256(body).hexdigest(), progress=False)
    assert (tmp_path / "h.bin").read_bytes() == body


def test_dead_first_mirror(server, cache, tmp_path):
    files, man = standin(tmp_path)
    serve(server, files)
    dead = dead_url()
    fetch(entry(server, man, mirrors=[dead]), progress=False)
    assert (cache / "datasets/ucm/ucm_captions/data_test_UCM.json").is_file()
    # a mirror that answers with a wrong file is skipped too
    other = Server()
    try:
        other.files["/x.json"] = b"not it"
        body = files["ucm_captions/data_train_UCM.json"]
        server.files["/x.json"] = body
        used = download([other.url("/x.json"), server.url("/x.json")], tmp_path / "x.json",
                        hashlib.sha256(body).hexdigest(), progress=False)
        assert used == server.url("/x.json") and (tmp_path / "x.json").read_bytes() == body
    finally:
        other.close()


def test_mirror_with_a_wrong_archive_is_skipped(server, cache, tmp_path):
    files, man = standin(tmp_path)
    (tmp_path / "bad").mkdir()
    bad, _ = standin(tmp_path / "bad", corrupt="agricultural/agricultural00.tif")
    serve(server, files)
    other = Server()
    try:
        other.files["/UCMerced_LandUse.zip"] = bad["UCMerced_LandUse.zip"]
        root = fetch(entry(server, man, mirrors=[other.url("/UCMerced_LandUse.zip")]), progress=False)
        assert (root / "UCMerced_LandUse/Images/agricultural/agricultural00.tif").is_file()
        # the only other mirror does not answer: the mismatch seen is what gets reported
        for f in (root / "UCMerced_LandUse", root / "verified.json"):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        with pytest.raises(VerifyError, match=r"agricultural00\.tif: decoded pixels differ"):
            src = entry(server, man)
            fetch(replace(src, archive=replace(src.archive, urls=(other.url("/UCMerced_LandUse.zip"),
                                                                  dead_url("/UCMerced_LandUse.zip")))),
                  progress=False)
        assert not (root / "UCMerced_LandUse.zip").exists()
    finally:
        other.close()
    # an archive put there by hand that is not a zip: named, with what to do
    (root / "UCMerced_LandUse.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(VerifyError, match=r"UCMerced_LandUse\.zip: not a readable zip.*delete it"):
        fetch(entry(server, man), progress=False)


def test_no_mirror_says_what_to_fetch_by_hand(cache, tmp_path):
    _, man = standin(tmp_path)
    src = SOURCES["ucm"]
    deadbase = dead_url("")
    src = replace(src, manifest=man,
                  archive=replace(src.archive, urls=(deadbase + "/a.zip", dead_url("/b.zip"))),
                  annotations=tuple(replace(r, urls=(deadbase + "/" + r.name,)) for r in src.annotations))
    t = time.perf_counter()
    with pytest.raises(FetchError) as e:
        fetch(src, progress=False)
    assert time.perf_counter() - t < 10
    msg = str(e.value)
    root = cache / "datasets" / "ucm"
    assert "\n" not in msg and "no mirror delivered them" in msg
    for name in ("UCMerced_LandUse.zip", "data_train_UCM.json", "data_val_UCM.json", "data_test_UCM.json"):
        assert name in msg
    assert str(root) in msg and str(root / "ucm_captions") in msg
    assert src.archive.page in msg and src.annotations[0].page in msg
    # the first host that did not answer is not asked again for the other files
    assert sum(f[1] == "host did not answer earlier" for f in e.value.failures) >= 2


def test_registry_and_manifest_shape():
    src = SOURCES["ucm"]
    man = sources.load_manifest(src)
    assert len(man["images"]) == 2100 and len(man["classes"]) == 21
    assert set(man["files"]) == {r.name for r in src.annotations}
    assert all(len(h) == 64 for h in man["images"].values())
    assert sources.image_ids(man)["108"] == "airplane/airplane07.tif"
    # hashes and names only: no caption text, no pixels
    text = src.manifest.read_text()
    assert "caption ." not in text and len(text) < 300_000
    for r in src.annotations + (src.archive,):
        assert r.urls and all(u.startswith(("http://", "https://")) for u in r.urls) and r.page


@pytest.mark.slow
def test_committed_manifest_matches_the_reference_images():
    images = fx.real("ucm_images")
    shared = fx.shared_data()
    man = sources.load_manifest("ucm")
    found = {p.stem: p for p in images.glob("*.webp")}
    assert sources.verify_images(man, found) == []
    assert len(found) == 2100
    for name, want in man["files"].items():
        assert file_sha256(shared / name) == want["sha256"]


@pytest.mark.parametrize("how", ["flag", "space variable"])
def test_app_offline_fails_in_one_line(how, tmp_path):
    """`python app.py --gallery ucm` (or RSDEMO_GALLERY=ucm, as on a Space) with no network: exit 2, one line
    naming the files to fetch by hand and where they go."""
    env = {**os.environ, "RSDEMO_CACHE": str(tmp_path), "RSDEMO_NET_TIMEOUT": "3", "GRADIO_ANALYTICS_ENABLED": "False",
           "OMP_NUM_THREADS": "1"}
    env.pop("RSDEMO_GALLERY", None)
    args = ["--gallery", "ucm"]
    if how == "space variable":
        env["RSDEMO_GALLERY"], args = "ucm", []
    p = subprocess.run([sys.executable, "app.py", *args, "--port", "0"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr and len(err) == 1, p.stderr[-2000:]
    for name in ("UCMerced_LandUse.zip", "data_train_UCM.json", str(tmp_path / "datasets" / "ucm")):
        assert name in err[0]
