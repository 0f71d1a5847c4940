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
import json
import logging
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from . import ui  # noqa: E402
from .demo import MAX_K, MAX_QUERY, SENTENCE, Demo, Gallery, InputError, clean_query, read_image  # noqa: E402
from .files import atomic_write  # noqa: E402

ASSETS = Path(__file__).resolve().parent / "assets"   # example images (package data; the only files served)
log = logging.getLogger("rsdemo.app")
COMPARE_SLOTS = 4
CSS = """
.rs-title h1 {margin-bottom: 0}
.rs-note {font-size: 0.9em; opacity: 0.8}
#notice {color: var(--error-text-color, #b91c1c); font-weight: 600}
/* result captions (.rs-hits galleries) under the thumbnail, never over it: the caption's first line (rank, scene,
   score; JS below copies it to data-line1) shown whole, the whole caption (with the file name) on hover */
.rs-hits .thumbnail-item {aspect-ratio: auto; height: auto; display: flex; flex-direction: column}
.rs-hits .thumbnail-lg > img {aspect-ratio: 1 / 1; height: auto; flex: none}
.rs-hits .caption-label {position: static; max-width: none; width: auto; opacity: 1 !important; border: none;
  border-radius: 0; padding: 3px 4px; background: none; white-space: normal; overflow: visible; font-size: 0}
.rs-hits .caption-label::before {content: attr(data-line1); font-size: var(--text-sm); line-height: 1.35}
/* the uploaded file's whole name, wrapped rather than cut to "holi… .png" */
#upload .file-preview {width: 100%} #upload td.download {display: none}
#upload .filename {display: block; overflow: visible; overflow-wrap: anywhere; font-size: 0}
#upload .filename span {font-size: var(--text-md)}
#upload .filename .stem {white-space: normal; overflow: visible}
#upload .upload-container, #upload .file-preview-holder, #seen .image-container {margin-top: 34px}  /* below
   the label, not under it */
#card pre {max-height: 360px; overflow: auto}
#example-images .grid-wrap {min-height: 0; max-height: none}   /* as tall as its two rows, no blank below */
/* the gallery's label above the thumbnails, not over the first one */
.rs-hits .grid-wrap {padding-top: 40px}
"""
# each result's caption: its first line into data-line1 (what CSS shows), the whole caption as the hover text
JS = """
() => {
  const tag = () => document.querySelectorAll('.rs-hits .thumbnail-item').forEach(b => {
    const c = b.querySelector('.caption-label');
    if (!c) return;
    const text = c.textContent.trim(), first = text.split('\\n')[0];
    if (b.title !== text) b.title = text;
    if (c.dataset.line1 !== first) c.dataset.line1 = first;
  });
  new MutationObserver(tag).observe(document.body, {subtree: true, childList: true, characterData: true});
  tag();
  // each map's one-line description (ui.map_tips) as the hover text of its choice in the map menu
  const tips = %s;
  const tip = () => document.querySelectorAll('#map label').forEach(l => {
    const t = tips[l.textContent.trim().split(' · ')[0]];
    if (t && l.title !== t) l.title = t;
  });
  new MutationObserver(tip).observe(document.body, {subtree: true, childList: true});
}
""" % json.dumps(ui.map_tips())


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
    """The packaged example scenes (synthetic; what the synthetic galleries offer)."""
    return sorted(str(p) for p in (ASSETS / "examples").glob("*.png"))


