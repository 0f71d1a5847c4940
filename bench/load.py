"""Bounded load test of the demo page: many gradio_client users at once, mixed queries, loopback only.

    python bench/load.py [--clients 32] [--queries 50] [--rounds 3] [--data synthetic:60:7] [--write]

Starts `python app.py` on a free loopback port (or uses --url), computes every query's answer once, serially,
then runs `rounds` rounds in which `clients` threads, each with its own gradio_client.Client, send `queries`
queries each, cycling text search, image search (a gallery image uploaded as a file) and explain. At any step
the users ask about different images, so an answer meant for another user cannot match: each reply is compared
with the serial answer to the same query (names and scores), and an image query must also find the uploaded
image itself first. Reports errors, mismatches, p50/p95/max latency per kind, and the server's resident memory
(VmRSS) before the first round and after each one. --write puts the table into docs/RELIABILITY.md and the raw
figures into docs/load.json.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
RAW = ROOT / "docs" / "load.json"
KINDS = ("text", "image", "explain")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_server(data: str, port: int | None = None, timeout: float = 600, glibc_malloc: bool = False):
    """`python app.py --data DATA` on 127.0.0.1; returns (process, url) once the page is ready. glibc_malloc: keep
    glibc's allocator defaults instead of the app's two arenas (app.tame_malloc), for comparison."""
    port = port or free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if glibc_malloc:
        env["RSDEMO_MALLOC"] = "glibc"
    p = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data", data, "--host", "127.0.0.1", "--port",
                          str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t = time.time()
    log = []
    for line in p.stdout:
        log.append(line)
        if "page ready" in line:
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()  # keep the pipe drained
            return p, f"http://127.0.0.1:{port}/"
        if time.time() - t > timeout:
            break
    p.kill()
    raise RuntimeError("the app did not start:\n" + "".join(log[-20:]))


def plan(data: str, clients: int, queries: int) -> list[list[tuple]]:
    """Per user, its queries: ("text", caption, i) / ("image", path, i) / ("explain", name, caption, i).
    At step j user u asks about image (u + j * clients) mod n: at any step the users ask about different images
    (with clients <= n), so a reply meant for another user is another image's answer."""
    import rsdemo

    ds = rsdemo.open_dataset(data)
    n = len(ds)
    users = []
    for u in range(clients):
        qs = []
        for j in range(queries):
            i = (u + j * clients) % n
            cap = ds.records[i].captions[j % len(ds.records[i].captions)]
            kind = KINDS[(u + j) % 3]
            path = str(ds.image_path(i))
            if kind == "text":
                qs.append(("text", cap, i))
            elif kind == "image":
                qs.append(("image", path, i))
            else:
                qs.append(("explain", Path(path).name, cap, i))
        users.append(qs)
    return users


