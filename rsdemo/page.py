"""The demo page (Gradio): search an aerial gallery by text or image, see why a model matched, compare models.

A shell on purpose: every action is one call into rsdemo.demo (the service, usable from Python too) whose result
rsdemo.ui renders; this module only lays the page out, wires its events and launches it. `rsdemo serve` and
app.py (the Hugging Face Spaces entry point) both start it through `main`:
`[--gallery DIR] [--data SPEC] [--split NAME] [--host H] [--port N]`; on a Space the same options come from
RSDEMO_GALLERY / RSDEMO_DATA / RSDEMO_SPLIT (RSDEMO_HF_REPO / RSDEMO_CHECKPOINTS: where the checkpoints are).
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from . import ui  # noqa: E402
from .demo import MAX_K, Demo, Gallery, InputError, read_image  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"   # example images (package data; the only files served)
log = logging.getLogger("rsdemo.app")
COMPARE_SLOTS = 4
CSS = """
.rs-title h1 {margin-bottom: 0}
.rs-note {font-size: 0.9em; opacity: 0.8}
"""


def _safe(fn):
    """User mistakes become a message in the page; anything else is logged here and shown as one line."""
    @functools.wraps(fn)  # gradio reads the signature (SelectData, Progress) through __wrapped__
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - the page must keep serving whatever went wrong
            log.exception("request failed")
            raise gr.Error(f"Sorry, that failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                           print_exception=False) from None
    return run


def example_images() -> list[str]:
    return sorted(str(p) for p in (ASSETS / "examples").glob("*.png"))


def _file(file):
    return getattr(file, "name", file)


def _cleared():
    """A new result list: the maps of the last one no longer apply."""
    return None, None, "", "", gr.update(choices=[], value=None), gr.update(choices=[], value=None, visible=False)


class Actions:
    """The page's event handlers and named API: each one call into the Demo, rendered with rsdemo.ui."""

    def __init__(self, demo: Demo):
        self.demo = demo

    def gallery_note(self, gallery=None) -> str:
        return ui.gallery_note(self.demo.get_gallery(gallery).title, len(self.demo.retriever(None, gallery)))

    def model_note(self, name: str) -> str:
        return ui.model_note(self.demo.info(name))

    def _found(self, hits, what, model, gallery):
        state = {"hits": hits, "model": model, "gallery": gallery}
        n = len(self.demo.retriever(model, gallery))
        return (ui.hit_items(hits), state, ui.status(len(hits), n, what, model), *_cleared())

    def search(self, query, model, k, gallery, progress=gr.Progress(track_tqdm=True)):
        hits = self.demo.search_text(query, model, k, gallery)
        return self._found(hits, f"“{query.strip()}”", model, gallery)

    def search_by_image(self, file, model, k, gallery, progress=gr.Progress(track_tqdm=True)):
        return self._found(self.demo.search_image(_file(file), model, k, gallery), "your image", model, gallery)

    def preview(self, file):
        return None if file is None else read_image(_file(file))

    def _shown(self, out, name, model):
        return ui.explained_image(out), ui.cooccurrence_figure(out["cooccurrence"]), ui.explain_note(name, model, out)

    def select(self, state, query, evt: gr.SelectData):
        if not state or not state.get("hits"):
            raise InputError("Run a search first.")
        if not (query or "").strip():
            raise InputError("Type a description too: the maps show where the model finds the words.")
        name = state["hits"][evt.index]["name"]
        out = self.demo.explain(name, query, state["model"], gallery=state["gallery"])
        return (*self._shown(out, name, state["model"]), name, gr.update(choices=out["maps"], value=out["map"]),
                gr.update(choices=out["words"], value=None, visible=bool(out["words"])))

    def rechoose(self, map_name, word, name, query, state):
        if not name or not state:
            raise InputError("Pick a result first.")
        out = self.demo.explain(name, query, state["model"], map=map_name, word=word or None,
                                gallery=state["gallery"])
        return self._shown(out, name, state["model"])

    def rechoose_map(self, map_name, name, query, state):
        return self.rechoose(map_name, None, name, query, state)

    def pick_example(self, evt: gr.SelectData):
        return example_images()[evt.index]

    def model_changed(self, model, gallery, progress=gr.Progress(track_tqdm=True)):
        self.demo.retriever(model, gallery)  # builds the index on first use, with a progress bar
        return self.model_note(model)

    def gallery_changed(self, gallery, progress=gr.Progress(track_tqdm=True)):
        best = self.demo.default_for(gallery)
        self.demo.retriever(best, gallery)  # a new folder is indexed here, once, with a progress bar
        qs = self.demo.get_gallery(gallery).example_queries()
        return (gr.update(choices=ui.model_choices(self.demo.models_for(gallery)), value=best),
                self.model_note(best), self.gallery_note(gallery), gr.update(samples=[[q] for q in qs]), [], {},
                "", *_cleared())

    def add_folder(self, folder, gallery_now, progress=gr.Progress(track_tqdm=True)):
        g = self.demo.add_gallery(folder)
        self.demo.retriever(None, g.title)
        return gr.update(choices=list(self.demo.galleries), value=g.title), f"Added {g.title}."

    def compare(self, query, models, k, gallery, progress=gr.Progress(track_tqdm=True)):
        models = list(models or [])
        if not 2 <= len(models) <= COMPARE_SLOTS:
            raise InputError(f"Choose 2 to {COMPARE_SLOTS} models to compare.")
        outs = []
        for i in range(COMPARE_SLOTS):
            if i < len(models):
                hits = self.demo.search_text(query, models[i], k, gallery)
                ex = self.demo.explain(hits[0]["name"], query, models[i], gallery=gallery) if hits else None
                outs += [gr.update(visible=True), f"### {models[i]}\n{self.model_note(models[i])}",
                         ui.hit_items(hits), ui.explained_image(ex) if ex else None]
            else:
                outs += [gr.update(visible=False), "", [], None]
        return outs

    def card(self, name):
        return self.demo.info(name)["card"]

    # ---- the named API (gradio_client): JSON in, JSON out -----------------------------------------------------
    def search_text(self, query, model, k, gallery):
        return ui.public_hits(self.demo.search_text(query, model or None, 10 if k is None else k, gallery or None))

    def search_image(self, file, model, k, gallery):
        return ui.public_hits(self.demo.search_image(_file(file), model or None, 10 if k is None else k,
                                                     gallery or None))

    def explain(self, name, query, model, map_name, gallery):
        out = self.demo.explain(name, query, model or None, map=map_name or None, gallery=gallery or None)
        return ui.explained_image(out), {k: out[k] for k in ("map", "maps", "words", "tokens", "score")}

    def models(self, gallery):
        return [{k: m[k] for k in ("name", "description", "mr", "data")}
                for m in self.demo.models_for(gallery or None)]


