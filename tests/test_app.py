"""The demo page, launched for real (loopback) and driven through every named endpoint with gradio_client.

Bad input through the same endpoints (texts, uploads, names) is tests/test_app_reliability.py's matrix."""
import os
import urllib.request

import numpy as np
import pytest
from PIL import Image

from rsdemo.demo import InputError, catalogue



@pytest.fixture(scope="module")
def served(app_page):
    from gradio_client import Client

    page, url = app_page
    return page, Client(url, verbose=False)


def test_page_serves_three_tabs(served):
    page, _ = served
    html = urllib.request.urlopen(page.local_url, timeout=30).read().decode()
    assert "rsdemo" in html
    cfg = page.config
    labels = {c["props"].get("label") for c in cfg["components"] if c["type"] == "tabitem"}
    assert {"Search", "Compare", "Models"} <= labels


def test_named_endpoints(served):
    _, client = served
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/search_text", "/search_image", "/explain", "/models"} <= set(api)


def test_models_listed_best_first(served):
    page, client = served
    models = client.predict(api_name="/models")
    assert [m["name"] for m in models] == page.rsdemo.names()
    mrs = [m["mr"] for m in models]
    assert mrs == sorted(mrs, reverse=True), "the default (first) model is the best by measured mR"


def test_search_text_returns_ranked_gallery_images(served):
    page, client = served
    hits = client.predict("two white planes parked beside the runway", "", 7, api_name="/search_text")
    assert [h["rank"] for h in hits] == list(range(1, 8))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    names = {os.path.basename(p) for p in page.rsdemo.retriever().paths}
    assert {h["name"] for h in hits} <= names


def test_search_text_finds_the_scene(served):
    """A caption of a gallery image, asked verbatim, brings back images of that image's scene near the top."""
    page, client = served
    ds = page.rsdemo.gallery.dataset
    hits_ok = 0
    for i in range(0, len(ds), 12):
        hits = client.predict(ds.records[i].captions[0], "", 5, api_name="/search_text")
        hits_ok += any(h["label"] == ds.records[i].label for h in hits)
    assert hits_ok >= 3, "the default model should find the scene of most of its own captions"


def test_search_image_finds_itself(served):
    page, client = served
    from gradio_client import handle_file

    path = page.rsdemo.retriever().paths[5]
    hits = client.predict(handle_file(path), "", 3, api_name="/search_image")
    assert hits[0]["name"] == os.path.basename(path)
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("which", ["own", "baseline_region_sim", "baseline_gradcam"])
def test_explain_overlay(served, which):
    page, client = served
    hits = client.predict("a red ship", "", 1, api_name="/search_text")
    overlay, info = client.predict(hits[0]["name"], "a red ship", "", "" if which == "own" else which,
                                   api_name="/explain")
    assert which == "own" or info["map"] == which
    assert info["maps"] and info["tokens"] and np.isfinite(info["score"])
    im = np.asarray(Image.open(overlay).convert("RGB"), np.float32)
    assert im.shape[0] >= 64 and im.std() > 5


@pytest.mark.parametrize("model", [m["name"] for m in catalogue()])
def test_every_checkpoint_searches_and_explains(served, model):
    _, client = served
    hits = client.predict("many green trees", model, 3, api_name="/search_text")
    assert len(hits) == 3
    _, info = client.predict(hits[0]["name"], "many green trees", model, "", api_name="/explain")
    assert info["map"] in info["maps"]


def test_app_refuses_missing_gallery(tmp_path):
    import app
    from rsdemo.demo import InputError

    with pytest.raises(InputError, match="not a folder"):
        app.build(gallery=str(tmp_path / "missing"))


