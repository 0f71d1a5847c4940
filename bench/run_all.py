"""Every benchmark in one command; regenerates docs/BENCHMARKS.md (and the plots beside it).

    python -m bench                      # the full run (about 15-20 min on 2 CPU cores)
    python -m bench --toy --doc /tmp/B.md  # every benchmark at toy size (a minute), for tests
    python -m bench --only search e2e    # some sections; the others (and the header) keep what the doc had

Sections: machine and versions (with the headline ratios), 1-2 encoding, 3 search, 4 rerank, 5 explanations,
6 training, 7 end to end through the app's API, synthetic-world generation, plots. Every figure is the median of
repeated runs with a ratio to a baseline measured in the same run. A section that fails is reported in the doc
(and the exit status), never left silently stale. Sections written by other scripts (e.g. app-start) are kept.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import DOC, system, versions  # noqa: E402

def _default_model() -> str:
    """The demo's default: the committed checkpoint with the best measured test mR."""
    from rsdemo.checkpoint import default_model
    return default_model()


DEFAULT_MODEL = _default_model()
ORDER = ["machine", "encode", "search", "rerank", "explain", "train", "e2e", "synthetic", "plots"]
STEPS = ORDER[1:-1]
TITLE = ("# Benchmarks\n\nEvery figure here is written by a script in bench/; `python -m bench` regenerates them "
         "all (the sections below name their own commands too).\n")

FULL = {
    "encode": {"batch": 16, "repeats": 3, "text_batch": 64},
    "search": ["--sizes", "1000", "10000", "100000", "1000000", "--build-threads", str(os.cpu_count() or 1)],
    "rerank": {"gallery": 100, "ks": (10, 25, 50, 100), "n_queries": 3, "repeats": 3, "build_images": 50},
    "explain": {"repeats": 3},
    "train": {"batch": 16, "steps": 2, "data": "synthetic:120"},
    "e2e": {"clients": (1, 8), "n_queries": 24},
    "synthetic": ["--n", "300", "--repeats", "3"],
}
TOY_MODELS = ["amfmn-slim", "clip-tiny"]
TOY = {
    "encode": {"batch": 2, "repeats": 1, "text_batch": 4, "baseline": "toy", "models": TOY_MODELS[:1]},
    "search": ["--sizes", "1000", "10000", "--dims", "256", "64", "--small-max", "1000", "--queries", "10",
               "--batch", "20", "--overhead-queries", "10", "--repeats", "1", "--big", "10000", "--big-queries",
               "10", "--big-batch", "20", "--hnsw-max", "1000", "--pq-min", "10000"],
    "rerank": {"gallery": 20, "ks": (5, 10), "n_queries": 1, "repeats": 1, "models": TOY_MODELS},
    "explain": {"repeats": 1, "models": TOY_MODELS},
    "train": {"batch": 2, "steps": 1, "data": "synthetic:40", "baseline": "toy", "models": TOY_MODELS[:1]},
    "e2e": {"clients": (1, 2), "n_queries": 2},
    "synthetic": ["--n", "10", "--repeats", "1"],
}


def sections(doc: Path) -> list[tuple[str, str]]:
    text = doc.read_text() if doc.exists() else ""
    return re.findall(r"<!-- ([\w-]+) -->\n(.*?)\n<!-- /\1 -->", text, re.S)


def assemble(doc: Path, new: dict[str, str]) -> None:
    """Writes the doc: the title, this script's sections in ORDER (new bodies, else the doc's old ones), then
    every other script's section as it was."""
    old = sections(doc)
    have = dict(old)
    parts = [TITLE.rstrip()]
    for name in ORDER:
        body = new.get(name, have.get(name))
        if body:
            parts.append(f"<!-- {name} -->\n{body.rstrip()}\n<!-- /{name} -->")
    parts += [f"<!-- {n} -->\n{b.rstrip()}\n<!-- /{n} -->" for n, b in old if n not in ORDER]
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text("\n\n".join(parts) + "\n")
    os.replace(tmp, doc)


def step(name: str, cfg, log):
    """-> (markdown, data) of one section."""
    if name == "encode":
        from bench import encode
        c = dict(cfg)
        return encode.run(c.pop("models", None), log=log, **c)
    if name == "search":
        from bench import search
        return search.run(cfg, log=log)
    if name == "rerank":
        from bench import rerank
        c = dict(cfg)
        return rerank.run(c.pop("models", None), log=log, **c)
    if name == "explain":
        from bench import explain_speed
        c = dict(cfg)
        return explain_speed.run(c.pop("models", None), log=log, **c)
    if name == "train":
        from bench import train_speed
        c = dict(cfg)
        return train_speed.run(c.pop("models", None), log=log, **c)
    if name == "e2e":
        from bench import e2e
        return e2e.run(log=log, **cfg)
    if name == "synthetic":
        from bench import synthetic_speed
        return synthetic_speed.main([*cfg, "--no-write"]), None
    raise ValueError(name)


