"""End to end: a text query through the running app's API (gradio_client over loopback, `/search_text`) to its
top 10, at 1 and 8 concurrent clients, against the same search called in-process (rsdemo.demo.Demo.search_text)
in the same run: the difference is what the HTTP API, Gradio's queue and JSON cost.

The app is app.py's `build()`, launched here on 127.0.0.1 and a free port, closed at the end.
Usage: python bench/e2e.py [--clients 1 8] [--queries 20] [--model NAME] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import queries as captions  # noqa: E402
from bench.report import write_section  # noqa: E402

ENDPOINT = "/search_text"
TITLE = "## 7. End to end: text query through the app's API"


class NoApp(RuntimeError):
    """The app (app.build with a /search_text endpoint) is not in this checkout."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(gallery=None):
    """-> the launched gr.Blocks (queue on), or NoApp saying what is missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import app
    except Exception as e:  # noqa: BLE001 - any import failure means: no app to measure
        raise NoApp(f"app.py does not import ({type(e).__name__}: {e})") from None
    if not hasattr(app, "build"):
        raise NoApp("app.py has no build()")
    demo = app.build(gallery) if gallery is not None else app.build()
    if not any(getattr(fn, "api_name", None) == ENDPOINT.strip("/") for fn in _fns(demo)):
        raise NoApp(f"app.build() has no {ENDPOINT} endpoint yet")
    demo.queue()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True,
                show_error=True)
    return demo


def _fns(demo):
    fns = getattr(demo, "fns", {})
    return fns.values() if isinstance(fns, dict) else fns


def pick_model(client, wanted=None) -> str | None:
    try:
        cat = client.predict(api_name="/models")
    except Exception:  # noqa: BLE001 - an app without /models: let the endpoint use its default
        return wanted
    names = [c.get("name") for c in cat] if isinstance(cat, list) else []
    if wanted:
        return wanted
    return names[0] if names else None   # the page's default: the catalogue lists it first


def timed(client, query: str, model, k: int) -> float:
    t = time.perf_counter()
    out = client.predict(query, model, k, api_name=ENDPOINT)
    dt = time.perf_counter() - t
    if not isinstance(out, (list, dict)) or (isinstance(out, list) and len(out) != k):
        raise RuntimeError(f"{ENDPOINT} returned {str(out)[:200]!r}, expected {k} results")
    return dt


def http_timed(http, url: str, query: str, model, k: int, endpoint: str = ENDPOINT, extra=("",)) -> float:
    """One request through Gradio's HTTP API, as curl, a browser's fetch or `requests` call it: POST
    gradio_api/call/<name> (-> an event id), then GET its event stream until "complete"; one kept-alive connection
    (httpx.Client). -> seconds."""
    import json

    t = time.perf_counter()
    r = http.post(f"{url}gradio_api/call{endpoint}", json={"data": [query, model, k, *extra]})
    r.raise_for_status()
    r = http.get(f"{url}gradio_api/call{endpoint}/{r.json()['event_id']}")
    dt = time.perf_counter() - t
    lines = r.text.splitlines()
    done = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.strip() == "event: complete"]
    out = json.loads(done[0][len("data:"):]) if done else None
    if not out or not isinstance(out[0], (list, dict)) or (isinstance(out[0], list) and len(out[0]) != k):
        raise RuntimeError(f"{endpoint} over HTTP returned {r.text[:200]!r}, expected {k} results")
    return dt


def floor(n: int, k: int) -> dict:
    """What Gradio and its clients cost with no work at all: a separate tiny app whose endpoint returns k
    results at once, timed through gradio_client and through the HTTP API (1 client each). -> p50 ms per arm."""
    import gradio as gr
    import httpx
    from gradio_client import Client

    def noop(query, model, k):
        return [{"rank": i + 1, "name": f"{i}.png", "score": 0.5} for i in range(int(k))]

    with gr.Blocks() as app:
        q, m, kk, out = gr.Textbox(), gr.Textbox(), gr.Number(), gr.JSON()
        gr.Button().click(noop, [q, m, kk], out, api_name="noop")
    app.queue(default_concurrency_limit=2)
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), quiet=True)
    try:
        c, lat = Client(app.local_url, verbose=False), {"client": [], "http": []}
        with httpx.Client(timeout=60) as http:
            for i in range(n + 3):
                t = time.perf_counter()
                c.predict("q", "", k, api_name="/noop")
                a = time.perf_counter() - t
                b = http_timed(http, app.local_url, "q", "", k, "/noop", extra=())
                if i >= 3:
                    lat["client"].append(a)
                    lat["http"].append(b)
    finally:
        app.close()
    return {arm: float(np.median(v)) * 1e3 for arm, v in lat.items()}


def concurrent(url: str, n_clients: int, qs: list[str], model, k: int, per_client: int):
    """Each of n_clients threads has its own Client and sends per_client queries back to back. -> (latencies,
    wall seconds)."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(n_clients)]
    lat, errors = [], []
    start = threading.Barrier(n_clients)

    def work(i):
        try:
            start.wait()
            for j in range(per_client):
                lat.append(timed(clients[i], qs[(i * per_client + j) % len(qs)], model, k))
        except Exception as e:  # noqa: BLE001 - reported after the threads join
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    if errors:
        raise errors[0]
    return np.array(lat), wall


