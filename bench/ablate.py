"""Ablation and comparison on the synthetic world: every seed model full and with each module switched off.

    python bench/ablate.py                 # train what is missing (resumable), then write the results sections
    python bench/ablate.py --report-only   # rewrite the sections (and docs/RESULTS.md) from docs/ablation.json
    python bench/ablate.py --epochs 1 --n 60 --seeds 1 --models amfmn-slim --out /tmp/x --no-write  # toy size

Same budget for every row (epochs, batch size, data, learning rate from each model's config), fixed seeds; the
full models (headline rows) run with --seeds seeds, the ablation rows with --ablation-seeds. Each run is
`rsdemo train` in its own process; its best-by-val checkpoint's test metrics are what the table reports.
Per-run results are kept in docs/ablation.json (committed), so the table is regenerated without retraining; a run
over some models replaces only those models' rows there.

Pretrained variants (*-lite0: frozen ImageNet EfficientNet-Lite0 + MiniLM, heads trained) run with the same budget
and seeds as the random-init model they pair with (PAIRS); their comparison is its own section:
    python bench/ablate.py --models amfmn-lite0 ccnet-lite0 ssjdn-lite0 dove-lite0 dual-lite0 --epochs 5 --ablation-seeds 0
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import machine  # noqa: E402
from rsdemo import results  # noqa: E402
from rsdemo.models.registry import model_config  # noqa: E402

MODELS = ["amfmn-slim", "ccnet-slim", "ssjdn-slim", "dove-slim", "clip-tiny"]
# pretrained variant -> the random-init model it is compared with (same architecture; the dual encoder pairs with
# the from-scratch CLIP)
PAIRS = {"amfmn-lite0": "amfmn-slim", "ccnet-lite0": "ccnet-slim", "ssjdn-lite0": "ssjdn-slim",
         "dove-lite0": "dove-slim", "dual-lite0": "clip-tiny"}
KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr"]
STORE = ROOT / "docs" / "ablation.json"


def variants(model: str) -> list[tuple[str, dict]]:
    cfg = model_config(model)
    out = [("full", {})]
    out += [(f"-{k[4:]}", {k: False}) for k, v in cfg.items() if k.startswith("use_") and v]
    return out


def run_one(model, variant, switches, seed, a) -> dict:
    out = Path(a.out) / model / variant.strip("-") / f"seed{seed}"
    card_path = out / "best.json"
    if not (out / "last.json").is_file():
        cmd = [sys.executable, "-m", "rsdemo", "train", "--model", model, "--data", a.data, "--out", str(out),
               "--epochs", str(a.epochs), "--seed", str(seed), "--quiet"]
        for k, v in switches.items():
            cmd += ["--set", f"{k}={json.dumps(v)}"]
        if (out / "last.state.pt").is_file():
            cmd.append("--resume")
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        print(f"  {model} {variant} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    best = json.loads(card_path.read_text())
    last = json.loads((out / "last.json").read_text())
    return {"model": model, "variant": variant, "seed": seed, "switches": switches,
            # a toy-size world may have no test images: then the eval split stands in (and is named)
            "test": {k: best["metrics"].get("test", next(iter(best["metrics"].values())))[k] for k in KEYS},
            "split": "test" if "test" in best["metrics"] else next(iter(best["metrics"])),
            "best_epoch": best.get("best_epoch"),
            "run_seconds": last["train_seconds"], "params": best["params"], "epochs": best["epochs"],
            "data": best["data"], "command": best["command"]}


def _stats(vals: list[float], key: str) -> dict:
    """mean (and population std over seeds, when there are several) under the table's field names."""
    out = {key: statistics.mean(vals)}
    if len(vals) > 1:
        out[f"{key}_sd"] = statistics.pstdev(vals)
    return out


def _mean_sd(key: str) -> list[str]:
    return [f"{{{key}:.2f}} ± {{{key}_sd:.2f}}", f"{{{key}:.2f}}"]


