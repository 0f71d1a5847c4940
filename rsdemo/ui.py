"""How the demo page shows things: colours, overlays, charts, thumbnails and wording. Rendering only.

rsdemo.demo computes (hits, maps, scores, the co-occurrence matrix as data) and rsdemo.page lays the page out;
everything in between that turns data into pixels or sentences is here, importable without gradio (the CLI,
bench/ and tests use the same overlay). Maps go by plain names from one table (MAPS, map_name), with the measured
pointing figures beside them. The Models tab's tables and charts read rsdemo.results (the data docs/RESULTS.md is
generated from) and the checkpoint cards, never the markdown.
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import results
from .data.images import open_image
from .data.formats import dataset_name, domain
from .explain import IMAGE_MAP, SENTENCE, to_heatmap, words as text_words

THUMB = 512   # longest side of a result as sent to the page

# Piecewise-linear colormaps: (position, (r, g, b)) control points, interpolated into a 256-entry table.
_CMAPS = {
    "jet": [(0.0, (0, 0, 128)), (0.11, (0, 0, 255)), (0.36, (0, 255, 255)), (0.5, (128, 255, 128)),
            (0.64, (255, 255, 0)), (0.89, (255, 0, 0)), (1.0, (128, 0, 0))],
    "viridis": [(0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
                (1.0, (253, 231, 37))],
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
}
MUTED, OURS = "#9aa5b1", "#2f6fdb"   # chart bars: references (baselines, published) / our models


def _lut(name: str) -> np.ndarray:
    if name not in _CMAPS:
        raise ValueError(f"unknown colormap {name!r} ({', '.join(_CMAPS)})")
    pos = np.array([p for p, _ in _CMAPS[name]])
    rgb = np.array([c for _, c in _CMAPS[name]], dtype=np.float64)
    x = np.linspace(0, 1, 256)
    return np.stack([np.interp(x, pos, rgb[:, k]) for k in range(3)], 1).round().astype(np.uint8)


def colormap(heat: np.ndarray, name: str = "jet") -> np.ndarray:
    """[H, W] values in [0, 1] -> [H, W, 3] uint8 RGB."""
    h = np.nan_to_num(np.asarray(heat, dtype=np.float64), nan=0.0)
    return _lut(name)[(np.clip(h, 0, 1) * 255).round().astype(np.int64)]


def overlay(image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """The heatmap coloured and alpha-blended on the image (PIL in, PIL RGB out, the image's size)."""
    im = np.asarray(image.convert("RGB"), dtype=np.float64)
    heat = np.asarray(heat, dtype=np.float64)
    if heat.shape != im.shape[:2]:  # a feature-resolution map: bring it to the picture first
        heat = to_heatmap(heat, im.shape[:2])
    out = (1 - alpha) * im + alpha * colormap(heat, cmap)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def explained_image(out: dict) -> Image.Image:
    """The picture of one Demo.explain result: its map over its image."""
    return overlay(out["image"], out["heat"])


def with_colorbar(im: Image.Image, cmap: str = "jet") -> Image.Image:
    """The picture with the map's colour scale at its right, high at the top. Every map is min-max scaled per
    picture (rsdemo.explain.to_heatmap), so the ends read "high" and "low" rather than numbers."""
    im = im.convert("RGB")
    W, H = im.size
    size = max(11, H // 16)
    font = ImageFont.load_default(size=size)
    bar_w, pad = max(10, H // 18), max(4, H // 50)
    text_w = int(max(font.getlength(t) for t in ("high", "low"))) + pad
    out = Image.new("RGB", (W + 2 * pad + bar_w + text_w + pad, H), "white")
    out.paste(im, (0, 0))
    top, bottom = size // 2 + pad, H - size // 2 - pad
    ramp = np.linspace(1, 0, max(bottom - top, 2))[:, None].repeat(bar_w, 1)
    out.paste(Image.fromarray(colormap(ramp, cmap)), (W + pad, top))
    draw = ImageDraw.Draw(out)
    x = W + 2 * pad + bar_w
    draw.text((x, top), "high", fill=(20, 20, 20), font=font, anchor="lm")
    draw.text((x, bottom), "low", fill=(20, 20, 20), font=font, anchor="lm")
    return out


def map_picture(out: dict, side: int = 320) -> Image.Image:
    """What the page shows for one explained result: the map over the image (a small image brought up to `side`
    px first, so the bar's words stay sharp; not more, so the page's label and buttons stay in the margin), with
    its colour bar."""
    im = out["image"]
    if max(im.size) < side:
        scale = side / max(im.size)
        im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
    return with_colorbar(overlay(im, out["heat"]))


# ---- maps: their plain names, in one table ----------------------------------------------------------------------
# map name (as the models and rsdemo.explain give it) -> (plain name, one line on what it shows). SSJDN's per-scale
# maps ("sem8", "ssm16", ...) are named by _SCALES; any other map falls back to its name in words (map_name).
MAPS = {
    "tam": ("CCNet attention to the words (TAM)",
            "Where each word of the description looks among the image regions (CCNet's text-image attention), "
            "averaged over the words."),
    "cfm_regions": ("CCNet word–region co-occurrence (CFM)",
                    "How much of CCNet's word–region co-occurrence mass falls on each region."),
    "mvsa": ("AMFMN visual saliency (MVSA)",
             "Where AMFMN's multiscale visual self-attention looks; the same whatever the description says."),
    "mvsa_score": ("AMFMN score, split over the image",
                   "What each region adds to AMFMN's score for this description (its saliency-gated feature "
                   "against the text)."),
    "tam_cfm_score": ("CCNet score, split over the image",
                      "What each region adds to CCNet's score for this description (its global, attention (TAM) and "
                      "co-occurrence (CFM) parts)."),
    "bsd_score": ("SSJDN score, split over the image",
                  "What each region adds to SSJDN's score for this description: where its scale clues (BSD) and "
                  "global feature agree with the words."),
    "roam_score": ("DOVE score, split over the image",
                   "What each region adds to DOVE's score for this description: the regions its slots (ROAM) turn "
                   "toward these words carry the match."),
    "score": ("score, split over the image", "What each region adds to the model's score for this description."),
    "roam_text": ("DOVE region slots picked by the text (ROAM)",
                  "DOVE's learned region slots, mixed by how well each one matches the description."),
    "patch_sim": ("patch–text similarity",
                  "Cosine between each image patch's embedding and the description's: where a dual encoder's "
                  "score comes from."),
    "word_sim": ("patch–word similarity",
                 "Cosine between each image patch and each word of the description, averaged over the words."),
    "global": ("feature activation (no attention module)",
               "How strongly the last feature map responds: the only spatial signal of a model with its modules "
               "off."),
    "baseline_region_sim": ("baseline: region–text similarity",
                            "Any model: cosine between each region's embedding and the description's, what the "
                            "embeddings show without the model's own module."),
    "baseline_gradcam": ("baseline: Grad-CAM",
                         "Any model: where the gradient of the model's score says the last feature map matters."),
    IMAGE_MAP: ("similarity to your image",
                "Cosine between each region of this result and your image's embedding: the parts that look like "
                "your image to this model."),
}
_SCALES = {"sem": ("SSJDN salience, stride {s} (SEM)",
                   "Where SSJDN's salience unit at this scale looks; the same whatever the description says."),
           "ssm": ("SSJDN suppression, stride {s} (SSM)",
                   "What SSJDN suppresses at this scale because another scale took it; the same whatever the "
                   "description says.")}


def map_name(name: str) -> tuple[str, str]:
    """(plain name, one-line description) of a map."""
    if name in MAPS:
        return MAPS[name]
    head, tail = name[:3], name[3:]
    if head in _SCALES and tail.isdigit():
        return tuple(t.format(s=tail) for t in _SCALES[head])
    if name.endswith("_score") and name[:-6] in MAPS:
        return f"{MAPS[name[:-6]][0]}: score split over the image", MAPS["score"][1]
    return name.replace("_", " "), ""


def map_tips() -> dict[str, str]:
    """Plain map name -> its one-line description, for the map menu's hover text (SSJDN's scales 8, 16, 32)."""
    names = list(MAPS) + [f"{k}{s}" for k in _SCALES for s in (8, 16, 32)]
    return dict(map_name(n) for n in names)


def map_choices(names: list[str], figures: dict[str, float], where: str | None) -> list[tuple[str, str]]:
    """(label, name) per map for the map menu: the plain name and, where measured, how often it points at the
    thing named (figures: Demo.map_figures)."""
    out = []
    for n in names:
        label = map_name(n)[0]
        if n in figures:
            label += f" · {figures[n]:.0f}% ({'photos' if where == results.REAL else 'synthetic'})"
        out.append((label, n))
    return out


def pointing_sentence(name: str, figures: dict[str, float], where: str | None) -> str:
    """What the map's figure means, in one sentence ("" when it was not measured)."""
    if name not in figures:
        return "Not measured yet." if name != IMAGE_MAP else ""
    floor = figures.get("random")
    if where == results.REAL:
        chance = floor if floor is not None else results.POINTING[results.REAL][2]
        return (f"{figures[name]:.0f}%: its peak lands on the tile of the scene named in {figures[name]:.0f}% of "
                f"2×2 mosaics of UCM photos (a random map: {chance:.0f}%).")
    rnd = f" (a random map: {floor:.0f}%)" if floor is not None else ""
    return f"{figures[name]:.0f}%: its peak lands inside the object named in {figures[name]:.0f}% of synthetic " \
           f"scenes{rnd}."


def map_info(out: dict) -> str:
    """The map menu's info line: what the shown map is, and what its figure means."""
    desc = map_name(out["map"])[1]
    return " ".join(t for t in (desc, pointing_sentence(out["map"], out.get("figures") or {},
                                                         out.get("measured_on"))) if t)


def maps_legend(out: dict) -> str:
    """Every map on offer for this result, its plain name, what it shows and its measured figure: a folded table
    under the note (markdown with an HTML fold)."""
    figures = out.get("figures") or {}
    rows = [f"| {map_name(n)[0]} | {map_name(n)[1]} | {f'{figures[n]:.0f}%' if n in figures else '–'} |"
            for n in out["maps"]]
    where = {results.REAL: "on UCM photos (2×2 mosaics)", results.SYNTHETIC: "on synthetic scenes"}.get(
        out.get("measured_on"), "")
    return ("<details><summary>what the maps mean</summary>\n\n"
            f"| map | what it shows | points at the thing named {where} |\n|---|---|---|\n" + "\n".join(rows)
            + "\n\n</details>")


def word_choices(out: dict) -> list[tuple[str, str]]:
    """The word menu: the whole sentence first, then the text's content words (a repeat keeps its position)."""
    return [(SENTENCE, SENTENCE)] + [(k.split("@")[0], k) for k in out["words"]]


def cooccurrence_figure(data: dict | None, title: str | None = None):
    """rsdemo.explain.cooccurrence(ex) as an interactive heatmap (x: regions, y: words); None without data."""
    if data is None:
        return None
    import plotly.graph_objects as go   # heavy (~0.3 s): only once a chart is drawn

    z, tokens, regions = data["matrix"], data["tokens"], data["regions"]
    T = len(tokens)
    # numeric rows with token tick labels: a repeated word would otherwise merge two rows of a categorical axis
    words = np.array([[t] * len(regions) for t in tokens])
    fig = go.Figure(go.Heatmap(z=z, x=regions, y=list(range(T)), colorscale="Viridis", customdata=words,
                               hovertemplate="word %{customdata}<br>region %{x}<br>p %{z:.4f}<extra></extra>",
                               colorbar={"title": "p(word, region)"}))
    fig.update_layout(title=title or f"Word x region co-occurrence (score {data['score']:.3f})",
                      xaxis_title="region (row,col)" if data["grid"] else "region", yaxis_title="word",
                      yaxis={"tickmode": "array", "tickvals": list(range(T)), "ticktext": list(tokens),
                             "autorange": "reversed"})
    return fig


def cooccurrence_view(data: dict | None, image=None, word: str | None = None):
    """The word x region matrix (rsdemo.explain.cooccurrence) as two readable panels: how its mass splits over the
    words (function words grey and apart, so "the" cannot pass for the subject) and, over the image, where the
    chosen word's mass lies (`word`: a rsdemo.explain.words key; none: the content words together). None without
    data."""
    if data is None:
        return None
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    z = np.asarray(data["matrix"], dtype=np.float64)
    ws = [w for w in text_words(list(data["tokens"])) if w["tokens"][0] < z.shape[0]]
    total = float(z.sum()) or 1.0
    share = [100 * float(z[w["tokens"]].sum()) / total for w in ws]
    picked = next((w for w in ws if word and word != SENTENCE and word in (w["key"], w["word"])), None)
    rows = picked["tokens"] if picked else [i for w in ws if not w["function"] for i in w["tokens"]]
    where_ = data.get("grid") is not None and image is not None
    fig = make_subplots(rows=1, cols=2 if where_ else 1, column_widths=[0.42, 0.58] if where_ else None,
                        horizontal_spacing=0.12,
                        subplot_titles=["share of the co-occurrence mass per word",
                                        f"where “{picked['word']}” lies on the image" if picked else
                                        "where the content words lie on the image"] if where_ else None)
    labels = [w["word"] + ("  (function word)" if w["function"] else "") for w in ws]
    colours = ["#d9822b" if picked is w else (MUTED if w["function"] else OURS) for w in ws]
    fig.add_trace(go.Bar(x=share, y=list(range(len(ws))), orientation="h", marker_color=colours,
                         text=[f"{v:.0f}%" for v in share], textposition="outside", cliponaxis=False,
                         hovertext=labels, hovertemplate="%{hovertext}: %{x:.1f}% of the mass<extra></extra>",
                         showlegend=False), row=1, col=1)
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(ws))), ticktext=labels, autorange="reversed",
                     row=1, col=1)
    fig.update_xaxes(title_text="% of the mass", range=[0, max(share + [1]) * 1.25], row=1, col=1)
    if where_:
        im = image.convert("RGB")
        if max(im.size) > 256:
            im = im.copy()
            im.thumbnail((256, 256))
        gh, gw = data["grid"]
        W, H = im.size
        dist = z[rows].sum(0).reshape(gh, gw) if rows else np.zeros((gh, gw))
        dist = 100 * dist / (dist.sum() or 1.0)
        fig.add_trace(go.Image(z=np.asarray(im), hoverinfo="skip"), row=1, col=2)
        fig.add_trace(go.Heatmap(z=dist, x0=W / gw / 2, dx=W / gw, y0=H / gh / 2, dy=H / gh, opacity=0.5,
                                 colorscale="Jet", zmin=0, colorbar={"title": {"text": "% of its mass"}, "len": 0.9},
                                 hovertemplate="%{z:.1f}% of the mass here<extra></extra>"), row=1, col=2)
        fig.update_xaxes(visible=False, row=1, col=2)
        fig.update_yaxes(visible=False, scaleanchor="x2", row=1, col=2)
    fig.update_layout(height=max(320, 60 + 24 * len(ws)), margin={"t": 40, "b": 40, "l": 10, "r": 10},
                      font={"size": 13})
    return fig