def _page(fn, n_out: int):
    """A page event whose outputs are followed by the notice line: a refused input (or a failure) leaves every
    other output as it was (the last results, maps and plots stay) and says why in the notice, which stays until
    the next action; gradio's pop-up shows it too. A success clears the notice."""
    @functools.wraps(fn)  # gradio reads the signature (SelectData, Progress) through __wrapped__
    def run(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except InputError as e:
            message = str(e)
        except Exception as e:  # noqa: BLE001 - the page must keep serving whatever went wrong
            log.exception("request failed")
            message = f"Sorry, that failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            return (*(out if n_out > 1 else (out,)), "")
        gr.Warning(message)
        return (*(gr.skip() for _ in range(n_out)), ui.refused(message))
    return run


def _file(file):
    return getattr(file, "name", file)


def _cleared():
    """A new result list: the maps of the last one no longer apply."""
    return (None, gr.update(value=None, visible=False), "", "", "", gr.update(choices=[], value=None, info=None),
            gr.update(choices=[], value=None, visible=False))


class Actions:
    """The page's event handlers and named API: each one call into the Demo, rendered with rsdemo.ui."""

    def __init__(self, demo: Demo):
        self.demo = demo
        self._examples: dict[str, list[tuple[str, str]]] = {}

    def gallery_note(self, gallery=None) -> str:
        return ui.gallery_note(self.demo.get_gallery(gallery).title)

    def model_note(self, name: str) -> str:
        return ui.model_note(self.demo.info(name))

    def card_note(self, name: str) -> str:
        return ui.card_markdown(self.demo.info(name))

    def examples(self, gallery=None) -> list[tuple[str, str]]:
        """(file, caption) per example image: a real gallery's own images (thumbnails written once into the
        temp folder, which gradio serves, so no gallery path reaches the page), else the packaged scenes."""
        g = self.demo.get_gallery(gallery)
        if g.key not in self._examples:
            items = []
            for p in g.example_images():
                f = Path(tempfile.gettempdir()) / "rsdemo-examples" / g.key / f"{Path(p).stem}.png"
                if not f.is_file():
                    im = ui.thumbnail(p)
                    atomic_write(f, lambda tmp: im.save(tmp, format="PNG"))
                items.append((str(f), self.demo.label(p, g) or f.stem))
            self._examples[g.key] = items or [(p, Path(p).stem.split("_", 1)[-1]) for p in example_images()]
        return self._examples[g.key]

    def _found(self, hits, what, model, gallery, link, query=None, image=None):
        # what the results answer (a text or an image): clicking a result explains it against that
        state = {"hits": hits, "model": model, "gallery": gallery, "query": query, "image": image}
        n = len(self.demo.retriever(model, gallery))
        return (ui.hit_items(hits), state, ui.status(len(hits), n, what, model), link, *_cleared())

    def search(self, query, model, k, gallery, here="", progress=gr.Progress(track_tqdm=True)):
        hits = self.demo.search_text(query, model, k, gallery)
        query = clean_query(query)
        link = ui.view_link(here, self.demo.get_gallery(gallery).title, model, query, k)
        return self._found(hits, f"“{query}”", model, gallery, link, query=query)

    def search_by_image(self, file, model, k, gallery, here="", progress=gr.Progress(track_tqdm=True)):
        hits = self.demo.search_image(_file(file), model, k, gallery)
        link = ui.view_link(here, self.demo.get_gallery(gallery).title, model, None, k)  # an upload has no address
        return self._found(hits, "your image", model, gallery, link, image=_file(file))

    def preview(self, file):
        """The upload as the model will see it, or (for a file it cannot use) no picture and the reason."""
        if file is None:
            return None, ""
        try:
            return read_image(_file(file)), ""
        except InputError as e:
            gr.Warning(str(e))
            return None, ui.refused(str(e))

    def _shown(self, out, name, model):
        """One explained result as the page shows it: the map with its colour bar, the co-occurrence view, the two
        notes, and the map and word menus in step with what is shown."""
        cooc = ui.cooccurrence_view(out["cooccurrence"], out["image"], out["word"])
        return (ui.map_picture(out), gr.update(value=cooc, visible=cooc is not None),
                f"{ui.explain_note(name, model, out)}\n\n{ui.maps_legend(out)}", ui.cooccurrence_note(model, out),
                gr.update(choices=ui.map_choices(out["maps"], out["figures"], out["measured_on"]), value=out["map"],
                          info=ui.map_info(out)),
                gr.update(choices=ui.word_choices(out), value=out["word"] or SENTENCE, visible=bool(out["words"])))

    def _explain(self, state, name, query, map_name=None, word=None):
        if state.get("image"):   # an image->image result: where it looks like the query image
            return self.demo.explain_image(name, state["image"], state["model"], gallery=state["gallery"])
        text = state.get("query") or query
        if not (text or "").strip():
            raise InputError("Type a description too: the maps show where the model finds the words.")
        return self.demo.explain(name, text, state["model"], map=map_name or None,
                                 word=None if word in (None, "", SENTENCE) else word, gallery=state["gallery"])

    def select(self, state, query, map_name, word, evt: gr.SelectData):
        if not state or not state.get("hits"):
            raise InputError("Run a search first.")
        name = state["hits"][evt.index]["name"]
        try:   # the map and word chosen for the last result, where they apply to this one
            out = self._explain(state, name, query, map_name, word)
        except InputError:
            out = self._explain(state, name, query)
        shown = self._shown(out, name, state["model"])
        return (*shown[:4], name, *shown[4:])

    def rechoose(self, map_name, word, name, query, state):
        """The map or the word changed: the other one is kept, so the picture, both menus and the note agree."""
        if not name or not state:
            raise InputError("Pick a result first.")
        return self._shown(self._explain(state, name, query, map_name, word), name, state["model"])

    def pick_example(self, gallery, evt: gr.SelectData):
        return self.examples(gallery)[evt.index][0]

    def model_changed(self, model, gallery, progress=gr.Progress(track_tqdm=True)):
        self.demo.retriever(model, gallery)  # builds the index on first use, with a progress bar
        return self.model_note(model), self.card_note(model)

    def _view(self, gallery, model=None):
        """What depends on the gallery: the model picker (its best model, or `model`), the notes, the examples."""
        model = model or self.demo.default_for(gallery)
        self.demo.info(model)
        self.demo.retriever(model, gallery)  # a new folder is indexed here, once, with a progress bar
        qs = self.demo.get_gallery(gallery).example_queries()
        return (gr.update(choices=ui.model_choices(self.demo.models_for(gallery)), value=model),
                self.model_note(model), self.card_note(model), self.gallery_note(gallery),
                gr.update(samples=[[q] for q in qs]), self.examples(gallery))

    def gallery_changed(self, gallery, progress=gr.Progress(track_tqdm=True)):
        return (*self._view(gallery), [], {}, "", "", *_cleared())

    def opened(self, here, progress=gr.Progress(track_tqdm=True)):
        """The page opened at an address with ?gallery=&model=&q=&k= (ui.view_link): that view, searched. A plain
        address changes nothing."""
        want = ui.view_params(here)
        if not want:  # one skip per output: gallery, k, query, the 6 of _view, the 4 + cleared of _found
            return tuple(gr.skip() for _ in range(3 + 6 + 4 + len(_cleared())))
        gallery = self.demo.get_gallery(want.get("gallery")).title
        model = want.get("model") or self.demo.default_for(gallery)
        try:
            k = int(want.get("k", 10))
        except ValueError:
            raise InputError(f"k must be a whole number, got {want['k']!r}") from None
        view = self._view(gallery, model)
        if want.get("q"):
            found = self.search(want["q"], model, k, gallery, here)
        else:
            found = ([], {}, "", ui.view_link(here, gallery, model, None, k), *_cleared())
        return (gr.update(choices=list(self.demo.galleries), value=gallery), k, want.get("q", gr.skip()), *view,
                *found)

    def add_folder(self, folder, gallery_now, progress=gr.Progress(track_tqdm=True)):
        g = self.demo.add_gallery(folder)
        return (gr.update(choices=list(self.demo.galleries), value=g.title), f"Added **{g.title}**.",
                *self.gallery_changed(g.title))

    def compare_models(self, gallery):
        """The Compare tab's model boxes (one per imagery): the gallery's imagery's best three ticked."""
        want = [m["name"] for m in self.demo.models_for(gallery)][:3]
        return [gr.update(value=[n for n in names if n in want]) for _, _, names in ui.model_groups(self.demo.models)]

    def compare(self, query, k, gallery, *groups):
        """Each chosen model's results in its own column, labelled with the model, its first result explained
        under them with the model's best-measured map; every column is as tall as the others."""
        models = [n for g in groups for n in (g or [])]
        if not 2 <= len(models) <= COMPARE_SLOTS:
            raise InputError(f"Choose 2 to {COMPARE_SLOTS} models to compare.")
        query = clean_query(query)
        state = {"query": query, "gallery": gallery, "slots": []}
        outs = []
        for i in range(COMPARE_SLOTS):
            if i < len(models):
                hits = self.demo.search_text(query, models[i], k, gallery)
                state["slots"].append({"model": models[i], "hits": hits})
                shown = self._compare_shown(state, i, 0) if hits else (None, "")
                outs += [gr.update(visible=True), gr.update(value=ui.hit_items(hits), label=models[i]), *shown,
                         ui.compare_note(self.demo.info(models[i]))]
            else:
                outs += [gr.update(visible=False), gr.update(value=[], label=""), None, "", ""]
        return [state, *outs]

    def _compare_shown(self, state, i, index):
        slot = state["slots"][i]
        hit = slot["hits"][index]
        out = self.demo.explain(hit["name"], state["query"], slot["model"], gallery=state["gallery"])
        return ui.map_picture(out), ui.compare_caption(hit, out)

    def compare_pick(self, state, i, index):
        """A Compare result clicked: its map, under its column."""
        if not state or i >= len(state.get("slots", [])):
            raise InputError("Run a comparison first.")
        return self._compare_shown(state, i, index)

    def card(self, name):
        """The whole card, its file-system paths cut (the data spec, the commands): the page never says where files
        lie."""
        return json.loads(ui.no_paths(json.dumps(self.demo.info(name)["card"], default=str)))

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


def _compare_pick(act: Actions, i: int):
    """The select handler of Compare column i (gradio reads SelectData from the signature)."""
    def pick(state, evt: gr.SelectData):
        return act.compare_pick(state, i, evt.index)
    return pick


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
    log.info("rsdemo: gallery %s", demo.gallery.title)
    t = time.perf_counter()
    demo.warm()
    log.info("rsdemo: index of %s ready in %.1f s", demo.default, time.perf_counter() - t)
    queries = demo.gallery.example_queries()
    act = Actions(demo)
    with gr.Blocks(title="rsdemo: remote-sensing image-text retrieval", delete_cache=(3600, 3600)) as page:
        gr.Markdown("# rsdemo: remote-sensing image–text retrieval", elem_classes="rs-title")
        gallery_md = gr.Markdown(act.gallery_note(), elem_classes="rs-note", elem_id="gallery-note")
        here = gr.Textbox(visible="hidden", elem_id="here")   # the page's address, filled in by the browser
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
                model_md = gr.Markdown(act.model_note(demo.default), elem_id="model-note")
                with gr.Accordion("model card", open=False, elem_id="card"):
                    card_md = gr.Markdown(act.card_note(demo.default))
                with gr.Row():
                    with gr.Column(scale=2):
                        query = gr.Textbox(label="describe the scene", lines=2, max_length=MAX_QUERY,
                                           placeholder=queries[0] if queries else "", elem_id="query")
                        go = gr.Button("Search", variant="primary", elem_id="search-btn")
                        query_examples = gr.Examples([[q] for q in queries], [query], label="example queries")
                        with gr.Accordion("…or search by image (PNG, JPEG, TIFF, WebP)", open=True):
                            with gr.Row(equal_height=True):   # short labels: one line each, clear of the buttons
                                upload = gr.File(label="upload an image", height=150, scale=1,
                                                 file_types=["image", ".tif", ".tiff"], elem_id="upload")
                                seen = gr.Image(label="as the model sees it", height=150, interactive=False,
                                                buttons=[], scale=1, min_width=150, elem_id="seen")
                            examples = gr.Gallery(act.examples(), label="example images (click one)", columns=3,
                                                  height="auto", allow_preview=False, elem_id="example-images",
                                                  elem_classes="rs-hits", object_fit="cover")
                            go_image = gr.Button("Search by image", elem_id="image-btn")
                    with gr.Column(scale=3):
                        results = gr.Gallery(label="results: rank · scene · score (hover: file name)", columns=5,
                                             height=470, allow_preview=False, elem_id="results",
                                             elem_classes="rs-hits", object_fit="cover")
                        notice = gr.Markdown(elem_id="notice")
                        status = gr.Markdown(elem_id="status")
                        share = gr.Textbox(label="link to this view (gallery, model, query)", interactive=False,
                                           buttons=["copy"], elem_id="share")
                with gr.Row():
                    with gr.Column(scale=2):
                        heat = gr.Image(label="where the model looked", height=400, interactive=False,
                                        elem_id="overlay")
                    with gr.Column(scale=3):
                        map_pick = gr.Radio([], label="map · how often it points at the thing named (measured)",
                                            elem_id="map")
                        word_pick = gr.Radio([], label="for the whole sentence, or one word", visible=False,
                                             elem_id="words")
                        explain_md = gr.Markdown(elem_id="explain-note")
                cooc_md = gr.Markdown(elem_id="cooc-note")
                cooc = gr.Plot(show_label=False, visible=False, elem_id="cooc")

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    c_query = gr.Textbox(label="description", value=queries[0] if queries else "", scale=4,
                                         max_length=MAX_QUERY, elem_id="compare-query")
                    c_k = gr.Slider(1, 12, value=5, step=1, label="results each", scale=1)
                with gr.Row():   # one box per imagery the models were trained on (2 to 4 models in all)
                    ticked = demo.names()[:3]
                    c_groups = [gr.CheckboxGroup(names, value=[n for n in names if n in ticked],
                                                 label=f"models trained on {label} (2–4 in all)",
                                                 elem_id=f"compare-models-{dom}")
                                for dom, label, names in ui.model_groups(demo.models)]
                c_go = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                c_state = gr.State({})
                slots, c_galleries = [], []
                with gr.Row(equal_height=False):
                    for i in range(COMPARE_SLOTS):
                        with gr.Column(visible=i < 3, min_width=220) as col:
                            c_gal = gr.Gallery(label=" ", columns=3, height=350, allow_preview=False,
                                               elem_id=f"compare-{i}", elem_classes="rs-hits", object_fit="cover")
                            c_galleries.append(c_gal)
                            slots += [col, c_gal,
                                      gr.Image(show_label=False, height=260, interactive=False, buttons=[],
                                               elem_id=f"compare-map-{i}"),
                                      gr.Markdown(elem_id=f"compare-caption-{i}"),
                                      gr.Markdown(elem_classes="rs-note")]

            with gr.Tab("Models", id="models"):
                gr.Markdown("Every model with a checkpoint. Numbers come from the model cards and the results data "
                            "docs/RESULTS.md is generated from (rsdemo/results, written by the project's scripts).")
                table = ui.cards_table(demo.models)   # every row shown: the page scrolls, not the table
                gr.Dataframe(table, interactive=False, wrap=True, max_height=80 + 40 * len(table),
                             elem_id="cards-table")
                with gr.Row():   # one chart per imagery, horizontal bars: the labels stay readable
                    gr.Plot(ui.retrieval_figure("demo", "mr", "Retrieval on synthetic scenes (test split)"),
                            show_label=False, elem_id="chart-synthetic")
                    gr.Plot(ui.retrieval_figure("ucm", "val_mr", "Retrieval on UCM photos (AMFMN split): ours, "
                                                "zero-shot and published"), show_label=False, elem_id="chart-ucm")
                with gr.Row():
                    gr.Plot(ui.faithfulness_figure(), show_label=False, elem_id="chart-maps-synthetic")
                    gr.Plot(ui.grounding_figure(), show_label=False, elem_id="chart-maps-ucm")
                seeds = ui.section_frame("ucm_grounding")
                if seeds is not None:   # issue 19's comparison: over seeds, module off, the dual encoder
                    gr.Markdown("**Seed models on UCM photos, both measures**: each recipe over its seeds, beside "
                                "the same recipe with its map's module off and the plain dual encoder (val split; "
                                "docs/RESULTS.md says how each figure is measured).")
                    gr.Dataframe(seeds, interactive=False, wrap=True, max_height=80 + 60 * len(seeds),
                                 elem_id="grounding-seeds")
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
        shown_out = [heat, cooc, explain_md, cooc_md, map_pick, word_pick]   # Actions._shown
        explain_out = shown_out[:4] + [name_state] + shown_out[4:]            # Actions.select, _cleared
        search_out = [results, hits_state, status, share] + explain_out
        view_out = [model, model_md, card_md, gallery_md, query_examples.dataset, examples]
        private = {"api_visibility": "private"}

        def on(event, fn, inputs, outputs):
            """A page event: refused input keeps every output and says why in the notice line (_page)."""
            shown = [o for o in outputs if not isinstance(o, gr.State)] or None   # the notice: no spinner
            return event(_page(fn, len(outputs)), inputs, [*outputs, notice], show_progress_on=shown, **private)

        # the address the page was opened at: a link made by ui.view_link reopens its view
        on(page.load(None, None, here, js="() => location.href").then, act.opened, here,
           [gallery, k, query, *view_out, *search_out])
        on(go.click, act.search, [query, model, k, gallery, here], search_out)
        on(query.submit, act.search, [query, model, k, gallery, here], search_out)
        upload.change(_safe(act.preview), upload, [seen, notice], show_progress_on=seen, **private)
        on(on(examples.select, act.pick_example, gallery, [upload]).then, act.search_by_image,
           [upload, model, k, gallery, here], search_out)
        on(go_image.click, act.search_by_image, [upload, model, k, gallery, here], search_out)
        on(results.select, act.select, [hits_state, query, map_pick, word_pick], explain_out)
        for pick in (map_pick, word_pick):   # either menu: the other one's choice is kept
            on(pick.input, act.rechoose, [map_pick, word_pick, name_state, query, hits_state], shown_out)
        # .input, not .change: a view the page sets itself (a link, a new folder) is not undone by these
        on(model.input, act.model_changed, [model, gallery], [model_md, card_md])
        on(gallery.input, act.gallery_changed, gallery, view_out + search_out)
        if allow_folders:
            on(add.click, act.add_folder, [folder, gallery], [gallery, added, *view_out, *search_out])
        c_go.click(_safe(act.compare), [c_query, c_k, gallery, *c_groups], [c_state, *slots], **private)
        for i, c_gal in enumerate(c_galleries):
            c_gal.select(_safe(_compare_pick(act, i)), c_state, slots[5 * i + 2:5 * i + 4], **private)
        gallery.change(_safe(act.compare_models), gallery, c_groups, **private)
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


LAUNCH = dict(theme=gr.themes.Soft(primary_hue="blue", secondary_hue="slate"), css=CSS, js=JS,
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


def quiet_logs() -> None:
    """The terminal shows one line per start-up stage (rsdemo's own INFO lines: gallery, index, page ready) and
    every library's warnings and errors, not the libraries' INFO chatter (faiss's "Could not load library with
    AVX512 support ..." while it picks its build, httpx's "HTTP Request: ..." per request)."""
    logging.basicConfig(format="%(message)s")
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("rsdemo").setLevel(logging.INFO)


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
    quiet_logs()
    tame_malloc()
    t = time.perf_counter()
    try:
        page = build(a.gallery, a.data, a.split, allow_folders=folders_allowed(a.host))
    except (InputError, ValueError, OSError) as e:
        p.exit(2, f"{prog or 'rsdemo app'}: {e}\n")
    serve(page, server_name=a.host, server_port=a.port, prevent_thread_lock=True, quiet=True)  # our line below
    print(f"rsdemo: page ready in {time.perf_counter() - t:.1f} s at {page.local_url}", flush=True)
    page.block_thread()
