"""Bad and unusual input, through every door: the image loader, the Python API, the CLI and untrusted files.

Each case either works with a checked result or fails with a DataError/ValueError whose message names the
problem; the CLI exits non-zero with one line and no traceback. The app's endpoints are covered in
tests/test_app_reliability.py.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsdemo.data.dataset import DataError, open_image
try:
    from .badfiles import encoded, evil_pickle, evil_torch, noise, png_bomb_header, write_tiff
except ImportError:
    from badfiles import encoded, evil_pickle, evil_torch, noise, png_bomb_header, write_tiff

ROOT = Path(__file__).resolve().parents[1]


# ---- images: what open_image refuses -------------------------------------------------------------------------

def _png(tmp):
    return encoded(Image.fromarray(noise()), "PNG")


def _jpeg(tmp):
    return encoded(Image.fromarray(noise()), "JPEG", quality=90)


def _corrupt_jpeg(tmp):
    b = bytearray(_jpeg(tmp))
    b[2:40] = bytes(38)  # the APP0/quantisation headers zeroed
    return bytes(b)


def _garbled_jpeg(tmp):
    b = bytearray(_jpeg(tmp))
    sos = b.index(b"\xff\xda")  # start of scan: the entropy-coded pixels follow
    b[sos + 20:sos + 320] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    return bytes(b)


def _truncated_tiff(tmp):
    p = write_tiff(tmp / "t.tif", np.zeros((64, 64, 4), np.uint16), photometric=2, extra=0)
    return p.read_bytes()[:3000]  # keeps the header, loses most pixels and the directory


BAD_IMAGES = {
    "zero-byte file": (lambda t: b"", r"empty file \(0 bytes\)"),
    "text file named .png": (lambda t: b"just some notes, not pixels\n" * 20, r"not an image file"),
    "truncated PNG": (lambda t: _png(t)[:len(_png(t)) // 2], r"truncated or corrupt PNG"),
    "truncated JPEG": (lambda t: _jpeg(t)[:len(_jpeg(t)) // 2], r"truncated or corrupt JPEG"),
    "corrupt JPEG header": (_corrupt_jpeg, r"not an image file|corrupt"),
    "truncated TIFF": (_truncated_tiff, r"truncated or corrupt TIFF"),
    "PNG header claiming 400 megapixels": (lambda t: png_bomb_header(20000, 20000),
                                           r"image is 400\.0 megapixels, over the 40-megapixel limit"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_refused(case, tmp_path):
    make, pattern = BAD_IMAGES[case]
    p = tmp_path / "upload.png"
    p.write_bytes(make(tmp_path))
    with pytest.raises(DataError, match=pattern) as e:
        open_image(p)
    msg = str(e.value)
    assert msg.startswith("upload.png: ") and "\n" not in msg


@pytest.fixture(scope="session")
def big_png(tmp_path_factory):
    """A real 50-megapixel PNG (7072 x 7072, compresses to ~150 kB)."""
    p = tmp_path_factory.mktemp("big") / "big.png"
    Image.new("RGB", (7072, 7072), (10, 20, 30)).save(p, compress_level=1)
    return p


def test_50_megapixel_image_refused_before_decoding(big_png, monkeypatch):
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))  # must never be reached
    with pytest.raises(DataError, match=r"7072x7072 \(50\.0 megapixels\), over the 40-megapixel limit"):
        open_image(big_png)
    assert not decoded


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    p = tmp_path / "a.png"
    Image.fromarray(noise(100, 100)).save(p)
    assert open_image(p, max_pixels=10_000).size == (100, 100)
    with pytest.raises(DataError, match="over the 0.009999-megapixel limit"):
        open_image(p, max_pixels=9_999)
    monkeypatch.setenv("RSDEMO_MAX_PIXELS", "5000")
    with pytest.raises(DataError, match="over the 0.005-megapixel limit"):
        open_image(p)


@pytest.mark.parametrize("src, pattern", [("missing.png", "missing.png: no such file"), (".", "is a folder"),
                                          ("/dev/zero", "zero: not a regular file"),
                                          (12, "expected an image file path")])
def test_not_a_file(src, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=pattern):
        open_image(src)


# ---- images: what open_image accepts, and what it makes of them ---------------------------------------------

def rgb(p) -> np.ndarray:
    im = open_image(p)
    assert im.mode == "RGB"
    return np.asarray(im)


def test_one_pixel_image(tmp_path):
    p = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(p)
    assert rgb(p).tolist() == [[[1, 2, 3]]]


def test_corrupt_jpeg_pixels_decode_like_a_browser(tmp_path):
    # damage inside the entropy-coded data is a libjpeg warning, not an error: the image opens with garbled
    # blocks, as in any browser (a damaged header or a truncated file is refused, above)
    p = tmp_path / "g.jpg"
    p.write_bytes(_garbled_jpeg(tmp_path))
    assert rgb(p).shape == (48, 64, 3)


def test_grayscale_palette_and_cmyk(tmp_path):
    a = noise()
    Image.fromarray(a[..., 0], "L").save(tmp_path / "g.png")
    assert (rgb(tmp_path / "g.png") == a[..., :1]).all()
    pal = Image.fromarray(a).quantize(16)
    pal.save(tmp_path / "p.png")
    assert (rgb(tmp_path / "p.png") == np.asarray(pal.convert("RGB"))).all()
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "c.jpg", quality=100)   # pure cyan
    Image.new("CMYK", (8, 8), (0, 0, 0, 255)).save(tmp_path / "k.tif")               # black
    c = rgb(tmp_path / "c.jpg")
    assert c[..., 0].max() < 10 and c[..., 1:].min() > 245
    assert rgb(tmp_path / "k.tif").max() == 0


def test_alpha_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200                 # red
    a[:2, ..., 3] = 255             # top half opaque, bottom half fully transparent
    a[2:, :2, 3] = 128              # half transparent
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    out = rgb(tmp_path / "a.png")
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 3].tolist() == [255, 255, 255]
    assert np.abs(out[2, 0] - [227.4, 127, 127]).max() <= 1   # 50% red over white
    la = Image.fromarray(np.dstack([np.full((4, 4), 50, np.uint8), np.zeros((4, 4), np.uint8)]), "LA")
    la.save(tmp_path / "la.png")
    assert (rgb(tmp_path / "la.png") == 255).all()
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.save(tmp_path / "pt.png", transparency=1)
    assert (rgb(tmp_path / "pt.png") == 255).all()


def test_16bit_stretched_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "full.tif")   # PIL writes I;16
    out = rgb(tmp_path / "full.tif")[..., 0].astype(int)
    assert np.abs(out - np.rint(ramp / 257.0)).max() <= 1
    twelve = (ramp // 16).astype(np.uint16)             # a 12-bit sensor: 0..4095 in 16-bit words
    Image.fromarray(twelve).save(tmp_path / "12.png")
    out = rgb(tmp_path / "12.png")[..., 0]
    assert out.min() == 0 and out.max() == 255 and (np.diff(out.ravel().astype(int)) >= 0).all()
    rgb16 = np.dstack([ramp // 16, ramp // 32, ramp // 64]).astype(np.uint16)
    write_tiff(tmp_path / "rgb16.tif", rgb16, photometric=2)   # PIL alone keeps only the high byte here
    out = rgb(tmp_path / "rgb16.tif").astype(int)
    assert out[..., 0].max() == 255 and np.abs(out[..., 1] - out[..., 0] / 2).max() <= 1


def test_float_tiff(tmp_path):
    unit = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")               # PIL mode F, values in [0, 1]
    assert np.abs(rgb(tmp_path / "unit.tif")[..., 0] - np.rint(unit * 255)).max() <= 1
    refl = np.dstack([unit * 30 - 5, unit, unit]).astype(np.float32)
    refl[0, 0, 0] = np.nan
    write_tiff(tmp_path / "refl.tif", refl, photometric=2)          # float RGB: PIL cannot open it at all
    out = rgb(tmp_path / "refl.tif")
    assert out[0, 0, 0] == 0 and out.max() == 255 and out.min() == 0


@pytest.mark.parametrize("layout", [
    dict(photometric=2, extra=0),                                        # RGB + unspecified 4th band
    dict(photometric=1),                                                 # 4 gray bands (min-is-black)
    dict(photometric=2, extra=0, planar=2),                              # band-sequential
    dict(photometric=2, extra=0, deflate=True, predictor=2, tile=16),    # what GDAL writes with COMPRESS=DEFLATE
    dict(photometric=1, big_endian=True),
])
def test_four_band_rs_tiff_first_three_bands(layout, tmp_path):
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 4096, (40, 56, 4)).astype(np.uint16)
    bands[0, 0, :3] = 0
    bands[0, 1, :3] = 4095
    bands[..., 3] = 65535  # NIR: must not take part in the stretch
    write_tiff(tmp_path / "rgbn.tif", bands, **layout)
    out = rgb(tmp_path / "rgbn.tif")
    want = np.rint(bands[..., :3] / 4095 * 255)
    assert out.shape == (40, 56, 3) and np.abs(out - want).max() <= 1


def test_other_band_counts(tmp_path):
    six = np.random.default_rng(0).integers(0, 256, (8, 8, 6)).astype(np.uint8)
    write_tiff(tmp_path / "six.tif", six)
    assert (rgb(tmp_path / "six.tif") == six[..., :3]).all()
    two = np.random.default_rng(1).integers(0, 1000, (8, 8, 2)).astype(np.int16)   # e.g. two SAR bands
    write_tiff(tmp_path / "two.tif", two)
    out = rgb(tmp_path / "two.tif")
    assert (out[..., 0] == out[..., 2]).all() and out.max() == 255


def test_bytes_file_objects_and_pil(tmp_path):
    a = noise()
    data = encoded(Image.fromarray(a), "PNG")
    assert (np.asarray(open_image(data)) == a).all()
    with open(tmp_path / "x.png", "wb") as f:
        f.write(data)
    with open(tmp_path / "x.png", "rb") as f:
        assert (np.asarray(open_image(f)) == a).all()
    assert open_image(Image.fromarray(a).convert("RGBA")).mode == "RGB"
    with pytest.raises(DataError, match="image: empty file"):
        open_image(b"")


# ---- the Python API: text, models, checkpoints, indexes, datasets --------------------------------------------

@pytest.fixture(scope="module")
def one_thread():
    import torch
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """A tiny untrained model saved as a checkpoint, a 12-image gallery and its saved index."""
    import torch

    from rsdemo.checkpoint import save
    from rsdemo.data.synthetic import generate
    from rsdemo.index import Retriever
    from rsdemo.models.factory import create_model

    root = tmp_path_factory.mktemp("world")
    gallery = root / "gallery"
    gallery.mkdir()
    for i, w in enumerate(generate(12, size=64)):
        Image.fromarray(w.image).save(gallery / f"{i:03d}.png")
    torch.manual_seed(0)
    model = create_model("amfmn-slim", embed_dim=32, mvsa_dim=16, word_dim=16, image_size=64)
    ck = save(model, root / "tiny.safetensors")
    from rsdemo.checkpoint import load_model
    model = load_model(ck)
    r = Retriever.build(model, gallery, out=root / "index", batch_size=12, progress=False)
    return {"root": root, "gallery": gallery, "ck": ck, "model": model, "retriever": r, "index": root / "index"}


ODD_TEXTS = {
    "10,000 characters": "two white planes parked beside the runway " * 239,
    "non-Latin": "跑道旁停着两架白色飞机",
    "emoji": "✈️✈️ 🛫 next to the 🏢",
    "control characters": "planes\x00 on\x07 the\x1b[31m runway\r\n\t",
    "right-to-left and combining": "\u202edrawnur\u202c e\u0301te\u0301 ْمطار",
}


@pytest.mark.parametrize("case", list(ODD_TEXTS))
def test_odd_text_is_searched(case, world):
    hits = world["retriever"].search_text(ODD_TEXTS[case], k=5)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(h["score"]) for h in hits)


@pytest.mark.parametrize("text", ["", "   \t\n", None])
def test_empty_text_refused(text, world):
    with pytest.raises(ValueError, match="empty query"):
        world["retriever"].search_text(text)


def test_image_queries(world, tmp_path):
    r = world["retriever"]
    Image.new("RGB", (1, 1), (90, 120, 60)).save(tmp_path / "one.png")
    assert len(r.search_image(tmp_path / "one.png", k=3)) == 3
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="empty.png: empty file"):
        r.search_image(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        r.search_image(tmp_path / "one.png", k=0)


def _with_meta(world, tmp, name, edit):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(world["ck"]), "pt") as f:
        meta = json.loads(f.metadata()["rsdemo"])
    edit(meta)
    p = tmp / name
    save_file(load_file(str(world["ck"])), str(p), {"rsdemo": json.dumps(meta)})
    return p


def _checkpoint(kind):
    def make(world, tmp):
        data = world["ck"].read_bytes()
        if kind == "other model":
            return _with_meta(world, tmp, "other.safetensors",
                              lambda m: m.update(name="ccnet-slim", config={**m["config"], "arch": "ccnet"}))
        if kind == "other dim":
            return _with_meta(world, tmp, "dim.safetensors",
                              lambda m: m["config"].update(embed_dim=64))
        if kind == "no config":
            return _with_meta(world, tmp, "noconfig.safetensors", lambda m: m.pop("config"))
        p = tmp / f"{kind.replace(' ', '_')}.safetensors"
        p.write_bytes({"truncated": data[:len(data) // 2], "corrupt": b"\x07" * 4096, "empty": b""}[kind])
        return p
    return make


CHECKPOINTS = {
    "other model": r"does not fit model 'ccnet-slim' \(ccnet-slim: unknown option 'mvsa_dim'; valid options: .*use_tam",
    "other dim": r"does not fit model 'amfmn-slim' \(size mismatch for .* and \d+ more\)",
    "no config": r"not an rsdemo checkpoint \(its metadata has no model config\)",
    "truncated": r"truncated.safetensors: unreadable checkpoint \(Error while deserializing header",
    "corrupt": r"corrupt.safetensors: unreadable checkpoint",
    "empty": r"empty.safetensors: unreadable checkpoint",
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_bad_checkpoint_refused(kind, world, tmp_path):
    from rsdemo.checkpoint import load_model

    p = _checkpoint(kind)(world, tmp_path)
    with pytest.raises(ValueError, match=CHECKPOINTS[kind]) as e:
        load_model(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name, pattern", [
    ("no-such-model", r"'no-such-model' is neither a checkpoint file nor a registered model \(amfmn"),
    ("amfmn", r"model 'amfmn' has no trained checkpoint"),
    ("  ", r"no model given"),
    ("missing.safetensors", r"missing.safetensors: checkpoint not found"),
])
def test_unknown_model_refused(name, pattern, monkeypatch, tmp_path):
    from rsdemo.checkpoint import load_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=pattern):
        load_model(name)


def _index_case(kind, world, tmp):
    import shutil

    from rsdemo.index import Retriever
    from rsdemo.models.factory import create_model

    if kind == "missing folder":
        return tmp / "nowhere", world["model"]
    idx = Path(shutil.copytree(world["index"], tmp / "idx"))
    model = world["model"]
    if kind == "no manifest":
        (idx / "manifest.json").unlink()
    elif kind == "corrupt manifest":
        (idx / "manifest.json").write_text('{"format": 1, "model": ')
    elif kind == "other model":
        model = create_model("ccnet-slim")
    elif kind == "other weights":
        import torch
        torch.manual_seed(1)
        model = create_model("amfmn-slim", embed_dim=32, mvsa_dim=16, word_dim=16, image_size=64)
    elif kind == "pickled embeddings":
        np.save(idx / "embeddings.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind in ("image deleted", "image changed", "image added"):
        g = Path(shutil.copytree(world["gallery"], tmp / "g"))
        r = Retriever.build(model, g, out=idx, progress=False)
        assert len(r) == 12
        if kind == "image deleted":
            (g / "003.png").unlink()
        elif kind == "image changed":
            Image.new("RGB", (64, 64)).save(g / "003.png")
        else:
            Image.new("RGB", (64, 64)).save(g / "new.png")
    return idx, model


INDEXES = {
    "missing folder": r"nowhere: no such index folder \(build one with `rsdemo index`\)",
    "no manifest": r"not an index or an incomplete one \(no manifest.json\)",
    "corrupt manifest": r"corrupt manifest",
    "other model": r"index built with model 'amfmn-slim', not 'ccnet-slim'",
    "other weights": r"index built with other weights of 'amfmn-slim'",
    "pickled embeddings": r"embeddings.npy: unreadable \(.*allow_pickle=False",
    "image deleted": r"stale index: .*003.png no longer exists",
    "image changed": r"stale index: .*003.png changed \(\d+ -> \d+ bytes\)",
    "image added": r"stale index: .* now holds 13 image files, the index was built from 12",
}


@pytest.mark.parametrize("kind", list(INDEXES))
def test_missing_or_stale_index_refused(kind, world, tmp_path):
    from rsdemo.index import Retriever

    idx, model = _index_case(kind, world, tmp_path)
    with pytest.raises(ValueError, match=INDEXES[kind]) as e:
        Retriever.load(idx, model)
    assert "\n" not in str(e.value)


DATASETS = {
    "no images list": ({"dataset": "x"}, r"bad.json: top level: missing 'images'"),
    "image without filename": ({"images": [{"sentences": [{"raw": "a"}], "split": "train"}]},
                               r"bad.json: images\[0\]: missing 'filename'"),
    "image without sentences": ({"images": [{"filename": "a.tif", "split": "train"}]},
                                r"bad.json: images\[0\]: missing 'sentences'"),
    "not an object": ([1, 2], r"expected a JSON object with 'images', got list"),
    "not JSON": ("{not json", r"bad.json: invalid JSON at line 1, column 2"),
}


@pytest.mark.parametrize("case", list(DATASETS))
def test_dataset_json_with_missing_fields(case, tmp_path):
    import rsdemo

    doc, pattern = DATASETS[case]
    (tmp_path / "bad.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DataError, match=pattern):
        rsdemo.open_dataset(f"rsitmd:{tmp_path / 'bad.json'}")


# ---- the CLI: non-zero exit, one line, no traceback -------------------------------------------------------------

def _cli_args(case, world, tmp):
    idx, ck = str(world["index"]), str(world["ck"])
    empty = tmp / "empty.png"
    empty.write_bytes(b"")
    bomb = tmp / "bomb.png"
    bomb.write_bytes(png_bomb_header(20000, 20000))
    trunc = tmp / "trunc.safetensors"
    trunc.write_bytes(world["ck"].read_bytes()[:1000])
    (tmp / "bad.json").write_text(json.dumps({"images": [{"filename": "a.tif", "split": "train"}]}))
    return {
        "empty query": (["search", idx, "   "], r"empty query"),
        "empty image": (["search", idx, "--image", str(empty)], r"empty.png: empty file \(0 bytes\)"),
        "50 megapixel... 400 megapixel image": (["search", idx, "--image", str(bomb)], r"400.0 megapixels, over"),
        "missing image": (["search", idx, "--image", str(tmp / "nope.png")], r"nope.png: no such file"),
        "k = 0": (["search", idx, "planes", "--k", "0"], r"k must be a positive integer"),
        "missing index": (["search", str(tmp / "nowhere"), "planes"], r"no such index folder"),
        "unknown model": (["index", "--model", "no-such-model", "--images", str(world["gallery"]), "--out",
                           str(tmp / "i")], r"'no-such-model' is neither a checkpoint file nor a registered model"),
        "truncated checkpoint": (["eval", "--checkpoint", str(trunc), "--data", "synthetic:12"],
                                 r"trunc.safetensors: unreadable checkpoint"),
        "index of another model": (["search", idx, "planes", "--model", "ccnet-slim"],
                                   r"index built with model 'amfmn-slim', not 'ccnet-slim'"),
        "dataset without sentences": (["data-report", f"rsitmd:{tmp / 'bad.json'}"],
                                      r"bad.json: images\[0\]: missing 'sentences'"),
    }[case] if case else None


CLI_CASES = ["empty query", "empty image", "50 megapixel... 400 megapixel image", "missing image", "k = 0",
             "missing index", "unknown model", "truncated checkpoint", "index of another model",
             "dataset without sentences"]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_error_is_one_line(case, world, tmp_path, capfd):
    """In-process (the same main() the console script runs): exit 2, one `rsdemo CMD: error: ...` line."""
    from rsdemo.cli import main

    args, pattern = _cli_args(case, world, tmp_path)
    assert main(args) == 2
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rsdemo {args[0]}: error: "), err
    assert re.search(pattern, lines[0]) and "Traceback" not in err


@pytest.mark.parametrize("case", ["empty image", "dataset without sentences"])
def test_cli_subprocess_error_is_one_line(case, world, tmp_path):
    args, pattern = _cli_args(case, world, tmp_path)
    r = subprocess.run([sys.executable, "-m", "rsdemo", *args], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]) and "Traceback" not in r.stderr, r.stderr


# ---- untrusted files: nothing is ever unpickled ------------------------------------------------------------------

def _load_paths(tmp):
    """Every way rsdemo loads weights or arrays from a file, as callables of a path."""
    import torch

    from rsdemo.index import Retriever
    from rsdemo.models.backbones import ImageBackbone
    from rsdemo.files import read_state
    from rsdemo.checkpoint import load_model
    from rsdemo.models.factory import create_model

    def index_with(path):
        import shutil
        idx = tmp / "idx"
        if idx.exists():
            shutil.rmtree(idx)
        idx.mkdir()
        shutil.copy(path, idx / "embeddings.npy")
        (idx / "manifest.json").write_text(json.dumps({"format": 2, "model": "amfmn-slim", "weights_sha256": "x",
                                                       "dim": 32, "index": {"kind": "flat"}, "paths": [],
                                                       "sizes": [], "skipped": [], "state": None}))
        (idx / "index.faiss").write_bytes(b"")
        model = create_model("amfmn-slim", embed_dim=32, mvsa_dim=16, word_dim=16, image_size=64)
        from rsdemo.files import weights_sha256
        man = json.loads((idx / "manifest.json").read_text())
        man["weights_sha256"] = weights_sha256(model)
        (idx / "manifest.json").write_text(json.dumps(man))
        return Retriever.load(idx, model)

    def resume_with(path):
        from rsdemo.training import TrainArgs, train
        out = tmp / "run"
        out.mkdir(exist_ok=True)
        import shutil
        shutil.copy(path, out / "last.state.pt")
        return train(TrainArgs(model="amfmn-slim", data="synthetic:12", out=str(out), epochs=1, resume=True,
                               progress=False, overrides={"image_size": 64}))

    torch.manual_seed(0)
    return {
        "load_model (.safetensors)": lambda p: load_model(_renamed(p, ".safetensors")),
        "load_model (any other name)": lambda p: load_model(p),
        "CLIP pretrained .pt": lambda p: read_state(_renamed(p, ".pt")),
        "CLIP pretrained .bin": lambda p: read_state(_renamed(p, ".bin")),
        "backbone pretrained (slim)": lambda p: ImageBackbone("slim", pretrained=str(p)),
        "backbone pretrained (resnet18)": lambda p: ImageBackbone("resnet18", pretrained=str(p)),
        "backbone pretrained (efficientnet_lite0)": lambda p: ImageBackbone("efficientnet_lite0", pretrained=str(p)),
        "index embeddings.npy": index_with,
        "training resume state": resume_with,
    }


def _renamed(p, suffix):
    q = p.with_suffix(suffix)
    if q != p:
        q.write_bytes(p.read_bytes())
    return q


LOADERS = ["load_model (.safetensors)", "load_model (any other name)", "CLIP pretrained .pt", "CLIP pretrained .bin",
           "backbone pretrained (slim)", "backbone pretrained (resnet18)", "backbone pretrained (efficientnet_lite0)",
           "index embeddings.npy",
           "training resume state"]


@pytest.mark.parametrize("pickler", ["pickle", "torch.save"])
@pytest.mark.parametrize("loader", LOADERS)
def test_code_running_pickle_refused(loader, pickler, tmp_path, one_thread):
    marker = tmp_path / "PWNED"
    make = evil_pickle if pickler == "pickle" else evil_torch
    if loader == "index embeddings.npy" and pickler == "pickle":   # an .npy of dtype object holds a pickle
        src = tmp_path / "evil.npy"
        from badfiles import Evil  # noqa: PLC0415 - the same payload class
        np.save(src, np.array([Evil(marker)], dtype=object), allow_pickle=True)
    else:
        src = make(tmp_path / "evil.pt", marker)
    with pytest.raises(Exception) as e:
        _load_paths(tmp_path)[loader](src)
    assert not marker.exists(), f"{loader} ran code from a pickle"
    assert isinstance(e.value, ValueError), f"{loader}: {type(e.value).__name__}: {e.value}"
    msg = str(e.value)
    assert re.search(r"refused|unreadable|not an rsdemo checkpoint|allow_pickle|Unsupported|weights_only", msg), msg


# ---- faults: interrupted writes never leave a half file under the final name --------------------------------------
# (training killed with SIGKILL mid-epoch and resumed to the same final metrics: tests/test_train.py,
#  test_sigkill_mid_epoch_then_resume_matches)

def _half_then_fail(real):
    """A writer that writes half of what `real` would, then fails (disk full, power cut, killed thread)."""
    def write(obj, tmp, *a, **kw):
        real(obj, tmp, *a, **kw)
        data = Path(tmp).read_bytes()
        Path(tmp).write_bytes(data[:len(data) // 2])
        raise OSError(28, "No space left on device")
    return write


def _leftovers(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp")]


def test_interrupted_checkpoint_save_keeps_the_old_file(world, tmp_path, monkeypatch):
    import safetensors.torch

    from rsdemo.checkpoint import load_model, save

    path = save(world["model"], tmp_path / "m.safetensors", card={"note": "old"})
    old, old_card = path.read_bytes(), path.with_suffix(".json").read_text()
    monkeypatch.setattr(safetensors.torch, "save_file", _half_then_fail(safetensors.torch.save_file))
    with pytest.raises(OSError, match="No space left"):
        save(world["model"], path, card={"note": "new"})
    assert path.read_bytes() == old and path.with_suffix(".json").read_text() == old_card
    assert not _leftovers(tmp_path)
    assert load_model(path).card == {"note": "old"}


def test_interrupted_index_save_is_refused_not_half_read(world, tmp_path, monkeypatch):
    import shutil

    import faiss

    from rsdemo.index import Retriever

    idx = Path(shutil.copytree(world["index"], tmp_path / "idx"))
    old = {n: (idx / n).read_bytes() for n in ("embeddings.npy", "index.faiss")}
    monkeypatch.setattr(faiss, "write_index", _half_then_fail(faiss.write_index))
    with pytest.raises(OSError):
        world["retriever"].save(idx)
    assert not (idx / "manifest.json").exists(), "the manifest is removed first and written last"
    assert (idx / "index.faiss").read_bytes() == old["index.faiss"], "never a half file under the final name"
    assert not _leftovers(idx)
    with pytest.raises(ValueError, match=r"not an index or an incomplete one \(no manifest.json\); rebuild"):
        Retriever.load(idx, world["model"])


def test_process_killed_mid_write_leaves_old_file(tmp_path):
    """A real SIGKILL between writing and renaming: the final name still holds the old bytes."""
    target = tmp_path / "state.bin"
    target.write_bytes(b"old")
    code = (f"import os, signal\nfrom pathlib import Path\nfrom rsdemo.files import atomic_write\n"
            f"def w(tmp):\n    Path(tmp).write_bytes(b'x' * 1_000_000)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"atomic_write(Path({str(target)!r}), w)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert r.returncode == -9
    assert target.read_bytes() == b"old"


def test_index_build_skips_and_lists_unreadable_images(world, tmp_path):
    import shutil

    from rsdemo.index import Retriever

    g = tmp_path / "g"
    g.mkdir()
    for i in range(3):
        shutil.copy(world["gallery"] / f"{i:03d}.png", g)
    data = (world["gallery"] / "000.png").read_bytes()
    (g / "truncated.png").write_bytes(data[:len(data) // 3])
    (g / "bomb.png").write_bytes(png_bomb_header(20000, 20000))
    (g / "empty.jpg").write_bytes(b"")
    (g / "notes.tif").write_text("not a tiff")
    (g / "dangling.png").symlink_to(tmp_path / "gone.png")
    r = Retriever.build(world["model"], g, out=tmp_path / "idx", progress=False)
    assert len(r) == 3
    reasons = {Path(s["path"]).name: s["reason"] for s in r.manifest["skipped"]}
    assert set(reasons) == {"truncated.png", "bomb.png", "empty.jpg", "notes.tif", "dangling.png"}
    assert "truncated or corrupt PNG" in reasons["truncated.png"]
    assert "400.0 megapixels, over the" in reasons["bomb.png"]
    assert "empty file" in reasons["empty.jpg"]
    assert "no such file" in reasons["dangling.png"]


def test_only_raster_formats_are_decoded(tmp_path):
    # PIL would hand an EPS to Ghostscript; uploads are limited to raster formats
    p = tmp_path / "photo.png"
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(DataError, match="photo.png: not an image file"):
        open_image(p)


def test_tiff_with_too_many_bands_for_its_size_refused(tmp_path):
    p = write_tiff(tmp_path / "bands.tif", np.zeros((2, 2, 200)))   # 200 float64 bands: 6400 bytes for 4 pixels
    with pytest.raises(DataError, match="2x2 with 200 bands of 64-bit samples is too large"):
        open_image(p, max_pixels=100)
    assert open_image(p, max_pixels=1000).size == (2, 2)


def test_exif_orientation_applied(tmp_path):
    im = Image.fromarray(noise(20, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a phone photo taken in portrait
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    assert open_image(tmp_path / "phone.jpg").size == (20, 40)
