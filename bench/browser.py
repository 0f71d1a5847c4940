"""Query to thumbnails in a real browser: what a user waits for after pressing Search.

    python bench/browser.py [--queries 12] [--no-ucm] [--no-write]

Starts `python app.py` on a free loopback port (the synthetic demo gallery; then the UCM val gallery when
../shared/data holds it, or RSDEMO_SHARED_DATA), opens the page in Debian's chromium through playwright (never
`playwright install`), and for each query: types it (not timed), then, timed inside the page with
performance.now(), clicks Search and waits until the results gallery shows a new set of thumbnails and every one of
them is decoded. Beside it, in the same run, the same queries through the app's HTTP API (bench.e2e.http_timed,
/search_text): the browser figure minus the API figure is what the page itself (Gradio's queue, websocket,
thumbnail download and render) adds. Writes the "browser" section of docs/BENCHMARKS.md. Needs chromium and
playwright (requirements-dev.txt); without them it says so and exits 2.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.app_start import start, stop  # noqa: E402
from bench.e2e import http_timed  # noqa: E402
from bench.report import machine, write_section  # noqa: E402

SYNTHETIC = ["two white planes parked beside the runway", "a red ship next to a pier", "many green trees",
             "three storage tanks near a road", "a baseball field surrounded by trees", "a bridge over a river",
             "a small blue house beside a field", "four red vehicles on a bridge", "a beach with three large boats",
             "an industrial area with storage tanks", "a road crossing a forest", "two orange houses near trees",
             "planes on an airfield"]
UCM = ["many airplanes parked at the airport", "a baseball diamond next to some trees", "a freeway with cars",
       "boats docked in the harbor", "storage tanks beside a road", "dense houses along the streets",
       "a golf course with sand bunkers", "a river through a forest", "a tennis court beside houses",
       "a parking lot full of cars", "waves on a sandy beach", "an overpass over a highway", "mobile homes in rows"]
API_PREFIX = "an aerial photo of "   # the API's queries: the page's, made new to the app's memo of encoded texts
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

# Clicks Search and resolves (in ms, page clock) when the results show a set of images other than `old`, all
# decoded. Polled every animation frame, so the figure is what the screen shows, to ~16 ms.
TIMED_CLICK = """
async (old) => {
  const imgs = () => Array.from(document.querySelectorAll('#results img'));
  const t0 = performance.now();
  document.querySelector('#search-btn').click();
  return await new Promise((done, fail) => {
    const check = () => {
      const now = imgs();
      const srcs = now.map(i => i.src).join('|');
      if (now.length && srcs !== old && now.every(i => i.complete && i.naturalWidth > 0)) {
        done(performance.now() - t0);
      } else if (performance.now() - t0 > 60000) { fail('no new results within 60 s'); }
      else { requestAnimationFrame(check); }
    };
    requestAnimationFrame(check);
  });
}
"""
SRCS = "() => Array.from(document.querySelectorAll('#results img')).map(i => i.src).join('|')"


def shared_data() -> Path:
    return Path(os.environ.get("RSDEMO_SHARED_DATA", ROOT.parent / "shared" / "data"))


def ucm_args() -> list[str] | None:
    d = shared_data()
    if (d / "ucm_images").is_dir() and (d / "ucm_captions").is_dir():
        return ["--gallery", str(d / "ucm_images"), "--data", f"ucm:{d / 'ucm_captions'}", "--split", "val"]
    return None


def measure(name: str, extra: list[str], queries: list[str], n: int, browser) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        proc, client, started = start(cache, extra)
        try:
            url = client.src if isinstance(client.src, str) else str(client.src)
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.goto(url, wait_until="load")
            pg.locator("#query textarea").wait_for(timeout=60_000)
            label = pg.locator("#model input").input_value() if pg.locator("#model input").count() else ""
            model = label.split("·")[0].strip()   # the menu shows "name  ·  imagery mR ..."
            page_ms, api_ms = [], []
            http = httpx.Client(timeout=60)
            for i in range(n + 1):                     # the first query warms the page up: not counted
                q = queries[i % len(queries)]
                pg.locator("#query textarea").fill(q)
                old = pg.evaluate(SRCS)
                ms = pg.evaluate(TIMED_CLICK, old)
                # a text the app has not encoded yet (the page just sent q: its memo would answer q for free)
                api = 1000 * http_timed(http, url, API_PREFIX + q, "", 10)
                if i:
                    page_ms.append(ms)
                    api_ms.append(api)
            pg.close()
            http.close()
        finally:
            stop(proc)
    page_ms.sort()
    return {"gallery": name, "model": model, "queries": n, "start_s": started,
            "page_p50_ms": statistics.median(page_ms), "page_max_ms": page_ms[-1],
            "api_p50_ms": statistics.median(api_ms)}


def report(rows: list[dict]) -> str:
    lines = ["## Browser: query to thumbnails shown", "",
             "`python bench/browser.py`: `python app.py` on each gallery, the page in chromium (playwright) at "
             "1400x1000; timed in the page from the Search click until a new set of result thumbnails is shown "
             "and decoded (the first query not counted; every query a new text, so none is served from the app's "
             f"memo of encoded texts); the same queries, each prefixed \"{API_PREFIX.strip()}\" so it is new to "
             "that memo too, through the app's HTTP API (POST gradio_api/call/search_text, then its event stream; "
             f"top 10) in the same run. Machine: {machine()}.", "",
             "| gallery | model | queries | browser p50 | browser max | API p50 | page's own share |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['gallery']} | {r['model'] or 'default'} | {r['queries']} | {r['page_p50_ms']:.0f} ms | "
                     f"{r['page_max_ms']:.0f} ms | {r['api_p50_ms']:.0f} ms | "
                     f"{r['page_p50_ms'] - r['api_p50_ms']:.0f} ms |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=12, help="at most 12: each query a new text")
    p.add_argument("--no-ucm", action="store_true", help="the synthetic gallery only")
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args(argv)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if not exe:
        print("bench/browser.py needs Debian's chromium (apt-get install chromium) and playwright "
              "(pip install -r requirements-dev.txt)", file=sys.stderr)
        return 2
    galleries = [("synthetic demo gallery", [], SYNTHETIC)]
    ucm = None if a.no_ucm else ucm_args()
    if ucm:
        galleries.append(("UCM-captions val (210 real photos)", ucm, UCM))
    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=FLAGS)
        for name, extra, queries in galleries:
            rows.append(measure(name, extra, queries, a.queries, browser))
            print(rows[-1], flush=True)
        browser.close()
    text = report(rows)
    print(text)
    if not a.no_write:
        write_section("browser", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
