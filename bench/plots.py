"""Plotly figures of a bench run, saved next to the doc as HTML (always) and PNG (when kaleido and a Chrome or
Chromium are available; kaleido 1.x drives the browser it finds, e.g. Debian's /usr/bin/chromium)."""
from __future__ import annotations

from pathlib import Path


def _save(fig, out: Path, name: str) -> dict:
    """-> {"html": path, "png": path or None, "png_error": reason or None}."""
    out.mkdir(parents=True, exist_ok=True)
    html = out / f"{name}.html"
    # plotly.js from its CDN keeps each file small; the PNG is the offline copy
    fig.write_html(html, include_plotlyjs="cdn", full_html=True)
    res = {"html": html, "png": None, "png_error": None}
    try:
        fig.write_image(out / f"{name}.png", width=900, height=520, scale=1)
        res["png"] = out / f"{name}.png"
    except Exception as e:  # noqa: BLE001 - no kaleido or no browser: the HTML stands alone
        res["png_error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return res


def search_latency(recs: list[dict], out: Path, dim: int | None = None) -> dict | None:
    """p50 latency against gallery size, one line per index (each at its default query setting)."""
    import plotly.graph_objects as go

    if not recs:
        return None
    dim = dim or recs[0]["dim"]
    keep = [r for r in recs if r["dim"] == dim and "overhead" in r]  # the rows measured at the default setting
    fig = go.Figure()
    for name in dict.fromkeys(r["index"] for r in keep):
        pts = sorted((r["n"], r["p50_ms"], r["recall"]) for r in keep if r["index"] == name)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                 customdata=[p[2] for p in pts],
                                 hovertemplate="%{x:,} vectors<br>p50 %{y:.3f} ms<br>recall@10 %{customdata:.3f}"))
    raw = sorted((r["n"], r["raw_ms"], r["rsdemo_ms"]) for r in keep if r["kind"] == "flat")
    if raw:
        fig.add_trace(go.Scatter(x=[p[0] for p in raw], y=[p[2] for p in raw], mode="lines", name="flat via rsdemo "
                                 "Retriever.search_vector", line={"dash": "dot"}))
    fig.update_layout(title=f"Single-query p50 latency against gallery size (dim {dim}, 1 thread)",
                      xaxis={"title": "gallery size (vectors)", "type": "log"},
                      yaxis={"title": "p50 latency (ms)", "type": "log"}, template="plotly_white")
    return _save(fig, out, "bench_search_latency")


def model_throughput(encode: dict, train: dict | None, out: Path) -> dict | None:
    """Images/s (encoding) and samples/s (training) per model, each beside its ViT-B-32 baseline at the same
    input size."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not encode or not encode.get("models"):
        return None
    models = list(encode["models"])
    rows = 2 if train and train.get("models") else 1
    fig = make_subplots(rows=rows, cols=1, subplot_titles=["image encoding, CPU (images/s)"] +
                        (["training, CPU (samples/s)"] if rows == 2 else []), vertical_spacing=0.18)
    base = encode["baselines"]
    fig.add_trace(go.Bar(x=models, y=[encode["models"][m]["devices"]["cpu"]["images_per_s"] for m in models],
                         name="model", marker_color="#1f77b4"), row=1, col=1)
    fig.add_trace(go.Bar(x=models, y=[base[str(encode["models"][m]["size"])]["devices"]["cpu"]["images_per_s"]
                                      for m in models],
                         name=f"open_clip {encode.get('baseline', 'ViT-B-32')} at the same input size",
                         marker_color="#bbbbbb"), row=1, col=1)
    if rows == 2:
        tm = [m for m in models if m in train["models"]] + [m for m in train["models"] if m not in models]
        fig.add_trace(go.Bar(x=tm, y=[train["models"][m]["cpu"]["samples_per_s"] for m in tm], showlegend=False,
                             marker_color="#1f77b4"), row=2, col=1)
        fig.add_trace(go.Bar(x=tm, y=[train["baselines"][f"{train['models'][m]['cpu']['size']} cpu"]["samples_per_s"]
                                      for m in tm], showlegend=False, marker_color="#bbbbbb"), row=2, col=1)
    fig.update_yaxes(type="log")
    fig.update_layout(barmode="group", title=f"Throughput per model against {encode.get('baseline', 'ViT-B-32')} "
                      "(same run, same input size)",
                      template="plotly_white", height=700 if rows == 2 else 450,
                      legend={"orientation": "h", "y": -0.15})
    return _save(fig, out, "bench_model_throughput")
