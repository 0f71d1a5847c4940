"""Image encoding throughput and peak memory, text encoding latency: every registered model against open_clip
ViT-B-32 (random init) at the same input size, measured in the same run.

Each model (and each baseline) runs in its own fresh process, so one model's freed memory cannot hide the next
one's peak. Inputs are random tensors already at the model's input size: the figures are the network's cost,
not image decoding or resizing. Memory: peak RSS during the first forward pass of a batch minus the RSS with the
model loaded (sampled every 1 ms on a thread; CPU tensors are not seen by tracemalloc, hence RSS), plus the
weights' size. On CUDA (when present) the same is measured with torch.cuda.max_memory_allocated.
Usage: python bench/encode.py [--models NAME ...] [--batch 32] [--repeats 5] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import PeakRSS, timings, write_section  # noqa: E402

BASELINE = "ViT-B-32"
QUERY = "a red car parked next to a large building near the river"


def _captions(n: int) -> list[str]:
    words = ["a", "small", "red", "car", "near", "two", "white", "planes", "on", "the", "runway", "green", "field",
             "beside", "river", "bridge", "many", "buildings", "around", "square"]
    return [" ".join(words[(i + j) % len(words)] for j in range(8 + i % 7)) for i in range(n)]


def _load(spec: dict):
    """-> (model with encode_image/encode_text, tokenize or None, input size)."""
    if spec["kind"] == "baseline":
        from bench.common import openclip_baseline

        m, tok = openclip_baseline(spec.get("baseline", BASELINE), spec["size"])
        return m, tok, spec["size"]
    from PIL import Image

    from rsdemo import create_model

    m = create_model(spec["name"], **spec.get("overrides", {}))
    size = int(m.preprocess(Image.new("RGB", (64, 64))).shape[-1])  # what the model really takes
    return m, None, size


def measure(spec: dict) -> dict:
    """One model (spec: kind "model" with name, or kind "baseline" with size), in this process."""
    import torch

    torch.set_num_threads(int(spec.get("threads") or os.cpu_count()))
    torch.manual_seed(0)
    m, tok, size = _load(spec)
    m.eval()
    params = sum(p.numel() * p.element_size() for p in m.parameters())
    bs, reps = spec["batch"], spec["repeats"]
    out = {**spec, "size": size, "params_mib": params / 2**20, "devices": {}}
    text = (lambda ts: m.encode_text(tok(ts))) if tok is not None else (lambda ts: m.encode_text(ts))
    with torch.inference_mode():
        out["dim"] = int(text([QUERY]).shape[-1])  # the embedding size, for the search section
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not spec.get("cpu_only") else [])
    for dev in devices:
        m.to(dev)
        x = torch.randn(bs, 3, size, size, device=dev)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def img():
            m.encode_image(x)
            sync()

        r = {}
        with torch.inference_mode():
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                img()
                r["peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
                r["memory_method"] = "torch.cuda.max_memory_allocated"
            else:
                with PeakRSS() as p:
                    img()
                r["peak_mib"] = p.delta / 2**20
                r["memory_method"] = "peak RSS delta (1 ms sampling)"
            img()  # warm-up: the first call also pays one-off kernel setup
            t = timings(img, reps)
            r["images_per_s"] = bs / statistics.median(t)
            r["image_runs"] = [bs / s for s in t]
            if spec.get("text", True):
                caps = _captions(spec.get("text_batch", 64))
                text([QUERY])  # warm-up (tokenizer caches, first-call allocation)
                single = timings(lambda: (text([QUERY]), sync()), max(5, reps * 4))
                r["text1_ms"] = statistics.median(single) * 1e3
                text(caps)
                r["text64_ms"] = statistics.median(timings(lambda: (text(caps), sync()), min(reps, 3))) * 1e3
        out["devices"][dev] = r
    return out


def run_spec(spec: dict, inline: bool = False) -> dict:
    if inline:
        return measure(spec)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"encode bench for {spec} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def checkpoint_sizes(models: list[str]) -> dict[str, int]:
    """{row name: input px} for the committed demo checkpoints (rsdemo/checkpoints/<model>.json) trained at another
    input size than their registered config: the page runs them at the checkpoint's size, so they get a row of
    their own ("ccnet-lite0 @ 256 px") beside the config's."""
    from rsdemo import create_model
    from rsdemo.checkpoint import CHECKPOINT_DIR
    from rsdemo.models.factory import options
    from rsdemo.models.registry import model_config

    def config_size(name):  # the parsed config's, without building the model (loading its weights) where it says
        return options(model_config(name), name).image_size or create_model(name).config.image_size

    out = {}
    for name in models:
        card = CHECKPOINT_DIR / f"{name}.json"
        if not card.is_file():
            continue
        size = json.loads(card.read_text()).get("config", {}).get("image_size")
        if size and size != config_size(name):
            out[f"{name} @ {size} px"] = int(size)
    return out