def test_checkpoints_from_a_model_repo(tmp_path, monkeypatch):
    """RSDEMO_HF_REPO: checkpoints come from huggingface_hub's download (here a local stand-in folder)."""
    import shutil

    import huggingface_hub

    from rsdemo.demo import checkpoint_dirs
    from rsdemo.checkpoint import CHECKPOINT_DIR

    repo = tmp_path / "repo"
    repo.mkdir()
    for f in ("dove-slim.safetensors", "dove-slim.json"):
        shutil.copy(CHECKPOINT_DIR / f, repo / f"hub-{f}")
    asked = {}

    def fake_download(repo_id, allow_patterns=None, **kw):
        asked["repo"], asked["patterns"] = repo_id, allow_patterns
        return str(repo)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("RSDEMO_HF_REPO", "someone/rsdemo-weights")
    dirs = checkpoint_dirs()
    assert asked["repo"] == "someone/rsdemo-weights" and "*.safetensors" in asked["patterns"]
    names = [m["name"] for m in catalogue(dirs)]
    assert "hub-dove-slim" in names and "dove-slim" in names


def test_galleries_added_folder_is_searchable_and_names_stay_inside(served, tmp_path):
    """A folder added at run time gets its own index; each call names its gallery; unknown ones are refused."""
    page, client = served
    from gradio_client.exceptions import AppError

    import badfiles as bf

    folder = tmp_path / "mine"
    for i in range(6):
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        Image.fromarray(bf.noise(40, 40, seed=i)).save(folder / "sub" / f"p{i}.png")
    (folder / "readme.txt").write_text("not an image")
    g = page.rsdemo.add_gallery(str(folder))
    hits = client.predict("a road", "", 10, g.title, api_name="/search_text")
    assert sorted(h["name"] for h in hits) == [f"sub/p{i}.png" for i in range(6)]
    _, info = client.predict("sub/p3.png", "a road", "", "", g.title, api_name="/explain")
    assert info["maps"]
    with pytest.raises(AppError, match="not an image of this gallery"):  # the other gallery's names don't resolve
        client.predict("sub/p3.png", "a road", "", "", "", api_name="/explain")
    with pytest.raises(AppError, match="No gallery"):
        client.predict("a road", "", 3, "/etc", api_name="/search_text")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    with pytest.raises(InputError, match="no images"):
        page.rsdemo.add_gallery(str(empty))


def test_service_returns_data_the_page_renders(served):
    """Demo (the service) gives data; rsdemo.ui turns it into pixels and charts."""
    from rsdemo import ui

    page, _ = served
    demo = page.rsdemo
    hit = demo.search_text("a red ship", demo.default, 1)[0]
    out = demo.explain(hit["name"], "a red ship", demo.default)
    assert {"image", "heat", "map", "maps", "words", "tokens", "score", "cooccurrence"} <= set(out)
    assert isinstance(out["heat"], np.ndarray) and out["heat"].ndim == 2 and np.isfinite(out["heat"]).all()
    picture = ui.explained_image(out)
    assert picture.size == out["image"].size and np.asarray(picture).std() > 5
    if out["cooccurrence"] is not None:
        c = out["cooccurrence"]
        assert c["matrix"].shape == (len(c["tokens"]), len(c["regions"]))
        assert ui.cooccurrence_figure(c).data[0].z.shape == c["matrix"].shape