def cooccurrence_note(model: str, out: dict | None) -> str:
    """The one line above (or instead of) the co-occurrence view."""
    if out is not None and out.get("map") == IMAGE_MAP:
        return "Word–region co-occurrence links the words of a description to regions: it needs a text query."
    if out is None or out.get("cooccurrence") is None:
        return (f"**{model}** has no word–region co-occurrence module (only CCNet's CFM gives one); the map above "
                "is what it shows.")
    return ("**Co-occurrence** (CCNet's CFM): how the model's word–region mass splits over the words, and where "
            "the chosen word's share lies on the image (pick a word above).")


def thumbnail(path: str, side: int = THUMB) -> Image.Image:
    """A result as the page sends it: re-encoded, at most `side` px (never a path into the gallery)."""
    im = open_image(path)
    if max(im.size) > side:
        im.thumbnail((side, side))
    return im


# ---- wording ---------------------------------------------------------------------------------------------------

def model_choices(models: list[dict]) -> list[tuple[str, str]]:
    """(label, name) per model for a dropdown: the name, the imagery it was trained on and its test mR."""
    return [(f"{m['name']}  ·  {domain(m['data'])} mR {m['mr']:.1f}" if m["mr"] is not None else m["name"],
             m["name"]) for m in models]


IMAGERY = {"synthetic": "synthetic scenes", "ucm": "UCM photos"}   # domain() word -> how the page says it