def headline(data: dict) -> list[str]:
    """The ratios users ask first, from this run's data."""
    out = []
    enc = data.get("encode")
    if enc and DEFAULT_MODEL in enc["models"]:
        # the default's published checkpoint, at its own input size where it has a row of its own
        key = next((k for k in enc["models"] if k.startswith(f"{DEFAULT_MODEL} @ ")), DEFAULT_MODEL)
        m = enc["models"][key]
        b = enc["baselines"][str(m["size"])]
        r = m["devices"]["cpu"]["images_per_s"] / b["devices"]["cpu"]["images_per_s"]
        out.append(f"- Image encoding, CPU: the default model {DEFAULT_MODEL} encodes "
                   f"{m['devices']['cpu']['images_per_s']:.0f} images/s, **{r:.2f}x** open_clip "
                   f"{enc.get('baseline', 'ViT-B-32')} at its "
                   f"input size ({m['size']} px, {b['devices']['cpu']['images_per_s']:.0f} images/s).")
    recs = data.get("search") or []
    big = max((r["n"] for r in recs if r["kind"] == "hnsw"), default=None)
    if big:
        dim = recs[0]["dim"]
        flat = next(r for r in recs if r["n"] == big and r["dim"] == dim and r["kind"] == "flat")
        hnsw = next(r for r in recs if r["n"] == big and r["dim"] == dim and r["kind"] == "hnsw" and "overhead" in r)
        out.append(f"- Search at {big:,} vectors (dim {dim}, 1 thread): HNSW (Retriever defaults) p50 "
                   f"{hnsw['p50_ms']:.3f} ms against exact {flat['p50_ms']:.3f} ms: **{hnsw['speedup']:.1f}x** "
                   f"the speed of the exact scan at recall@10 {hnsw['recall']:.3f}, for a {hnsw['build_s']:.1f} s "
                   f"build (exact: {flat['build_s']:.2g} s) and "
                   f"{hnsw['memory_mib'] / flat['memory_mib']:.2f}x the memory.")
    over = [r for r in recs if "overhead" in r]
    if over:
        worst = max(over, key=lambda r: r["overhead"])
        big_over = [r for r in over if r["n"] >= 10_000]
        wb = max(big_over, key=lambda r: r["overhead"]) if big_over else None
        out.append(f"- rsdemo's search layer over raw FAISS: at most **{wb['overhead'] * 100:+.1f}%** from 10k "
                   f"vectors on ({wb['index']}, {wb['n']:,})" if wb else "- rsdemo's search layer over raw FAISS:")
        out[-1] += (f"; at most {worst['overhead'] * 100:+.1f}% overall ({worst['index']}, {worst['n']:,} x "
                    f"{worst['dim']}, where raw FAISS doing the same job takes {worst['raw_ms'] * 1e3:.0f} us and the "
                    f"layer adds "
                    f"{(worst['rsdemo_ms'] - worst['raw_ms']) * 1e3:.1f} us).")
    rer = data.get("rerank")
    if rer and rer.get("models"):
        k = 50 if 50 in rer["ks"] else rer["ks"][-1]
        worst = max(rer["models"].items(), key=lambda kv: kv[1]["state"][k] / kv[1]["stage1_ms"])
        name, w = worst
        out.append(f"- Stage-2 rerank at K={k} from the cached image state: at most "
                   f"**{w['state'][k] / w['stage1_ms']:.1f}x** "
                   f"stage 1 alone ({name}; from the pixels: {w['pixels'][k] / w['stage1_ms']:.0f}x).")
    e2e = data.get("e2e")
    if e2e and e2e.get("clients"):
        one = e2e["clients"].get("1")
        if one:
            base = e2e.get("baseline_p50_ms")
            out.append(f"- End to end through the app's API, 1 client: p50 {one['p50_ms']:.0f} ms"
                       + (f" ({one['p50_ms'] / base:.1f}x the same search in-process)." if base else "."))
    return out


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the encode workers)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine_section(info0: dict, info1: dict, ver: dict, times: list, data: dict, total: float, argv) -> str:
    import torch

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "none (torch.cuda.is_available() is False): GPU rows not measured"
    lines = ["## Machine, versions and headline", "",
             f"`python -m bench{' ' + ' '.join(argv) if argv else ''}` on "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC: {total / 60:.1f} min wall clock, "
             f"{cpu_seconds() / 60:.1f} min of CPU time (user + system, this process and its workers). On "
             f"{info0['cores']} cores that nobody else uses, the wall clock is at most about the CPU time (most "
             f"steps use 1-2 threads); under load it stretches, as the load averages below show.", "",
             f"- CPU: {info0['cpu']}, {info0['cores']} cores; RAM {info0['ram_gib']} GiB; {info0['os']}",
             f"- GPU: {gpu}",
             "- Versions: " + ", ".join(f"{k} {v}" for k, v in ver.items()),
             f"- Load average (1/5/15 min) at the start {info0['load']}, at the end {info1['load']}: other jobs "
             f"(model training, tests) shared this machine during the run, so absolute figures are pessimistic; "
             f"each ratio compares two measurements taken minutes apart under the same conditions.", "",
             "Headline (this run):", "", *headline(data), "",
             "| section | wall s | CPU s | load average at its end |", "|---|---|---|---|",
             *[f"| {n} | {s:.0f} | {c:.0f} | {ld} |" for n, s, c, ld in times], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--toy", action="store_true", help="every benchmark at toy size (tests)")
    ap.add_argument("--doc", default=str(DOC), help="the markdown file to write (plots go beside it)")
    ap.add_argument("--only", nargs="+", choices=STEPS, default=None)
    ap.add_argument("--skip", nargs="+", choices=STEPS, default=[])
    ap.add_argument("--no-plots", action="store_true")
    args = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(args)
    doc = Path(a.doc)
    cfg = TOY if a.toy else FULL
    t_all = time.perf_counter()
    info0, ver = system(), versions()

    def log(msg):
        print(msg, flush=True)

    new, data, times, failed = {}, {}, [], []
    for name in STEPS:
        if (a.only and name not in a.only) or name in a.skip:
            continue
        c = cfg[name]
        if name == "search" and not a.toy and "encode" in data:  # every distinct model dim, default's first
            dims = [data["encode"]["models"].get(DEFAULT_MODEL, {}).get("dim")]
            dims += sorted({m["dim"] for m in data["encode"]["models"].values()})
            c = [*c, "--dims", *[str(d) for d in dict.fromkeys(d for d in dims if d)]]
        log(f"{name} ...")
        t, cpu = time.perf_counter(), cpu_seconds()
        try:
            new[name], data[name] = step(name, c, log)
        except Exception as e:  # noqa: BLE001 - one broken section must not cost the others' 20 minutes
            failed.append(name)
            new[name] = (f"## {name}: failed in the last run\n\n`{type(e).__name__}: {e}`\n\n```\n"
                         f"{traceback.format_exc()[-3000:]}```\n")
            log(f"{name} FAILED: {type(e).__name__}: {e}")
        secs = time.perf_counter() - t
        if a.only:  # say so: the header's timings and load are the full run's
            new[name] = new[name].rstrip() + (
                f"\n\n_This section was rerun alone (`python -m bench {' '.join(args)}`, "
                f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M')} UTC, {secs:.0f} s, load average "
                f"{os.getloadavg()[0]:.1f}); the header's timings are the full run's._\n")
        times.append((name, secs, cpu_seconds() - cpu, ", ".join(f"{x:.1f}" for x in os.getloadavg())))
        log(f"{name}: {secs:.0f} s")
        assemble(doc, new)  # after every section: a crash later keeps what is done
    if not a.no_plots and not a.only:
        from bench import plots

        out = []
        recs = data.get("search") or []
        for res in (plots.search_latency(recs, doc.parent),
                    plots.model_throughput(data.get("encode"), data.get("train"), doc.parent)):
            if res:
                rel = res["html"].name
                png = (f"![{res['html'].stem}]({res['png'].name})" if res["png"] else
                       f"PNG not written ({res['png_error']}): kaleido with a Chrome/Chromium is needed")
                out.append(f"- [{rel}]({rel}) (interactive; plotly.js from its CDN)\n\n  {png}")
        new["plots"] = "\n".join(["## Plots", "", "Latency against gallery size (section 3) and throughput per "
                                  "model (sections 1 and 6), written by bench/plots.py in the same run.", "", *out])
    total = time.perf_counter() - t_all
    if not a.only:  # a partial rerun keeps the full run's header (its headline needs every section's data)
        new["machine"] = machine_section(info0, system(), ver, times, data, total, args)
    assemble(doc, new)
    log(f"wrote {doc} in {total / 60:.1f} min" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
