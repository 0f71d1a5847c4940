"""Explanation latency per result and per map type, for every registered model, against the cost of scoring that
same (image, text) pair once (model.score), measured in the same run.

Map types: the model's own maps (one model.explain call gives all of them; their names are listed), the two
baselines every model gets (rsdemo.explain.region_similarity, gradcam: a backward pass), explain_all (own maps
plus both baselines, what the app shows), and rendering one map onto the image (to_heatmap + overlay).
Usage: python bench/explain_speed.py [--models NAME ...] [--repeats 5] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.common import median_ms, model_for, world  # noqa: E402
from bench.report import write_section  # noqa: E402


def run(models=None, repeats=5, threads=None, log=print) -> tuple[str, dict]:
    import torch

    from rsdemo import list_models
    from rsdemo.data.images import open_image
    from rsdemo.explain import explain_all, gradcam, own_maps, region_similarity
    from rsdemo.ui import overlay

    torch.set_num_threads(threads or os.cpu_count())
    ds = world(40)
    image = open_image(ds.image_path(0))
    text = ds.records[0].captions[0]
    res = {}
    for name in models or list_models():
        t0 = time.perf_counter()
        m, how = model_for(name)
        x = m.preprocess([image])

        def score():
            with torch.no_grad():
                m.score(x, [text])

        ex = m.explain(image, text)  # warm-up, and the map names
        score()
        row = {"weights": how, "maps": sorted(own_maps(ex)), "score_ms": median_ms(score, repeats)}
        if m.explains_state():  # a gallery result: the own maps from the state its index cached (float16)
            with torch.no_grad():
                st = {k: v.half().cpu().numpy() for k, v in m.image_state(x).items()}
            m.explain_state(st, text)
            pix, cached = [], []
            for _ in range(max(repeats, 3)):  # interleaved: a stall from another process hits both arms alike
                pix.append(median_ms(lambda: m.explain(image, text), 1))
                cached.append(median_ms(lambda: m.explain_state(st, text), 1))
            row["explain_ms"], row["state_ms"] = statistics.median(pix), statistics.median(cached)
        else:
            row["explain_ms"] = median_ms(lambda: m.explain(image, text), repeats)
        row["region_sim_ms"] = median_ms(lambda: region_similarity(m, image, text), repeats)
        row["gradcam_ms"] = median_ms(lambda: gradcam(m, image, text), repeats)
        row["all_ms"] = median_ms(lambda: explain_all(m, image, text), repeats)
        first = next(iter(own_maps(ex).values()), None)
        row["render_ms"] = median_ms(lambda: overlay(image, first), repeats) if first is not None else float("nan")
        res[name] = row
        log(f"  explain {name}: {time.perf_counter() - t0:.0f} s")
    lines = ["## 5. Explanation latency per result", "",
             f"One (image, caption) pair of the synthetic world, {image.size[0]} px; each figure the median of "
             f"{repeats} calls, torch threads {threads or os.cpu_count()}. Baseline: model.score on the same pair "
             f"(the cost of the match itself). own maps: one `model.explain` call (all the maps listed), from the "
             f"pixels; "
             f"from state: the same maps from the image state a gallery index caches (float16 `explain_state`: what "
             f"the app runs for a gallery result, no image backbone; the ratio in brackets is pixels / state); "
             f"region-sim and Grad-CAM: the baselines every model gets (Grad-CAM needs a backward pass); "
             f"explain_all: own maps + both baselines, what a result's explanation costs in the app; render: one "
             f"map upsampled, coloured and blended onto the image.", "",
             "| model | weights | own maps | score ms (baseline) | own maps ms (x) | own maps from state ms "
             "(pixels / state) | region-sim ms (x) | Grad-CAM ms (x) | explain_all ms (x) | render one map ms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        s = r["score_ms"]
        lines.append(f"| {name} | {r['weights']} | {', '.join(r['maps']) or 'none'} | {s:.1f} | "
                     f"{r['explain_ms']:.1f} ({r['explain_ms'] / s:.1f}x) | "
                     + (f"{r['state_ms']:.2f} ({r['explain_ms'] / r['state_ms']:.0f}x) | " if "state_ms" in r
                        else "n/a | ")
                     + f"{r['region_sim_ms']:.1f} ({r['region_sim_ms'] / s:.1f}x) | "
                     f"{r['gradcam_ms']:.1f} ({r['gradcam_ms'] / s:.1f}x) | "
                     f"{r['all_ms']:.1f} ({r['all_ms'] / s:.1f}x) | {r['render_ms']:.1f} |")
    lines.append("")
    return "\n".join(lines), {"models": res}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    body, _ = run(a.models, a.repeats)
    print(body)
    if not a.no_write:
        write_section("explain", body)
    return body


if __name__ == "__main__":
    main()