def model_groups(models: list[dict]) -> list[tuple[str, str, list[str]]]:
    """(imagery, its plain name, model names) per imagery the models were trained on, in the models' order."""
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(domain(m["data"]), []).append(m["name"])
    return [(d, IMAGERY.get(d, d), names) for d, names in groups.items()]


def compare_note(m: dict) -> str:
    """The short line under a Compare column: the imagery the model learnt and its measured retrieval."""
    d = domain(m["card"].get("data") if m.get("card") else m.get("data"))
    mr = f"test mR {m['mr']:.1f}" if m.get("mr") is not None else "no test metrics"
    return f"trained on {IMAGERY.get(d, d)} · {mr}"


def gallery_note(title: str) -> str:
    return (f"Searching **{title}**. Type what you are looking for or upload an aerial image; click a result to see "
            "where the model looked.")


def model_note(m: dict) -> str:
    """One model's lines under the model picker: one plain sentence on what it does, then test mR, training data,
    size, input size, epochs."""
    c = m["card"]
    bits = [f"trained on **{dataset_name(c.get('data'))}**", f"{c.get('params', 0) / 1e6:.1f}M params"]
    if (c.get("config") or {}).get("image_size"):
        bits.append(f"{c['config']['image_size']} px input")
    if c.get("epochs"):
        bits.append(f"{c['epochs']} epochs")
    mr = f"test mR **{m['mr']:.1f}**" if m["mr"] is not None else "no test metrics"
    return f"**{m['name']}**: {m.get('summary') or m['description']}  \n{mr} · {' · '.join(bits)}"