def test_service_imports_no_rendering():
    """The layers point down: the service knows nothing of gradio, plotly, the renderer or the hub."""
    import ast
    from pathlib import Path

    import rsdemo.demo

    tree = ast.parse(Path(rsdemo.demo.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    bad = {m for m in names if m.split(".")[0] in ("gradio", "plotly", "huggingface_hub", "pandas")
           or m.lstrip(".") in ("ui", "page", "rsdemo.ui", "rsdemo.page")}
    assert not bad, f"rsdemo.demo imports {bad}"


# ---- the page's wording and plumbing (no page needed) ------------------------------------------------------

def test_link_round_trip():
    """ui.view_link makes the address a view is reopened at; view_params reads it back (any characters)."""
    from rsdemo import ui

    q = "two planes & a road: 50% cover?"
    link = ui.view_link("http://127.0.0.1:7860/?gallery=old#x", "UCM-captions · val · 210 images", "ucm/ccnet-lite0",
                        q, 12)
    assert link.startswith("http://127.0.0.1:7860/?") and "old" not in link
    assert ui.view_params(link) == {"gallery": "UCM-captions · val · 210 images", "model": "ucm/ccnet-lite0",
                                    "q": q, "k": "12"}
    assert ui.view_params("http://127.0.0.1:7860/") == {}


def test_no_paths_in_cards():
    """The page never shows where files lie: paths in cards and commands are cut to their last part."""
    from rsdemo import ui

    text = "rsdemo train --data ucm:../shared/data/ucm_captions --images /work/x/ucm_images ~/y/z http://h/a/b R@1/5"
    assert ui.no_paths(text) == ("rsdemo train --data ucm:…/ucm_captions --images …/ucm_images …/z http://h/a/b "
                                 "R@1/5")
    for m in catalogue():
        m["summary"] = "x"
        md = ui.card_markdown(m)
        assert "| trained on |" in md and "<details>" in md and "../" not in md and "/work" not in md, m["name"]


def test_refused_input_keeps_the_outputs():
    """A page event that refuses its input changes none of its outputs and says why in the notice line."""
    import gradio as gr

    from rsdemo.page import _page

    def refuse(*_):
        raise InputError("The description is 1,200 characters long; please keep it under 1,000.")

    out = _page(refuse, 3)()
    assert len(out) == 4 and all(isinstance(o, type(gr.skip())) for o in out[:3]) and "1,200" in out[3]
    assert _page(lambda: ("a", "b"), 2)() == ("a", "b", "")   # a success clears the notice
    assert _page(lambda: "a", 1)() == ("a", "")


def test_one_text_limit():
    """The text box stops where the server would refuse: one constant."""
    from rsdemo.demo import MAX_QUERY, clean_query

    assert clean_query("x" * MAX_QUERY)
    with pytest.raises(InputError, match=f"under {MAX_QUERY:,}"):
        clean_query("x" * (MAX_QUERY + 1))


def test_gallery_titles_name_no_paths(tmp_path):
    """A gallery is titled by what it is (dataset, split, size), never by its folder's path; a real gallery's
    example images are its own."""
    from fixtures import write_coco

    from rsdemo.demo import Demo, Gallery

    write_coco(tmp_path / "d")
    g = Gallery(str(tmp_path / "d" / "images"), f"ucm:{tmp_path / 'd'}", "train")
    assert g.title == "UCM-captions · train · 3 images"
    assert g.example_images() and all(p.startswith(str(tmp_path / "d" / "images")) for p in g.example_images())
    folder = Gallery(str(tmp_path / "d" / "images"))
    assert folder.title == "images · 5 images" and len(folder.example_images(2)) == 2
    assert Gallery().example_images() == []   # synthetic: the page's packaged examples
    demo = Demo([g, folder])
    (tmp_path / "e" / "images").mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "e" / "images" / f"{i}.png")
    other = demo.add_gallery(str(tmp_path / "e" / "images"))   # same name and size, another folder
    assert other.title == "images · 5 images (2)" and demo.add_gallery(str(tmp_path / "e" / "images")) is other


@pytest.mark.parametrize("arch", __import__("rsdemo.models.registry", fromlist=["x"]).list_archs())
def test_every_architecture_says_what_it_does(arch):
    """One plain sentence per model for the page: no internal notes (sizes, pixels, parentheses)."""
    from rsdemo.models.registry import arch_class

    s = arch_class(arch).summary
    assert 40 < len(s) < 200 and s.endswith(".") and s.count(". ") == 0, s
    assert not any(w in s for w in ("px", "(", "CPU", "lr", "seed")), s


def test_quiet_start():
    """`python app.py` logs rsdemo's stages and every library's warnings, not the libraries' INFO chatter."""
    import logging

    from rsdemo.page import quiet_logs

    root, ours = logging.getLogger(), logging.getLogger("rsdemo")
    old = root.level, ours.level
    try:
        quiet_logs()
        assert logging.getLogger("rsdemo.app").isEnabledFor(logging.INFO)
        for lib in ("faiss.loader", "httpx"):
            assert not logging.getLogger(lib).isEnabledFor(logging.INFO)
            assert logging.getLogger(lib).isEnabledFor(logging.WARNING)
    finally:
        root.setLevel(old[0])
        ours.setLevel(old[1])
