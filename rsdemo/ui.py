"""How the demo page shows things: colours, overlays, charts, thumbnails and wording. Rendering only.

rsdemo.demo computes (hits, maps, scores, the co-occurrence matrix as data) and rsdemo.page lays the page out;
everything in between that turns data into pixels or sentences is here, importable without gradio (the CLI,
bench/ and tests use the same overlay). The Models tab's tables and charts read rsdemo.results (the data
docs/RESULTS.md is generated from) and the checkpoint cards, never the markdown.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from . import results
from .data.images import open_image
from .data.formats import domain
from .explain import to_heatmap

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


def gallery_note(title: str, n: int) -> str:
    return (f"Searching **{title}** ({n} images). Type what you are looking for or upload an aerial image; click "
            "a result to see where the model looked.")


def model_note(m: dict) -> str:
    """One model's line under the model picker: description, test mR, training data, size, epochs."""
    c = m["card"]
    bits = [f"trained on **{domain(c.get('data'))}**", f"{c.get('params', 0) / 1e6:.1f}M params"]
    if c.get("epochs"):
        bits.append(f"{c['epochs']} epochs")
    mr = f"test mR **{m['mr']:.2f}**" if m["mr"] is not None else "no test metrics"
    return f"**{m['name']}**: {m['description']}  \n{mr} · {' · '.join(bits)}"


def status(n_hits: int, n_images: int, what: str, model: str) -> str:
    return f"Top {n_hits} of {n_images} images for {what} with **{model}**."


def explain_note(name: str, model: str, out: dict) -> str:
    return (f"**{name}** · {model} · score {out['score']:.3f} · map **{out['map']}**  \n"
            f"tokens: {' '.join(out['tokens'])}")


def hit_items(hits: list[dict]) -> list[tuple[Image.Image, str]]:
    """Results as gallery items: (thumbnail, "#rank · score · name · label")."""
    return [(thumbnail(h["path"]), f"#{h['rank']} · {h['score']:.3f} · {h['name']}"
             + (f" · {h['label']}" if h.get("label") else "")) for h in hits]


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


def _label(row: dict) -> str:
    """A results row's name, short enough for a chart axis."""
    if row.get("kind") == "published":
        return "published " + row["model"].split("(")[0].strip()
    if row.get("kind") == "zero-shot":
        return f"{row['model']} (zero-shot)"
    return row["model"]


def retrieval_figure(section: str, value: str, title: str):
    """mR per row of one results section (`value`: its mR field), best first; references in grey."""
    import plotly.graph_objects as go

    pts = sorted(((_label(r), r[value], r.get("kind") in ("baseline", "published"))
                  for r in results.rows(section) if r.get(value) is not None), key=lambda p: -p[1])
    fig = go.Figure(go.Bar(x=[p[0] for p in pts], y=[p[1] for p in pts], text=[f"{p[1]:.1f}" for p in pts],
                           textposition="outside", marker_color=[MUTED if p[2] else OURS for p in pts]))
    fig.update_layout(title=title, yaxis_title="mR", height=400, margin={"t": 50, "b": 120})
    return fig


def faithfulness_figure():
    """Per model: its best own map against the two generic baselines and the random floor."""
    import plotly.graph_objects as go

    rows = [r for r in results.rows("faithfulness") if not r["map"].startswith("oracle")]
    models = list(dict.fromkeys(r["model"] for r in rows))
    pg = {(r["model"], r["map"]): r["pointing"] for r in rows}
    own = {m: max(((v, k[1]) for k, v in pg.items() if k[0] == m and not k[1].startswith(("baseline", "random"))),
                  default=(0.0, "-")) for m in models}
    fig = go.Figure()
    fig.add_bar(x=models, y=[own[m][0] for m in models], name="own map (best)",
                text=[own[m][1] for m in models], textposition="outside")
    for name in ("baseline_region_sim", "baseline_gradcam", "random"):
        fig.add_bar(x=models, y=[pg.get((m, name), 0.0) for m in models], name=name)
    fig.update_layout(title="Heatmaps: pointing game % on the synthetic masks", yaxis_title="pointing game %",
                      barmode="group", height=380, margin={"t": 50, "b": 40})
    return fig


def grounding_figure():
    """Real UCM photos (rsdemo/results/grounding.json): per model, its best own map's grid pointing hit rate
    against the generic baselines and the random map; the 25% line is chance."""
    import plotly.graph_objects as go

    rows = [r for r in results.rows("grounding") if r.get("hit") is not None]
    models = list(dict.fromkeys(r["model"] for r in rows))
    hit = {(r["model"], r["map"]): r["hit"] for r in rows}
    own = {m: max(((v, k[1]) for k, v in hit.items() if k[0] == m
                   and not k[1].startswith("baseline") and k[1] not in ("random", "centre")), default=(0.0, "-"))
           for m in models}
    fig = go.Figure()
    fig.add_bar(x=models, y=[own[m][0] for m in models], name="own map (best)",
                text=[own[m][1] for m in models], textposition="outside")
    for name in ("baseline_region_sim", "baseline_gradcam", "random"):
        fig.add_bar(x=models, y=[hit.get((m, name), 0.0) for m in models], name=name)
    fig.add_hline(y=25, line_dash="dot", annotation_text="chance")
    fig.update_layout(title="Heatmaps on real photos: grid pointing game % (UCM 2x2 mosaics)",
                      yaxis_title="hits %", barmode="group", height=380, margin={"t": 50, "b": 40})
    return fig