# a file-system path: absolute, ./ ../ or ~/ (a URL's "//host/..." is not one)
_PATH = re.compile(r"(?<![\w/])(?:~|\.{1,2})?/(?:[\w.@+-]+/)*([\w.@+-]+)")


def no_paths(text: str) -> str:
    """text with every file-system path cut to its last part ("ucm:../shared/data/ucm_captions" ->
    "ucm:…/ucm_captions"): what the page shows of cards and commands never tells where files lie."""
    return _PATH.sub(lambda m: "…/" + m.group(1), text)


def _pct(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else "–"


def card_markdown(m: dict) -> str:
    """A model card as a short table (data, split, budget, metrics) with the card's JSON behind a "details" fold;
    no file-system paths."""
    c = m["card"]
    data = dataset_name(c.get("data"))
    split = c.get("train_split") or "train"
    sizes = [f"{c[k]:,} {w}" for k, w in (("train_images", "images"), ("train_pairs", "captions"))
             if isinstance(c.get(k), int)]
    rows = [("model", f"{m['name']} ({c.get('arch', '?')})"),
            ("trained on", f"{data}, {split} split" + (f" ({', '.join(sizes)})" if sizes else ""))]
    budget = [f"{c['epochs']} epochs"] if c.get("epochs") else []
    if c.get("train_seconds"):
        budget.append(f"{c['train_seconds'] / 60:.1f} min on {c.get('device', 'cpu')}"
                      + (f" ({c['cpus']} cores)" if c.get("cpus") else ""))
    if c.get("params"):
        budget.append(f"{c['params'] / 1e6:.2f}M parameters")
    rows.append(("budget", " · ".join(budget) or "–"))
    metrics = c.get("metrics") or {}
    for part in ("val", "test"):
        mt = metrics.get(part) or {}
        if mt:
            n = f" ({mt['n_images']} images)" if mt.get("n_images") else ""
            rows.append((f"{part} split{n}", f"mR **{_pct(mt.get('mr'))}** · text→image R@1/5/10 "
                         f"{_pct(mt.get('t2i_r1'))} / {_pct(mt.get('t2i_r5'))} / {_pct(mt.get('t2i_r10'))}"))
    cells = [f"| {k} | {v.replace('|', '/')} |" for k, v in rows]
    table = "\n".join([cells[0], "|---|---|", *cells[1:]])   # the model's row is the header
    details = no_paths(json.dumps(c, indent=1, default=str))
    return f"{table}\n\n<details><summary>details (the whole card)</summary>\n\n```json\n{details}\n```\n\n</details>"


def refused(message: str) -> str:
    """The page's notice line for input it did not use (the results shown stay those of the last search)."""
    return f"⚠️ {message}"


def view_link(here: str, gallery: str, model: str, query: str | None = None, k: int | None = None) -> str:
    """The address that reopens this view: the page's own address (`here`, its query dropped) with the gallery,
    model, query and result count as query parameters (read back by view_params)."""
    base = urlsplit(here or "")
    params = {"gallery": gallery, "model": model, **({"q": query} if query else {}), **({"k": int(k)} if k else {})}
    return urlunsplit((base.scheme, base.netloc, base.path, urlencode(params), ""))


def view_params(href: str) -> dict:
    """The view a page address asks for: {gallery, model, q, k}, those present (first value of each)."""
    qs = parse_qs(urlsplit(href or "").query)
    return {k: qs[k][0] for k in ("gallery", "model", "q", "k") if qs.get(k)}


def status(n_hits: int, n_images: int, what: str, model: str) -> str:
    return f"Top {n_hits} of {n_images:,} images for {what} with **{model}**."


def explain_note(name: str, model: str, out: dict) -> str:
    """The line under the map menu: the result, its score, and which map for which word is shown."""
    plain = map_name(out["map"])[0]
    if out["map"] == IMAGE_MAP:
        return f"**{name}** · {model} · similarity to your image {out['score']:.3f}  \nshowing **{plain}**"
    word = out.get("word")
    what = f"the word **{word.split('@')[0]}**" if word else "the whole sentence"
    how = {"stack": " (its own part of this map)",
           "alone": " (this map with the word alone as the text)"}.get(out.get("word_source") if word else None, "")
    line = f"showing **{plain}** for {what}{how}"
    if word and out.get("same_for_words"):
        line += ": the same as for the whole sentence, this map does not depend on the words"
    return f"**{name}** · {model} · score {out['score']:.3f}  \n{line}"


def compare_caption(hit: dict, out: dict) -> str:
    """Under a Compare column's map: which result and which map (with its measured figure)."""
    label = dict((n, l) for l, n in map_choices([out["map"]], out.get("figures") or {}, out.get("measured_on")))
    return f"#{hit['rank']} **{hit['name']}** · {label[out['map']]}"


def hit_caption(h: dict) -> str:
    """A result's caption: "#rank · label · score" on the first line (what the page shows under the thumbnail),
    the file name on the second (shown on hover)."""
    return " · ".join([f"#{h['rank']}"] + ([h["label"]] if h.get("label") else []) + [f"{h['score']:.3f}"]) \
        + f"\n{h['name']}"


def hit_items(hits: list[dict]) -> list[tuple[Image.Image, str]]:
    """Results as gallery items: (thumbnail, hit_caption)."""
    return [(thumbnail(h["path"]), hit_caption(h)) for h in hits]


def public_hits(hits: list[dict]) -> list[dict]:
    """What the named API returns per result (no file paths)."""
    return [{k: h[k] for k in ("rank", "name", "score", "label")} for h in hits]


# ---- Models tab ------------------------------------------------------------------------------------------------

def cards_table(models: list[dict]):
    """One row per model with a checkpoint, from its card."""
    import pandas as pd   # gradio's Dataframe wants one; pandas comes with gradio

    rows = []
    for m in models:
        c = m["card"]
        val = ((c.get("metrics") or {}).get("val") or {}).get("mr")
        minutes = c.get("train_seconds")
        rows.append([m["name"], domain(c.get("data")), c.get("arch", ""), f"{c.get('params', 0) / 1e6:.2f}M",
                     c.get("epochs", ""), f"{minutes / 60:.1f}" if minutes else "", c.get("device", ""),
                     round(val, 2) if val is not None else None, round(m["mr"], 2) if m["mr"] is not None else None])
    return pd.DataFrame(rows, columns=["model", "data", "arch", "params", "epochs", "train min", "device",
                                       "val mR", "test mR"])


def section_frame(name: str):
    """A results section's table as the doc renders it (its own column templates), for a Dataframe; None when
    the section has no rows yet."""
    import pandas as pd

    sec = results.load(name)
    if not sec.get("rows"):
        return None
    cols = sec["columns"]
    return pd.DataFrame([[results.cell(t, r).replace("`", "") for _, t in cols] for r in sec["rows"]],
                        columns=[h for h, _ in cols])


def _label(row: dict) -> str:
    """A results row's name, short enough for a chart axis."""
    if row.get("kind") == "published":
        return "published " + row["model"].split("(")[0].strip()
    if row.get("kind") == "zero-shot":
        return f"{row['model']} (zero-shot)"
    return row["model"]


def _hbar_layout(fig, title: str, n: int, xtitle: str, xmax: float, legend: bool = False):
    """Horizontal bars readable at any width: one row of ~24 px per bar, labels beside the axis (never rotated),
    room on the right for the value printed after each bar, the title above the plot."""
    fig.update_layout(title={"text": title, "x": 0, "xanchor": "left"}, height=110 + 24 * n + (70 if legend else 0),
                      margin={"t": 50, "b": 120 if legend else 50, "l": 10, "r": 30}, font={"size": 13},
                      xaxis={"title": xtitle, "range": [0, xmax * 1.15]},
                      yaxis={"autorange": "reversed", "automargin": True},
                      # the legend under the axis title, never over the chart's title
                      legend={"orientation": "h", "x": 0, "y": 0, "yanchor": "bottom", "yref": "container"}
                      if legend else None,
                      showlegend=legend, bargap=0.25)
    return fig


def retrieval_figure(section: str, value: str, title: str):
    """mR per row of one results section (`value`: its mR field), best at the top; references in grey."""
    import plotly.graph_objects as go

    pts = sorted(((_label(r), r[value], r.get("kind") in ("baseline", "published"))
                  for r in results.rows(section) if r.get(value) is not None), key=lambda p: -p[1])
    fig = go.Figure(go.Bar(y=[p[0] for p in pts], x=[p[1] for p in pts], orientation="h",
                           text=[f"{p[1]:.1f}" for p in pts], textposition="outside", cliponaxis=False,
                           marker_color=[MUTED if p[2] else OURS for p in pts]))
    return _hbar_layout(fig, title, len(pts), "mR (mean of the six recalls, %)", max([p[1] for p in pts] + [1]))


def map_short(name: str) -> str:
    """A map's name short enough for a chart label: the module's acronym where it has one."""
    plain = map_name(name)[0]
    if plain.endswith(")") and "(" in plain:
        short = plain[plain.rindex("(") + 1:-1]
        head, tail = name[:3], name[3:]
        return f"{short} {tail}" if head in _SCALES and tail.isdigit() else short
    return plain


_REFERENCES = [("baseline_region_sim", "baseline: region–text similarity", "#8fb3e8"),
               ("baseline_gradcam", "baseline: Grad-CAM", "#c9a2d8"), ("random", "random map", MUTED)]


def _pointing_figure(section: str, field: str, title: str, xtitle: str, chance: float | None = None):
    """Per model: its best own map (named beside the model) against the generic baselines and the random map."""
    import plotly.graph_objects as go

    rows = [r for r in results.rows(section) if r.get(field) is not None and r.get("map")]
    models = list(dict.fromkeys(r["model"] for r in rows))
    val = {(r["model"], r["map"]): r[field] for r in rows}
    own = {m: max(((v, k[1]) for k, v in val.items() if k[0] == m and results.own_map(k[1])), default=(0.0, None))
           for m in models}
    ticks = [f"{m} · {map_short(own[m][1])}" if own[m][1] else m for m in models]
    fig = go.Figure()
    fig.add_bar(y=ticks, x=[own[m][0] for m in models], orientation="h", name="own map (the best, named)",
                marker_color=OURS, text=[f"{own[m][0]:.0f}" for m in models], textposition="outside",
                textfont={"size": 12}, constraintext="none", cliponaxis=False)
    for name, label, colour in _REFERENCES:
        fig.add_bar(y=ticks, x=[val.get((m, name), 0.0) for m in models], orientation="h", name=label,
                    marker_color=colour)
    if chance is not None:
        fig.add_vline(x=chance, line_dash="dot", annotation_text=f"chance {chance:.0f}%",
                      annotation_position="bottom right")
    fig.update_layout(barmode="group")
    top = max([v for v in val.values() if v is not None] + [1])
    return _hbar_layout(fig, title, len(models) * (1 + len(_REFERENCES)) // 2 + 2, xtitle, top, legend=True)


def faithfulness_figure():
    """Synthetic scenes (rsdemo/results/faithfulness.json): per model, its best own map against the two generic
    baselines and the random map (pointing game on the object masks)."""
    return _pointing_figure("faithfulness", "pointing", "Do the maps point at the object named? Synthetic scenes",
                            "pointing game % (peak inside the object's mask)")


def grounding_figure():
    """Real UCM photos (rsdemo/results/grounding.json): per model, its best own map's grid pointing hit rate
    against the generic baselines and the random map; the line is chance (one tile in four)."""
    return _pointing_figure("grounding", "hit", "Do the maps point at the scene named? UCM photos, 2×2 mosaics",
                            "hits % (peak on the tile of the scene named)",
                            chance=results.POINTING[results.REAL][2])