def run(models=None, batch=32, repeats=5, threads=None, inline=False, text_batch=64, baseline=BASELINE,
        log=print) -> tuple[str, dict]:
    """-> (markdown section, data). models: names (default: every registered model), plus a row per committed
    demo checkpoint whose input size differs from its config's (checkpoint_sizes)."""
    import torch

    from rsdemo import list_models

    models = list(models or list_models())
    specs = {name: {"name": name} for name in models}
    for row, size in checkpoint_sizes(models).items():
        specs[row] = {"name": row.split(" @ ")[0], "overrides": {"image_size": size}}
    models = sorted(specs)
    common = {"batch": batch, "repeats": repeats, "threads": threads or os.cpu_count(), "text_batch": text_batch}
    res, bases = {}, {}
    for name in models:
        t = time.perf_counter()
        res[name] = run_spec({"kind": "model", **specs[name], **common}, inline)
        size = res[name]["size"]
        if size not in bases:  # the baseline at this input size, once (its text tower does not depend on it)
            bases[size] = run_spec({"kind": "baseline", "size": size, "text": not bases, "baseline": baseline,
                                    **common}, inline)
        log(f"  encode {name}: {time.perf_counter() - t:.0f} s")
    cuda = torch.cuda.is_available()
    lines = [
        "## 1. Image encoding throughput and memory; 2. text encoding latency", "",
        f"Every registered model, each in a fresh process (and, as `model @ N px`, each committed demo checkpoint "
        f"trained at another input size than its config's: the size the page runs it at), against open_clip "
        f"{baseline} (random init, "
        f"`force_image_size` = the model's input size) measured in the same run. Batches of {batch} random "
        f"tensors at the input size (network cost only: no decoding or resizing), torch threads "
        f"{common['threads']}, `torch.inference_mode`. images/s: median of {repeats} batches. Peak memory: extra "
        f"RSS during the first forward pass of a batch over the RSS with the model loaded, sampled every 1 ms "
        f"(torch's CPU tensors are invisible to tracemalloc); weights: parameter bytes. Text: one query "
        f"(tokenisation included), median of {max(5, repeats * 4)} calls; a batch of {text_batch} captions, "
        f"median of {min(repeats, 3)}. Ratios are model / baseline: above 1 means faster than {baseline} at that "
        f"size (images/s) or slower (latency).", "",
        ("CUDA is present: the GPU rows are measured too (memory: torch.cuda.max_memory_allocated)." if cuda else
         "No CUDA device on this machine: only CPU rows. The GPU path (same code, `torch.cuda.synchronize`, "
         "memory from `torch.cuda.max_memory_allocated`) runs when a CUDA device is present."), ""]
    for dev in ["cpu"] + (["cuda"] if cuda else []):
        lines += [f"### Image encoding, {dev}", "",
                  f"| model | input px | weights MiB | images/s | {baseline} images/s | ratio | peak memory MiB "
                  f"| {baseline} peak MiB |", "|---|---|---|---|---|---|---|---|"]
        for name in models:
            r, b = res[name], bases[res[name]["size"]]
            d, bd = r["devices"][dev], b["devices"][dev]
            lines.append(f"| {name} | {r['size']} | {r['params_mib']:.1f} | {d['images_per_s']:.1f} | "
                         f"{bd['images_per_s']:.1f} | {d['images_per_s'] / bd['images_per_s']:.2f}x | "
                         f"{d['peak_mib']:.0f} | {bd['peak_mib']:.0f} |")
        base_text = next(iter(bases.values()))["devices"][dev]
        lines += ["", f"### Text encoding latency, {dev}", "",
                  f"| model | 1 query ms | ratio to {baseline} | {text_batch} captions ms | ratio to {baseline} |",
                  "|---|---|---|---|---|",
                  f"| {baseline} text tower (baseline) | {base_text['text1_ms']:.2f} | 1.00x | "
                  f"{base_text['text64_ms']:.1f} | 1.00x |"]
        for name in models:
            d = res[name]["devices"][dev]
            lines.append(f"| {name} | {d['text1_ms']:.2f} | {d['text1_ms'] / base_text['text1_ms']:.2f}x | "
                         f"{d['text64_ms']:.1f} | {d['text64_ms'] / base_text['text64_ms']:.2f}x |")
        lines.append("")
    return "\n".join(lines), {"models": res, "baselines": {str(k): v for k, v in bases.items()},
                               "baseline": baseline}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--text-batch", type=int, default=64)
    ap.add_argument("--baseline", default=BASELINE, help="open_clip model name of the baseline")
    ap.add_argument("--inline", action="store_true", help="measure in this process (memory figures less clean)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(measure(json.loads(a.worker))))
        return ""
    body, _ = run(a.models, a.batch, a.repeats, a.threads, a.inline, a.text_batch, a.baseline)
    print(body)
    if not a.no_write:
        write_section("encode", body)
    return body


if __name__ == "__main__":
    main()