def report(rows: list[dict], meta: dict) -> dict:
    """The "ablation" results section: one row per (model, variant), means over seeds."""
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["model"], r["variant"]), []).append(r)
    out, helped = [], []
    for model in dict.fromkeys(r["model"] for r in rows):
        full = [r["test"]["mr"] for r in groups.get((model, "full"), [])]
        full_mean = statistics.mean(full) if full else None
        for (m, variant), rs in groups.items():
            if m != model:
                continue
            mrs = [r["test"]["mr"] for r in rs]
            row = {"model": model, "variant": variant}
            for k in KEYS:
                row.update(_stats([r["test"][k] for r in rs], k))
            row["delta"] = None if variant == "full" or full_mean is None else statistics.mean(mrs) - full_mean
            if variant != "full" and full_mean is not None and full_mean - statistics.mean(mrs) >= 2:
                helped.append(f"{model}: {variant[1:]} (+{full_mean - statistics.mean(mrs):.2f} mR)")
            row.update({"params_m": rs[0]["params"] / 1e6,
                        "train_min": statistics.mean(r["run_seconds"] for r in rs) / 60,
                        "seeds": ",".join(str(r["seed"]) for r in rs)})
            out.append(row)
    heads = ["i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "mR"]
    return {
        "title": "Ablation and comparison (synthetic world, test split)",
        "before": [f"`python bench/ablate.py` on {meta['data']}: {meta['epochs']} epochs per run, each model's own "
                   f"batch size and learning rate, best epoch by val mR, its test metrics reported; mean ± std over "
                   f"seeds (seeds in the last column). Same metric code and tie rule as above. Machine: "
                   f"{meta['machine']}."],
        "columns": [["model", "{model}"], ["variant", "{variant}"], *([h, _mean_sd(k)] for h, k in zip(heads, KEYS)),
                    ["Δ mR vs full", "{delta:+.2f}"], ["params", "{params_m:.2f}M"], ["train min", "{train_min:.1f}"],
                    ["seeds", "{seeds}"]],
        "rows": out,
        "after": ["Modules whose removal costs ≥ 2 mR: " + ("; ".join(helped) if helped else "none") + ".\n"
                  "A negative Δ means the model did better without the module at this budget; we report it as "
                  "measured. Ablation rows are single runs: read each Δ against the spread of its full row (the "
                  "seed-to-seed noise), and note that 5 epochs on 800 training images is a small budget."]}


def pretraining_report(rows: list[dict], meta: dict) -> dict | None:
    """The "pretraining" results section: each pretrained variant's full rows beside its random-init model's,
    mean ± std of test mR over seeds."""
    full: dict[str, list] = {}
    for r in rows:
        if r["variant"] == "full":
            full.setdefault(r["model"], []).append(r)
    pairs = [(p, b) for p, b in PAIRS.items() if p in full and b in full]
    if not pairs:
        return None
    out = []
    for p, b in pairs:
        mp, mb = [r["test"]["mr"] for r in full[p]], [r["test"]["mr"] for r in full[b]]
        mins = [statistics.mean(r["run_seconds"] for r in full[m]) / 60 for m in (b, p)]
        out.append({"model": p.split("-")[0], "random_init": b, **_stats(mb, "random_mr"), "pretrained": p,
                    "px": model_config(p).get("image_size"), **_stats(mp, "pretrained_mr"),
                    "delta": statistics.mean(mp) - statistics.mean(mb),
                    "seeds": ",".join(str(r["seed"]) for r in full[p]),
                    "random_min": mins[0], "pretrained_min": mins[1]})
    return {
        "title": "Pretrained vs random-init backbones (synthetic world, test split)",
        "before": [
            f"`python bench/ablate.py` (rows from docs/ablation.json; {meta['epochs']} epochs per run, same batch "
            f"size, learning rate and seeds for both columns). Random init: slim CNN at 128 px + BiGRU (CLIP-tiny "
            "for the dual encoder), all weights trained. Pretrained: ImageNet EfficientNet-Lite0 (inputs in [-1, 1], "
            "at the px shown) + all-MiniLM-L6-v2 word features, both frozen; only the heads train, on the encoders' "
            "cached outputs.",
            "Train minutes are wall time on a shared 2-core machine (other jobs ran beside the pretrained runs) and "
            "exclude the encoders' one-time feature caching (the demo cards' `feature_cache_seconds`)."],
        "columns": [["model", "{model}"], ["random-init", "{random_init}"], ["mR", _mean_sd("random_mr")],
                    ["pretrained", "{pretrained}"], ["px", "{px}"], ["mR", _mean_sd("pretrained_mr")],
                    ["Δ mR", "{delta:+.2f}"], ["seeds", "{seeds}"],
                    ["train min (random / pretrained)", "{random_min:.1f} / {pretrained_min:.1f}"]],
        "rows": out}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--n", type=int, help="shorthand for --data synthetic:N")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=3, help="seeds for the full models (headline rows)")
    ap.add_argument("--ablation-seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--out", default=str(ROOT / "runs" / "ablate"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--collect", action="store_true",
                    help="report the runs already finished under --out (no training), e.g. after an interruption")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave docs/ alone")
    a = ap.parse_args(argv)
    if a.n:
        a.data = f"synthetic:{a.n}"
    if a.report_only:
        stored = json.loads(STORE.read_text())
        rows, meta = stored["runs"], stored["meta"]
    else:
        jobs = []
        for m in a.models:
            for variant, sw in variants(m):
                for seed in range(a.seeds if variant == "full" else a.ablation_seeds):
                    jobs.append((m, variant, sw, seed))
        jobs.sort(key=lambda j: (j[3], j[1] != "full"))  # seed 0 of everything first, then the other seeds
        if a.collect:
            jobs = [j for j in jobs if (Path(a.out) / j[0] / j[1].strip("-") / f"seed{j[3]}" / "last.json").is_file()]
        print(f"{len(jobs)} runs, {a.jobs} at a time", flush=True)
        with ThreadPoolExecutor(a.jobs) as ex:
            rows = list(ex.map(lambda j: run_one(*j, a), jobs))
        order = {(m, v): i for i, (m, v) in enumerate((m, v) for m in a.models for v, _ in variants(m))}
        rows.sort(key=lambda r: (order[(r["model"], r["variant"])], r["seed"]))
        meta = {"data": a.data, "epochs": a.epochs, "machine": machine()}
        if STORE.is_file() and not a.no_write:
            # keep the stored rows of the models not run now (same protocol required)
            stored = json.loads(STORE.read_text())
            if (stored["meta"]["data"], stored["meta"]["epochs"]) != (meta["data"], meta["epochs"]):
                raise SystemExit(f"{STORE} holds {stored['meta']['epochs']}-epoch runs on {stored['meta']['data']}; "
                                 f"rerun those settings (--epochs, --data) or move the file")
            ran = set(a.models)
            rows = [r for r in stored["runs"] if r["model"] not in ran] + rows
            names = list(dict.fromkeys([*MODELS, *PAIRS, *(r["model"] for r in rows)]))
            rows.sort(key=lambda r: names.index(r["model"]))
        if not a.no_write:
            STORE.write_text(json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n")
    section = report([r for r in rows if r["model"] not in PAIRS], meta)
    pre = pretraining_report(rows, meta)
    body = results.markdown(section)
    print(body)
    if pre:
        print("\n" + results.markdown(pre))
    if not a.no_write:   # rsdemo/results/{ablation,pretraining}.json, then docs/RESULTS.md
        results.save("ablation", section, doc=not pre)
        if pre:
            results.save("pretraining", pre)
    return body


if __name__ == "__main__":
    main()