def build(gallery: str | None = None, data: str | None = None, split: str | None = None,
          demo: Demo | None = None, allow_folders: bool | None = None) -> gr.Blocks:
    """The page (default gallery: the synthetic demo gallery, or `gallery` with its `data`). The default model's
    index is ready before this returns, so the first query is answered at once. allow_folders: offer "add a
    folder on this machine" (default: folders_allowed())."""
    if demo is None:
        galleries = [Gallery(gallery, data, split)]
        if gallery or data:  # the synthetic demo gallery stays one click away
            galleries.append(Gallery())
        demo = Demo(galleries)
    if allow_folders is None:
        allow_folders = folders_allowed()
    t = time.perf_counter()
    demo.warm()
    log.info("default model %s and its index ready in %.1f s", demo.default, time.perf_counter() - t)
    queries = demo.gallery.example_queries()
    act = Actions(demo)
    with gr.Blocks(title="rsdemo: remote-sensing image-text retrieval", delete_cache=(3600, 3600)) as page:
        gr.Markdown("# rsdemo: remote-sensing image–text retrieval", elem_classes="rs-title")
        gallery_md = gr.Markdown(act.gallery_note(), elem_classes="rs-note")
        hits_state, name_state = gr.State({}), gr.State("")
        with gr.Tabs():
            with gr.Tab("Search", id="search"):
                with gr.Row():
                    gallery = gr.Dropdown(list(demo.galleries), value=demo.gallery.title, label="gallery", scale=2,
                                          elem_id="gallery")
                    model = gr.Dropdown(ui.model_choices(demo.models_for(None)), value=demo.default, label="model",
                                        scale=2, elem_id="model")
                    k = gr.Slider(1, MAX_K, value=10, step=1, label="results", scale=1)
                if allow_folders:
                    with gr.Accordion("add a folder of images on this machine", open=False):
                        with gr.Row():
                            folder = gr.Textbox(label="folder", placeholder="/path/to/images", scale=4)
                            add = gr.Button("Index and add", scale=1)
                        added = gr.Markdown()
                model_md = gr.Markdown(act.model_note(demo.default))
                with gr.Row():
                    with gr.Column(scale=2):
                        query = gr.Textbox(label="describe the scene", lines=2, max_length=2000,
                                           placeholder=queries[0] if queries else "", elem_id="query")
                        go = gr.Button("Search", variant="primary", elem_id="search-btn")
                        query_examples = gr.Examples([[q] for q in queries], [query], label="example queries")
                        with gr.Accordion("…or search by image", open=True):
                            with gr.Row():
                                upload = gr.File(label="upload (PNG, JPEG, TIFF, WebP)", height=140,
                                                 file_types=["image", ".tif", ".tiff"], elem_id="upload")
                                seen = gr.Image(label="as the model sees it", height=140, interactive=False)
                            examples = gr.Gallery(example_images(), label="example images (click one)", columns=6,
                                                  height=100, allow_preview=False, elem_id="example-images")
                            go_image = gr.Button("Search by image", elem_id="image-btn")
                    with gr.Column(scale=3):
                        results = gr.Gallery(label="results (rank · score · image)", columns=5, height=430,
                                             allow_preview=False, elem_id="results", object_fit="cover")
                        status = gr.Markdown()
                with gr.Row():
                    with gr.Column(scale=2):
                        heat = gr.Image(label="where the model looked", height=380, interactive=False,
                                        elem_id="overlay")
                    with gr.Column(scale=3):
                        map_pick = gr.Radio([], label="map (the model's own, or a baseline)", elem_id="map")
                        word_pick = gr.Radio([], label="per-word map (click a word)", visible=False,
                                             elem_id="words")
                        explain_md = gr.Markdown()
                        cooc = gr.Plot(label="word × region co-occurrence (models with a CFM)")

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    c_query = gr.Textbox(label="description", value=queries[0] if queries else "", scale=3)
                    c_models = gr.CheckboxGroup(demo.names(), value=demo.names()[:3], label="models (2–4)",
                                                scale=3)
                    c_k = gr.Slider(1, 12, value=5, step=1, label="results each", scale=1)
                c_go = gr.Button("Compare", variant="primary")
                slots = []
                with gr.Row():
                    for i in range(COMPARE_SLOTS):
                        with gr.Column(visible=i < 3, min_width=220) as col:
                            slots += [col, gr.Markdown(), gr.Gallery(columns=3, height=260, allow_preview=False,
                                                                     elem_id=f"compare-{i}"),
                                      gr.Image(label="top result, own map", height=220, interactive=False)]

            with gr.Tab("Models", id="models"):
                gr.Markdown("Every model with a checkpoint. Numbers come from the model cards and the results data "
                            "docs/RESULTS.md is generated from (rsdemo/results, written by the project's scripts).")
                gr.Dataframe(ui.cards_table(demo.models), interactive=False, wrap=True)
                with gr.Row():
                    gr.Plot(ui.retrieval_figure("demo", "mr", "Synthetic world, test split: mR (docs/RESULTS.md)"),
                            label="retrieval, synthetic")
                    gr.Plot(ui.retrieval_figure("ucm", "val_mr", "UCM-captions, AMFMN split: mR (ours and "
                                                "published)"), label="retrieval, UCM-captions")
                gr.Plot(ui.faithfulness_figure(), label="heatmap faithfulness")
                gr.Plot(ui.grounding_figure(), label="heatmaps on real photos")
                card_pick = gr.Dropdown(demo.names(), value=demo.default, label="model card")
                card = gr.JSON(act.card(demo.default))

        # the named API: hidden components, so gradio_client gets plain JSON and files
        with gr.Column(visible=False):
            a_query, a_model, a_name, a_map = (gr.Textbox() for _ in range(4))
            a_gallery = gr.Textbox(value="")
            a_k = gr.Number(value=10, precision=0)
            a_file = gr.File()
            a_json, a_image = gr.JSON(), gr.Image(type="pil")
            a_buttons = [gr.Button() for _ in range(4)]

        # ---- events ---------------------------------------------------------------------------------------
        explain_out = [heat, cooc, explain_md, name_state, map_pick, word_pick]
        search_out = [results, hits_state, status] + explain_out
        private = {"api_visibility": "private"}
        go.click(_safe(act.search), [query, model, k, gallery], search_out, **private)
        query.submit(_safe(act.search), [query, model, k, gallery], search_out, **private)
        upload.change(_safe(act.preview), upload, seen, **private)
        examples.select(act.pick_example, None, upload, **private).then(
            _safe(act.search_by_image), [upload, model, k, gallery], search_out, **private)
        go_image.click(_safe(act.search_by_image), [upload, model, k, gallery], search_out, **private)
        results.select(_safe(act.select), [hits_state, query], explain_out, **private)
        map_pick.input(_safe(act.rechoose_map), [map_pick, name_state, query, hits_state],
                       [heat, cooc, explain_md], **private)
        word_pick.input(_safe(act.rechoose), [map_pick, word_pick, name_state, query, hits_state],
                        [heat, cooc, explain_md], **private)
        model.change(_safe(act.model_changed), [model, gallery], model_md, **private)
        gallery.change(_safe(act.gallery_changed), gallery,
                       [model, model_md, gallery_md, query_examples.dataset, results, hits_state, status]
                       + explain_out, **private)
        if allow_folders:
            add.click(_safe(act.add_folder), [folder, gallery], [gallery, added], **private)
        c_go.click(_safe(act.compare), [c_query, c_models, c_k, gallery], slots, **private)
        card_pick.change(_safe(act.card), card_pick, card, **private)

        a_buttons[0].click(_safe(act.search_text), [a_query, a_model, a_k, a_gallery], a_json,
                           api_name="search_text")
        a_buttons[1].click(_safe(act.search_image), [a_file, a_model, a_k, a_gallery], a_json,
                           api_name="search_image")
        a_buttons[2].click(_safe(act.explain), [a_name, a_query, a_model, a_map, a_gallery], [a_image, a_json],
                           api_name="explain")
        a_buttons[3].click(_safe(act.models), a_gallery, a_json, api_name="models")
    page.rsdemo = demo
    return page


