"""The bad-input matrix of docs/RELIABILITY.md: runs every case and records what rsdemo actually answers.

    python bench/reliability.py [--write]

Each row is produced by calling the code (open_image, Demo's query check, load_model, Retriever.load,
open_dataset, each weights loader with a code-running pickle), never typed: a changed message changes the doc.
The same cases are asserted in tests/test_bad_inputs.py and tests/test_app_reliability.py.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
DOC = ROOT / "docs" / "RELIABILITY.md"


def outcome(fn) -> str:
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - the message is the row
        msg = str(e).strip()
        kind = type(e).__name__
        return f"refused ({kind}): {msg}" if "\n" not in msg else f"refused ({kind}, several lines!): {msg[:200]}"
    return f"works: {out}" if out is not None else "works"


def _img(p, probe=None):
    from rsdemo.data.dataset import open_image

    def run():
        im = open_image(p)
        a = np.asarray(im).astype(int)
        return f"RGB {im.size[0]}x{im.size[1]}" + (f"; {probe(a)}" if probe else "")
    return run


def _px(a, y, x):
    return "(" + ", ".join(str(v) for v in a[y, x]) + ")"


PROBES = {  # what each accepted case should show, computed from the returned pixels
    "1x1 image": lambda a: f"pixel {_px(a, 0, 0)}",
    "grayscale PNG": lambda a: "R = G = B" if (a[..., 0] == a[..., 2]).all() else "channels differ",
    "CMYK JPEG (pure cyan)": lambda a: f"pixel {_px(a, 4, 4)}",
    "RGBA PNG (top opaque red, bottom transparent)":
        lambda a: f"top {_px(a, 0, 0)}, bottom {_px(a, 3, 3)}: composited on white",
    "16-bit gray TIFF, 0..65535":
        lambda a: f"min {a.min()}, max {a.max()}, mid-range -> {a[32, 0, 0]}: stretched, not clipped",
    "16-bit PNG holding 12-bit data, 0..4095": lambda a: f"min {a.min()}, max {a.max()}: stretched to the full range",
    "float32 RGB TIFF, values in [0, 1]": lambda a: f"min {a.min()}, max {a.max()}: x255",
    "float32 RGB TIFF, values -5..25": lambda a: f"min {a.min()}, max {a.max()}: stretched from min..max",
    "4-band uint16 RS TIFF (R, G, B 0..4095, NIR 65535)":
        lambda a: f"bands 1-3, max {a.max()} (the NIR band left out of the stretch)",
    "4-band TIFF, band-sequential, min-is-black": lambda a: f"bands 1-3, max {a.max()}",
    "4-band TIFF, deflate + predictor, 16 px tiles": lambda a: f"bands 1-3, max {a.max()}",
    "corrupt JPEG pixel data (header intact)": lambda a: "decoded with garbled blocks, as a browser shows it "
                                                         "(libjpeg reports this as a warning, not an error)",
}


def image_rows(tmp: Path) -> list[tuple[str, str]]:
    from PIL import Image

    from badfiles import encoded, noise, png_bomb_header, write_tiff

    jpeg = encoded(Image.fromarray(noise()), "JPEG")
    png = encoded(Image.fromarray(noise()), "PNG")
    sos = jpeg.index(b"\xff\xda")
    garbled = bytearray(jpeg)
    garbled[sos + 20:sos + 320] = np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes()
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0], rgba[:2, :, 3] = 200, 255
    files = {
        "zero-byte file": ("empty.png", b""),
        "text file named .png": ("notes.png", b"just some notes\n" * 20),
        "truncated PNG": ("cut.png", png[:len(png) // 2]),
        "truncated JPEG": ("cut.jpg", jpeg[:len(jpeg) // 2]),
        "corrupt JPEG header": ("bad.jpg", jpeg[:2] + bytes(38) + jpeg[40:]),
        "corrupt JPEG pixel data (header intact)": ("garbled.jpg", bytes(garbled)),
        "PNG header claiming 20000x20000": ("bomb.png", png_bomb_header(20000, 20000)),
        "1x1 image": ("one.png", encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")),
        "grayscale PNG": ("g.png", encoded(Image.fromarray(noise()[..., 0]), "PNG")),
        "palette PNG": ("p.png", encoded(Image.fromarray(noise()).quantize(16), "PNG")),
        "CMYK JPEG (pure cyan)": ("c.jpg", encoded(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "JPEG", quality=100)),
        "RGBA PNG (top opaque red, bottom transparent)": ("a.png", encoded(Image.fromarray(rgba, "RGBA"), "PNG")),
        "16-bit gray TIFF, 0..65535": ("u16.tif", encoded(Image.fromarray(ramp), "TIFF")),
        "16-bit PNG holding 12-bit data, 0..4095": ("12.png", encoded(Image.fromarray(ramp // 16), "PNG")),
    }
    rows = []
    for case, (name, data) in files.items():
        p = tmp / name
        p.write_bytes(data)
        rows.append((case, outcome(_img(p, PROBES.get(case)))))
    big = tmp / "big.png"
    Image.new("RGB", (7072, 7072)).save(big, compress_level=1)
    rows.insert(7, ("50-megapixel PNG (7072x7072)", outcome(_img(big))))
    unit = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    rgbn = np.random.default_rng(0).integers(0, 4096, (40, 56, 4)).astype(np.uint16)
    rgbn[..., 3] = 65535
    rgbn[0, 0, :3], rgbn[0, 1, :3] = 0, 4095
    for case, p in [
        ("float32 RGB TIFF, values in [0, 1]", write_tiff(tmp / "f.tif", unit, photometric=2)),
        ("float32 RGB TIFF, values -5..25", write_tiff(tmp / "f2.tif", unit * 30 - 5, photometric=2)),
        ("4-band uint16 RS TIFF (R, G, B 0..4095, NIR 65535)", write_tiff(tmp / "rgbn.tif", rgbn, photometric=2,
                                                                          extra=0)),
        ("4-band TIFF, band-sequential, min-is-black", write_tiff(tmp / "rgbn2.tif", rgbn, photometric=1, planar=2)),
        ("4-band TIFF, deflate + predictor, 16 px tiles",
         write_tiff(tmp / "rgbn3.tif", rgbn, photometric=2, extra=0, deflate=True, predictor=2, tile=16)),
    ]:
        rows.append((case, outcome(_img(p, PROBES.get(case)))))
    return rows


def text_rows(retriever) -> list[tuple[str, str]]:
    from rsdemo.demo import clean_query

    texts = {"empty": "", "whitespace only": "  \t\n ", "control characters only": "\x00\x07\x1b",
             "10,000 characters": "a" * 10_000, "non-Latin (Chinese)": "跑道旁停着两架白色飞机",
             "emoji": "✈️✈️ 🛫 next to the 🏢",
             "control characters inside words": "planes\x00 on\x07 the\x1b[31m runway"}
    rows = []
    for case, t in texts.items():
        def run(t=t):
            q = clean_query(t)
            hits = retriever.search_text(q, k=5)
            return f"searched as {q[:40]!r}{'...' if len(q) > 40 else ''}, {len(hits)} results"
        rows.append((case, outcome(run)))
    return rows


def model_rows(world, tmp: Path) -> list[tuple[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from rsdemo.checkpoint import load_model

    ck = world["ck"]
    with safe_open(str(ck), "pt") as f:
        meta = json.loads(f.metadata()["rsdemo"])

    def variant(name, edit):
        m = json.loads(json.dumps(meta))
        edit(m)
        save_file(load_file(str(ck)), str(tmp / name), {"rsdemo": json.dumps(m)})
        return tmp / name

    data = ck.read_bytes()
    (tmp / "truncated.safetensors").write_bytes(data[:len(data) // 2])
    (tmp / "corrupt.safetensors").write_bytes(b"\x07" * 4096)
    cases = {
        "unknown model name": "no-such-model",
        "registered model without a checkpoint": "amfmn",
        "empty model name": " ",
        "checkpoint of another model": variant("other.safetensors", lambda m: m.update(
            name="ccnet-slim", config={**m["config"], "arch": "ccnet"})),
        "checkpoint of another embedding size": variant("dim.safetensors",
                                                        lambda m: m["config"].update(embed_dim=64)),
        "truncated checkpoint": tmp / "truncated.safetensors",
        "corrupt checkpoint": tmp / "corrupt.safetensors",
        "missing checkpoint file": tmp / "missing.safetensors",
    }
    rows = []
    for case, arg in cases.items():
        rows.append((case, outcome(lambda a=arg: load_model(a) and None).replace(str(tmp) + "/", "")))
    return rows


def index_rows(world, tmp: Path) -> list[tuple[str, str]]:
    import torch
    from PIL import Image

    from rsdemo.index import Retriever
    from rsdemo.models.factory import create_model

    rows = []
    model = world["model"]

    def fresh(name):
        return Path(shutil.copytree(world["index"], tmp / name))

    rows.append(("missing index folder", outcome(lambda: Retriever.load(tmp / "nowhere", model))))
    d = fresh("nomanifest")
    (d / "manifest.json").unlink()
    rows.append(("index folder without manifest (e.g. a save interrupted)", outcome(lambda: Retriever.load(d, model))))
    torch.manual_seed(1)
    other = create_model("amfmn-slim", embed_dim=32, mvsa_dim=16, word_dim=16, image_size=64)
    rows.append(("index built with other weights", outcome(lambda: Retriever.load(world["index"], other))))
    g = Path(shutil.copytree(world["gallery"], tmp / "g"))
    Retriever.build(model, g, out=tmp / "stale", progress=False)
    (g / "003.png").unlink()
    rows.append(("stale index: a gallery image deleted", outcome(lambda: Retriever.load(tmp / "stale", model))))
    Image.new("RGB", (8, 8)).save(g / "003.png")
    rows.append(("stale index: a gallery image replaced", outcome(lambda: Retriever.load(tmp / "stale", model))))
    return [(c, o.replace(str(tmp) + "/", "").replace(str(world["root"]) + "/", "")) for c, o in rows]


def dataset_rows(tmp: Path) -> list[tuple[str, str]]:
    import rsdemo

    docs = {"no 'images' list": {"dataset": "x"},
            "image without 'filename'": {"images": [{"sentences": [{"raw": "a"}], "split": "train"}]},
            "image without 'sentences'": {"images": [{"filename": "a.tif", "split": "train"}]},
            "a list, not an object": [1, 2], "not JSON": "{not json"}
    rows = []
    for case, doc in docs.items():
        p = tmp / "bad.json"
        p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        rows.append((case, outcome(lambda: rsdemo.open_dataset(f"rsitmd:{p}") and None).replace(str(tmp) + "/", "")))
    return rows


def pickle_rows(tmp: Path) -> list[tuple[str, str]]:
    from badfiles import evil_torch

    from rsdemo.models.backbones import ImageBackbone
    from rsdemo.files import read_state
    from rsdemo.checkpoint import load_model

    marker = tmp / "PWNED"
    evil = evil_torch(tmp / "evil.pt", marker)
    shutil.copy(evil, tmp / "evil.safetensors")
    loaders = {"load_model / rsdemo checkpoint": lambda: load_model(tmp / "evil.safetensors"),
               "CLIP local weights (.pt/.bin)": lambda: read_state(evil),
               "backbone 'pretrained' file (slim, resnet18)": lambda: ImageBackbone("slim", pretrained=str(evil)),
               "backbone 'pretrained' file (efficientnet_lite0)":
                   lambda: ImageBackbone("efficientnet_lite0", pretrained=str(evil))}
    rows = []
    for case, fn in loaders.items():
        o = outcome(fn).replace(str(tmp) + "/", "")
        rows.append((case, o + ("" if not marker.exists() else " -- AND THE CODE RAN")))
    return rows


def world(tmp: Path) -> dict:
    import torch
    from PIL import Image

    from rsdemo.checkpoint import load_model, save
    from rsdemo.data.synthetic import generate
    from rsdemo.index import Retriever
    from rsdemo.models.factory import create_model

    g = tmp / "gallery"
    g.mkdir()
    for i, w in enumerate(generate(12, size=64)):
        Image.fromarray(w.image).save(g / f"{i:03d}.png")
    torch.manual_seed(0)
    ck = save(create_model("amfmn-slim", embed_dim=32, mvsa_dim=16, word_dim=16, image_size=64),
              tmp / "tiny.safetensors")
    model = load_model(ck)
    r = Retriever.build(model, g, out=tmp / "index", progress=False)
    return {"root": tmp, "gallery": g, "ck": ck, "model": model, "retriever": r, "index": tmp / "index"}


def table(title: str, rows) -> str:
    def cell(s):
        return s.replace("|", "\\|").replace("\n", " ")
    return f"**{title}**\n\n| case | what rsdemo does |\n|---|---|\n" + "\n".join(
        f"| {cell(c)} | {cell(o)} |" for c, o in rows)


def matrix() -> str:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "w").mkdir()
        w = world(tmp / "w")
        parts = []
        for title, fn in [
            ("Images: `rsdemo.data.dataset.open_image` (uploads, gallery folders, datasets)",
             lambda t: image_rows(t)),
            ("Query text: the page's check (`rsdemo.demo.clean_query`) then `Retriever.search_text`",
             lambda t: text_rows(w["retriever"])),
            ("Models and checkpoints: `load_model`", lambda t: model_rows(w, t)),
            ("Indexes: `Retriever.load`", lambda t: index_rows(w, t)),
            ("Dataset annotation files: `open_dataset('rsitmd:FILE')`", lambda t: dataset_rows(t)),
            ("A pickle that would run code (os.mkdir) when loaded", lambda t: pickle_rows(t)),
        ]:
            sub = Path(tempfile.mkdtemp(dir=tmp))
            rows = [(c, o.replace(str(ROOT) + "/", "")) for c, o in fn(sub)]
            parts.append(table(title, rows))
    return ("Generated by `python bench/reliability.py --write`, which runs every case; the messages are the ones "
            "users see (the page shows the same text; the CLI prints it as one `rsdemo COMMAND: error: ...` line "
            "and exits 2).\n\n" + "\n\n".join(parts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="write the matrix into docs/RELIABILITY.md")
    a = p.parse_args(argv)
    body = matrix()
    if a.write:
        from bench.load import TITLE
        from bench.report import write_section

        write_section("matrix", body, doc=DOC, title=TITLE)
        print(f"wrote {DOC}")
    else:
        print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