def pixels_arm(d, model, qs, k):
    """(state, pixels) in-process latencies [s] of Demo.search_text, alternating query by query between the
    model's index as built (its cached image state) and the same index without the state (stage 2 from the
    pixels); None for a separable model (no stage 2)."""
    from rsdemo.index import Retriever

    r = d.retriever(model)
    if r.model.separable or not r.state:
        return None
    key = next(key for key, v in d._retrievers.items() if v is r)
    px = Retriever(r.model, r.embeddings, r.index, {**r.manifest, "state": None})
    px.search_text(qs[0], k=k)  # warm-up: decodes the shortlist once, as a long-running app would have
    out = ([], [])
    try:
        for q in qs:
            for arm, idx in ((0, r), (1, px)):
                d._retrievers[key] = idx
                t = time.perf_counter()
                d.search_text(q, model, k)
                out[arm].append(time.perf_counter() - t)
    finally:
        d._retrievers[key] = r
    return np.array(out[0]), np.array(out[1])


def explain_arm(d, model, qs, k):
    """In-process seconds of what a click on a gallery result costs the server: Demo.explain (the model's own map
    from the index's cached state, the map the result opens on) and ui.explained_image (the overlay drawn), for
    the top result of each query (a fresh image-query pair each time: nothing cached)."""
    from rsdemo import ui

    out, seen = [], set()
    for q in qs:
        name = next((h["name"] for h in d.search_text(q, model, k) if (h["name"], q) not in seen), None)
        if name is None:
            continue
        seen.add((name, q))
        t = time.perf_counter()
        ui.explained_image(d.explain(name, q, model))
        out.append(time.perf_counter() - t)
    return np.array(out)