# ---- launching -------------------------------------------------------------------------------------------------

def folders_allowed(host: str = "127.0.0.1") -> bool:
    """"Add a folder on this machine" lets whoever reaches the page index the host's folders: on only for a page
    served on loopback and not on a Space, unless RSDEMO_ALLOW_FOLDERS says 1 (on) or 0 (off)."""
    env = os.environ.get("RSDEMO_ALLOW_FOLDERS")
    if env in ("0", "1"):
        return env == "1"
    return not os.environ.get("SPACE_ID") and host in ("127.0.0.1", "localhost", "::1")


LAUNCH = dict(theme=gr.themes.Soft(primary_hue="blue", secondary_hue="slate"), css=CSS,
              allowed_paths=[str(ASSETS)], max_file_size="25mb")


def tame_malloc() -> bool:
    """Keeps the server's resident memory from creeping under many users (glibc only; elsewhere a no-op).

    glibc gives threads that allocate at the same time their own heap arenas (up to 8 per core); with gradio's
    worker threads each building tensors of a few MB per request, freed space scatters over many arenas and the
    resident size keeps moving up. Two arenas (what MALLOC_ARENA_MAX=2 does) bound that at little measured cost to
    query latency (a fixed 1 MiB mmap threshold, tried too, made text queries 2-3x slower). MALLOC_ARENA_MAX in
    the environment wins; RSDEMO_MALLOC=glibc keeps glibc's defaults (bench/load.py --glibc-malloc compares)."""
    if "MALLOC_ARENA_MAX" in os.environ or os.environ.get("RSDEMO_MALLOC") == "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_arena_max = -8   # mallopt parameter (malloc.h)
    return libc.mallopt(m_arena_max, 2) == 1