class HttpUser:
    """One user speaking Gradio's HTTP API as a browser's fetch or curl does (one kept-alive connection; an image
    query uploads the file first; an explained map is downloaded, as the page shows it). Costs the load driver ~1 ms
    of CPU per request where gradio_client costs ~50 ms (bench/e2e.py measures both), so on a 2-core machine the
    users' side no longer takes the server's cores."""

    def __init__(self, url: str):
        import httpx

        self.url, self.http = url, httpx.Client(timeout=120)
        self.session = os.urandom(6).hex()   # one session per user, as a browser tab keeps one per page load

    def upload(self, path: str) -> dict:
        with open(path, "rb") as f:
            r = self.http.post(f"{self.url}gradio_api/upload", files={"files": (Path(path).name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}

    def predict(self, *data, api_name: str):
        r = self.http.post(f"{self.url}gradio_api/call{api_name}",
                           json={"data": list(data), "session_hash": self.session})
        r.raise_for_status()
        r = self.http.get(f"{self.url}gradio_api/call{api_name}/{r.json()['event_id']}")
        lines = r.text.splitlines()
        for i, line in enumerate(lines[:-1]):
            if line.strip() == "event: complete":
                out = json.loads(lines[i + 1][len("data:"):])
                break
            if line.strip() == "event: error":
                raise RuntimeError(f"{api_name}: {lines[i + 1][:200]}")
        else:
            raise RuntimeError(f"{api_name}: no result in {r.text[:200]!r}")
        for item in out:   # files in the answer (the explained map) are fetched, as the page fetches them
            if isinstance(item, dict) and item.get("url"):
                self.http.get(item["url"]).raise_for_status()
        return out[0] if len(out) == 1 else out


def user(url: str, kind: str):
    if kind == "http":
        return HttpUser(url)
    from gradio_client import Client

    return Client(url, verbose=False)


def ask(client, q, k: int = 5):
    if isinstance(client, HttpUser):
        upload = client.upload
    else:
        from gradio_client import handle_file as upload
    if q[0] == "text":
        return [(h["name"], h["score"]) for h in client.predict(q[1], "", k, "", api_name="/search_text")]
    if q[0] == "image":
        return [(h["name"], h["score"]) for h in client.predict(upload(q[1]), "", k, "", api_name="/search_image")]
    _, info = client.predict(q[1], q[2], "", "", "", api_name="/explain")
    return [(info["map"], info["score"])]


def same(a, b, tol: float = 2e-4) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and abs(x[1] - y[1]) <= tol for x, y in zip(a, b))


def references(url: str, users, kind: str = "http") -> dict:
    c = user(url, kind)
    return {q: ask(c, q) for qs in users for q in qs}


def run_round(url: str, users, refs: dict, kind: str = "http") -> dict:
    def one(qs):
        c = user(url, kind)
        out = []
        for q in qs:
            t = time.perf_counter()
            try:
                got, err = ask(c, q), None
            except Exception as e:  # noqa: BLE001 - counted and reported, the load goes on
                got, err = None, f"{type(e).__name__}: {str(e)[:200]}"
            dt = time.perf_counter() - t
            ok = err is None and same(got, refs[q])
            if ok and q[0] == "image":
                ok = Path(got[0][0]).name == Path(q[1]).name  # the uploaded gallery image finds itself first
            out.append((q[0], dt, err, ok))
        return out

    t = time.perf_counter()
    with ThreadPoolExecutor(len(users)) as pool:
        rows = [r for part in pool.map(one, users) for r in part]
    wall = time.perf_counter() - t
    errors = [r[2] for r in rows if r[2]]
    lat = {k: [r[1] for r in rows if r[0] == k and not r[2]] for k in KINDS}
    allt = [r[1] for r in rows if not r[2]]

    def pct(x, p):
        return round(float(np.percentile(x, p)), 3) if x else None

    return {"queries": len(rows), "errors": len(errors), "error_examples": errors[:3],
            "mismatches": sum(1 for r in rows if not r[2] and not r[3]), "wall_s": round(wall, 1),
            "qps": round(len(rows) / wall, 1),
            "p50_s": pct(allt, 50), "p95_s": pct(allt, 95), "max_s": pct(allt, 100),
            "by_kind": {k: {"n": len(v), "p50_s": pct(v, 50), "p95_s": pct(v, 95)} for k, v in lat.items()}}


def run(url: str, data: str, clients: int, queries: int, rounds: int, pid: int | None = None, log=print,
        save=None, allocator: str | None = None, kind: str = "http") -> dict:
    users = plan(data, clients, queries)
    t = time.perf_counter()
    refs = references(url, users, kind)
    log(f"{len(refs)} distinct queries answered serially in {time.perf_counter() - t:.1f} s")
    from bench.report import machine

    out = {"clients": clients, "queries_per_client": queries, "rounds": [], "data": data, "machine": machine(),
           "client": kind,
           "load_avg_before": [round(x, 2) for x in os.getloadavg()],
           "distinct_queries": len(refs),
           "distinct_texts": len({q[1] if q[0] == "text" else q[2] for qs in users for q in qs if q[0] != "image"}), "rss_mib": [round(rss_mib(pid), 1)] if pid else [],
           **({"allocator": allocator} if allocator else {})}
    for k in range(rounds):
        r = run_round(url, users, refs, kind)
        if pid:
            out["rss_mib"].append(round(rss_mib(pid), 1))
        out["rounds"].append(r)
        if save:  # after every round: a long run stopped early still has its figures
            Path(save).write_text(json.dumps(out, indent=1) + "\n")
        log(f"round {k + 1}: {r['queries']} queries, {r['errors']} errors, {r['mismatches']} mismatches, "
            f"p50 {r['p50_s']} s, p95 {r['p95_s']} s, {r['qps']} q/s" +
            (f", server RSS {out['rss_mib'][-1]} MiB" if pid else ""))
    return out


def _rss_range(res: dict) -> str:
    after = res["rss_mib"][1:]
    return f"{min(after)}-{max(after)} MiB over rounds 1-{len(after)}"


def table(res: dict, cmd: str, ref: dict | None = None, ref_name: str = "") -> str:
    from bench.report import machine

    rows = ["| round | queries | errors | mixed-up or wrong answers | p50 s | p95 s | max s | text p95 s | "
            "image p95 s | explain p95 s | queries/s | server RSS after, MiB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(res["rounds"]):
        bk = r["by_kind"]
        rows.append(f"| {i + 1} | {r['queries']} | {r['errors']} | {r['mismatches']} | {r['p50_s']} | {r['p95_s']} | "
                    f"{r['max_s']} | {bk['text']['p95_s']} | {bk['image']['p95_s']} | {bk['explain']['p95_s']} | "
                    f"{r['qps']} | {res['rss_mib'][i + 1] if len(res['rss_mib']) > i + 1 else '-'} |")
    rss = res["rss_mib"]
    steps = ", ".join(f"{b - a:+.0f}" for a, b in zip(rss, rss[1:]))
    growth = (f"Server RSS {rss[0]} MiB after warm-up and the serial reference pass, {rss[-1]} MiB after the last "
              f"round; change per round {steps} MiB." if len(rss) > 1 else "")
    if len(rss) > 2:  # the first round fills what concurrency needs once (threads' allocator arenas, caches)
        after = rss[1:]
        top = max(after[1:]) - after[0]
        growth += (f" After round 1, every round ends between {min(after)} and {max(after)} MiB (the highest later "
                   f"round {top:+.0f} MiB from round 1, the last {after[-1] - after[0]:+.0f} MiB): "
                   + ("memory does not grow across rounds (no later round ends over 5% above round 1)."
                      if top <= 0.05 * after[0] else "memory grows: a later round ended over 5% above round 1."))
    growth += f" Allocator: {res.get('allocator', 'glibc defaults')}."
    if ref and len(ref.get("rss_mib", [])) > 2:
        how = (f"{ref.get('client', 'gradio_client')} users" if ref.get("client", "gradio_client") != res.get("client")
               else ref.get("allocator", "glibc defaults"))
        text = ", ".join(str(r["by_kind"]["text"]["p95_s"]) for r in ref["rounds"])
        growth += (f" The same load with {how} ({ref_name}): server RSS {_rss_range(ref)}, against "
                   f"{_rss_range(res)} here; text p95 per round {text} s; {ref['rounds'][-1]['qps']} queries/s in "
                   f"its last round.")
    who = {"http": "HTTP-API users (Gradio's REST calls on kept-alive connections, as a browser or curl sends "
                   "them; bench/load.py HttpUser)", "gradio_client": "gradio_client users"}[res.get("client",
                                                                                            "gradio_client")]
    return (f"{res['clients']} {who} x {res['queries_per_client']} mixed queries (text, image upload, "
            f"explain; {res['distinct_queries']} distinct) per round against `python app.py --data {res['data']}` "
            f"on loopback; every answer compared with the same query's serial answer. {growth}\n\n"
            + "\n".join(rows) + f"\n\n`{cmd}` on {res.get('machine') or machine()} (load average "
            f"{res.get('load_avg_before')} at the start: other jobs shared the cores). Each endpoint serves 2 requests "
            f"at a time (default_concurrency_limit=2 applies per event), so latency includes queueing behind the "
            f"other users' requests of the same kind (text search rescores its shortlist from the index's cached "
            f"image state, and explain reads the same state for the model's own maps)."
            + (f" The users' texts (text queries and explained captions) are {res['distinct_texts']} distinct "
               f"descriptions: the server encodes each once and remembers it (RetrievalModel.remember_texts, the "
               f"last 256), as it does for a query whose results a user then explains." if "distinct_texts" in res
               else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data", default="synthetic:60:7", help="gallery of the app (default synthetic:60:7)")
    p.add_argument("--url", help="use a running app instead of starting one (no RSS figures)")
    p.add_argument("--json", help="also write the raw results here (after every round)")
    p.add_argument("--from-json", help="write the doc from results saved by --json instead of running")
    p.add_argument("--write", action="store_true", help="write the table into docs/RELIABILITY.md")
    p.add_argument("--glibc-malloc", action="store_true", help="the server keeps glibc's allocator defaults")
    p.add_argument("--compare", help="results (--json) of another run to cite, e.g. one with --glibc-malloc")
    p.add_argument("--client", choices=["http", "gradio_client"], default="http",
                   help="how users talk to the app: Gradio's HTTP API (default: ~1 ms of the driver's CPU per "
                        "request) or gradio_client (~50 ms per request, on the same cores as the server)")
    a = p.parse_args(argv)
    proc = None
    if a.from_json:
        res = json.loads(Path(a.from_json).read_text())
        a.clients, a.queries, a.data = res["clients"], res["queries_per_client"], res["data"]
        a.rounds = len(res["rounds"])
    elif a.url:
        url, pid = a.url, None
    else:
        proc, url = start_server(a.data, glibc_malloc=a.glibc_malloc)
        print(f"app at {url} (pid {proc.pid})", flush=True)
        pid = proc.pid
    if not a.from_json:
        try:
            res = run(url, a.data, a.clients, a.queries, a.rounds, pid, save=a.json,
                      allocator=("glibc defaults" if a.glibc_malloc else "two glibc arenas (app.tame_malloc)")
                      if pid else None, kind=a.client)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    if a.write:
        sys.path.insert(0, str(ROOT))
        from bench.report import write_section

        cmd = "python bench/load.py" + "".join(f" --{k} {v}" for k, v, d in (
            ("clients", a.clients, 32), ("queries", a.queries, 50), ("rounds", a.rounds, 3),
            ("data", a.data, "synthetic:60:7"), ("client", res.get("client", "gradio_client"), "http"))
            if v != d) + " --write"
        ref = json.loads(Path(a.compare).read_text()) if a.compare else None
        if a.compare:
            cmd += f" --compare {a.compare}"
        write_section("load", table(res, cmd, ref, a.compare or ""), doc=DOC, title=TITLE)
        if not a.from_json:  # the raw figures beside the doc (`--from-json docs/load.json --write` redraws it)
            RAW.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {DOC}")
    bad = sum(r["errors"] + r["mismatches"] for r in res["rounds"])
    return 1 if bad else 0


TITLE = "# Reliability\n"

if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