def run(clients=(1, 8), n_queries=20, model=None, k=10, gallery=None, log=print) -> tuple[str, dict]:
    from gradio_client import Client

    # distinct texts for each arm: the app remembers an encoded text (RetrievalModel.remember_texts), so an arm
    # that repeated another arm's queries would time the memo, not a new query
    from bench.common import world

    pool = iter(dict.fromkeys(c for r in world(max(40, n_queries * 2)).records for c in r.captions))

    def fresh(n: int) -> list[str]:
        out = [q for _, q in zip(range(n), pool)]
        if len(out) < n:
            raise RuntimeError(f"e2e: only {len(out)} new captions left, {n} wanted")
        return out

    qs = fresh(max(n_queries, 8))
    try:
        demo = launch(gallery)
    except NoApp as e:
        msg = (f"Not measured in this run: {e}. This section measures app.py's `{ENDPOINT}` endpoint "
               f"(the app contract) and fills in once it exists: `python bench/e2e.py`.")
        log(f"  e2e: {msg}")
        return "\n".join([TITLE, "", msg, ""]), {"skipped": str(e)}
    try:
        url = demo.local_url
        c = Client(url, verbose=False)
        model = pick_model(c, model)
        warm = qs[:min(3, n_queries)]
        for q in warm:  # warm-up: model loading, index, first request
            timed(c, q, model, k)
        base = before = shown = None
        try:
            from rsdemo.demo import Demo

            d = Demo()
            for q in warm:
                d.search_text(q, model, k)
            t = []
            for q in qs[:n_queries]:
                s = time.perf_counter()
                d.search_text(q, model, k)
                t.append(time.perf_counter() - s)
            base = np.array(t)
            d.model(model).remember_texts(0)    # both interleaved arms encode every text, as the baseline did
            before = pixels_arm(d, model, fresh(n_queries), k)
            d.model(model).remember_texts()     # a result is explained with its query's words, as in the app
            shown = explain_arm(d, model, fresh(n_queries), k)
        except Exception as e:  # noqa: BLE001 - the API figures stand without the in-process baseline
            log(f"  e2e: in-process baseline failed: {type(e).__name__}: {e}")
        res = {}
        for n in clients:
            per = max(3, n_queries // n) if n > 1 else n_queries
            lat, wall = concurrent(url, n, fresh(n * per), model, k, per)
            res[n] = {"p50_ms": float(np.median(lat)) * 1e3, "p95_ms": float(np.percentile(lat, 95)) * 1e3,
                      "qps": len(lat) / wall, "count": len(lat)}
            log(f"  e2e {n} client(s): p50 {res[n]['p50_ms']:.0f} ms")
        import httpx

        with httpx.Client(timeout=60) as http:
            http_timed(http, url, warm[0], model, k)   # the connection opened
            lat = np.array([http_timed(http, url, q, model, k) for q in fresh(n_queries)])
        res["http"] = {"p50_ms": float(np.median(lat)) * 1e3, "p95_ms": float(np.percentile(lat, 95)) * 1e3,
                       "qps": len(lat) / lat.sum(), "count": len(lat)}
        log(f"  e2e HTTP API, 1 client: p50 {res['http']['p50_ms']:.0f} ms")
    finally:
        demo.close()
    empty = floor(n_queries, k)
    try:
        from rsdemo.demo import DEFAULT_GALLERY
    except ImportError:
        DEFAULT_GALLERY = "the app's default"
    lines = [TITLE, "",
             f"app.py's `build({'' if gallery is None else repr(gallery)})` (gallery "
             f"`{gallery or DEFAULT_GALLERY}`) launched on 127.0.0.1 with Gradio's queue; `gradio_client.Client.predict(query, "
             f"model, {k}, api_name=\"{ENDPOINT}\")` from threads of this process, each client its own Client, "
             f"queries back to back, every request a text no earlier request sent (the app remembers encoded texts). Model `{model}`. Latency: one request to its top-{k} JSON, p50/p95 over all "
             f"requests. Baseline: `rsdemo.demo.Demo.search_text` called in-process on the same queries "
             f"({n_queries} calls). Ratio: API p50 / in-process p50."
             + (" The two `stage 2 from` rows run the same in-process searches alternately with the index's cached "
                "image state (what the app does) and without it (the shortlist's images reloaded and re-encoded, "
                "what every text query did before the state was cached): their ratio is the state's gain, "
                "measured in one run." if before is not None else ""), "",
             "| clients | requests | p50 ms | p95 ms | requests/s | p50 vs in-process |", "|---|---|---|---|---|---|"]
    if base is not None:
        lines.append(f"| in-process Demo.search_text (baseline) | {len(base)} | {np.median(base) * 1e3:.1f} | "
                     f"{np.percentile(base, 95) * 1e3:.1f} | {len(base) / base.sum():.1f} | 1.0x |")
    if before is not None:
        for arm, t in (("state", before[0]), ("pixels", before[1])):
            lines.append(f"| in-process, stage 2 from the {arm} (interleaved) | {len(t)} | {np.median(t) * 1e3:.1f} | "
                         f"{np.percentile(t, 95) * 1e3:.1f} | {len(t) / t.sum():.1f} | "
                         f"{np.median(t) / np.median(base):.1f}x |")
    if shown is not None and len(shown):
        lines.append(f"| in-process, explain a result (Demo.explain + overlay drawn) | {len(shown)} | "
                     f"{np.median(shown) * 1e3:.1f} | {np.percentile(shown, 95) * 1e3:.1f} | "
                     f"{len(shown) / shown.sum():.1f} | {np.median(shown) / np.median(base):.1f}x |")
    for n, r in res.items():
        ratio = f"{r['p50_ms'] / (np.median(base) * 1e3):.1f}x" if base is not None else "n/a"
        who = "1, Gradio's HTTP API (kept-alive connection)" if n == "http" else f"{n}, gradio_client"
        lines.append(f"| {who} | {r['count']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['qps']:.1f} | {ratio} |")
    lines += ["", "With several clients, requests wait in Gradio's queue (the endpoint's concurrency limit), so "
              "p50 grows with the number of clients while requests/s shows what the server sustains.",
              "", f"Floor, same run: a separate Gradio app whose endpoint does no work and returns {k} results "
              f"answers in p50 **{empty['client']:.1f} ms** through gradio_client and **{empty['http']:.1f} ms** "
              "through the HTTP API: the part of each row above that is the client and Gradio's queue protocol, "
              "not rsdemo. Gradio's HTTP API: POST `gradio_api/call/search_text` with "
              "`{\"data\": [query, model, k, gallery]}`, then GET `gradio_api/call/search_text/<event_id>`.", ""]
    data = {"model": model, "clients": {str(n): r for n, r in res.items()}, "floor_ms": empty,
            "baseline_p50_ms": float(np.median(base)) * 1e3 if base is not None else None}
    if before is not None:
        data["state_p50_ms"], data["pixels_p50_ms"] = (float(np.median(t)) * 1e3 for t in before)
    if shown is not None and len(shown):
        data["explain_p50_ms"] = float(np.median(shown)) * 1e3
    return "\n".join(lines), data


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--queries", type=int, default=20, help="requests per concurrency level")
    ap.add_argument("--model", default=None, help="default: amfmn-slim if the app has it, else its first")
    ap.add_argument("--gallery", default=None, help="passed to app.build (default: the app's own)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    body, _ = run(a.clients, a.queries, a.model, gallery=a.gallery)
    print(body)
    if not a.no_write:
        write_section("e2e", body)
    return body


if __name__ == "__main__":
    main()