def serve(page: gr.Blocks, **kwargs):
    """Launches with the page's theme, upload limit and file policy (only rsdemo/assets/ is served from disk; results
    are sent as re-encoded thumbnails, never as paths into the gallery)."""
    page.queue(default_concurrency_limit=2, max_size=64)  # 2 requests at once: the models share the cores
    return page.launch(**{**LAUNCH, **kwargs})


def main(argv=None, prog: str | None = None):
    """`python app.py` / `rsdemo serve`: builds the page, serves it until interrupted."""
    p = argparse.ArgumentParser(prog=prog, description="rsdemo's demo page")
    p.add_argument("--gallery", default=os.environ.get("RSDEMO_GALLERY"),
                   help="image folder to search, or 'ucm' (UC Merced + UCM-captions, downloaded once and verified; "
                        "'ucm:val', 'ucm:all' for other splits) (default: the synthetic demo gallery)")
    p.add_argument("--data", default=os.environ.get("RSDEMO_DATA"),
                   help="annotations for the gallery, e.g. ucm:path/to/ucm_captions (labels, example queries)")
    p.add_argument("--split", default=os.environ.get("RSDEMO_SPLIT"), help="only this split of --data")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tame_malloc()
    t = time.perf_counter()
    try:
        page = build(a.gallery, a.data, a.split, allow_folders=folders_allowed(a.host))
    except (InputError, ValueError, OSError) as e:
        p.exit(2, f"{prog or 'rsdemo app'}: {e}\n")
    serve(page, server_name=a.host, server_port=a.port, prevent_thread_lock=True)
    print(f"rsdemo: page ready in {time.perf_counter() - t:.1f} s at {page.local_url}", flush=True)
    page.block_thread()
