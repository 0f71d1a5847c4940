"""Training throughput (samples/s) of every registered model, against open_clip ViT-B-32 (random init, CLIP's
contrastive loss, same input size, same batch) measured in the same run; with bf16 autocast (what
rsdemo.training uses) on CUDA when a device is present.

One training step is what rsdemo.training does: the model's own loss on a batch of (image, caption) pairs from the
synthetic world, backward, gradient clipping at 2.0, the optimizer of the model's config. The model is built as
rsdemo.training builds it (rsdemo.training.loop.model_for: vocabulary of the training captions, the data's scene
classes).
Usage: python bench/train_speed.py [--models NAME ...] [--batch 16] [--steps 3] [--no-write]
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
from bench.common import world  # noqa: E402
from bench.report import write_section  # noqa: E402

BASELINE = "ViT-B-32"


def _batch(ds, bs: int, size: int, norm: str):
    from rsdemo.training.inputs import ImageCache

    sub = ds.split("train")
    cache = ImageCache.of(sub, size, norm)
    idx = [i % len(sub) for i in range(bs)]
    caps = [sub.records[i].captions[0] for i in idx]
    labels = [sub.records[i].label for i in idx]
    return cache.batch(idx), caps, labels, idx


def _model(name: str, ds):
    from rsdemo.training.loop import model_for

    m, opts = model_for(name, {}, ds.split("train"))
    return m, opts.train


def _baseline(size: int, name: str = BASELINE):
    import open_clip

    from bench.common import openclip_baseline

    return (*openclip_baseline(name, size), open_clip.ClipLoss())


def steps_per_s(step, steps: int, sync) -> list[float]:
    step()  # warm-up: first-call allocation, optimizer state
    sync()
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        out.append(time.perf_counter() - t)
    return out


def measure(kind: str, name_or_size, ds, bs: int, steps: int, device: str, amp: bool, baseline=BASELINE) -> dict:
    import torch

    from rsdemo.training.optim import optimizer
    from rsdemo.training.step import TrainStep

    torch.manual_seed(0)
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if kind == "model":
        m, tcfg = _model(name_or_size, ds)
        m = m.to(dev).train()
        size = m.config.image_size
        images, caps, labels, idx = _batch(ds, bs, size, m.config.normalize)
        images = images.to(dev)
        opt = optimizer(m, tcfg, tcfg.lr)
        step_module = TrainStep(m)

        def loss():
            return step_module(images, caps, caps, labels, idx)["loss"]
    else:
        size = int(name_or_size)
        m, tok, crit = _baseline(size, baseline)
        m = m.to(dev).train()
        images, caps, _, _ = _batch(ds, bs, size, "imagenet")
        images, tokens = images.to(dev), tok(caps).to(dev)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-5, weight_decay=0.1)

        def loss():  # open_clip returns a dict or a tuple depending on output_dict
            out = m(images, tokens)
            if isinstance(out, dict):
                return crit(out["image_features"], out["text_features"], out["logit_scale"])
            return crit(*out[:3])

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            value = loss()
        opt.zero_grad(set_to_none=True)
        value.float().backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 2.0)
        opt.step()

    t = steps_per_s(step, steps, sync)
    return {"size": size, "samples_per_s": bs / statistics.median(t), "runs": [bs / s for s in t]}


def run(models=None, batch=16, steps=3, threads=None, data="synthetic:120", baseline=BASELINE,
        log=print) -> tuple[str, dict]:
    import torch

    from rsdemo import list_models, open_dataset

    torch.set_num_threads(threads or os.cpu_count())
    ds = open_dataset(data)
    models = list(models or list_models())
    modes = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if torch.cuda.is_available() else [])
    res, bases = {}, {}
    for name in models:
        t0 = time.perf_counter()
        res[name] = {}
        for dev, amp in modes:
            key = f"{dev}{' amp' if amp else ''}"
            r = measure("model", name, ds, batch, steps, dev, amp)
            res[name][key] = r
            if (r["size"], key) not in bases:
                bases[(r["size"], key)] = measure("baseline", r["size"], ds, batch, steps, dev, amp,
                                                    baseline)
        log(f"  train {name}: {time.perf_counter() - t0:.0f} s")
    cuda = torch.cuda.is_available()
    lines = ["## 6. Training throughput", "",
             f"samples/s of full training steps (forward with the model's loss, backward, clip at 2.0, optimizer "
             f"step) on batches of {batch} (image, caption) pairs of `{data}`, median of {steps} steps after one "
             f"warm-up, torch threads {threads or os.cpu_count()}. Baseline: open_clip {baseline}, random init, "
             f"CLIP loss, AdamW, at the model's input size, same batch. Ratio: model / baseline (above 1: trains "
             f"faster). The batch is smaller than the configs' (64-100) to keep this run short; throughput per "
             f"sample grows a little with the batch.", "",
             ("CUDA present: rows for fp32 and for bf16 autocast (AMP, as rsdemo.training uses on CUDA)." if cuda else
              "No CUDA device on this machine: CPU only. On CUDA the same code also measures fp32 and bf16 "
              "autocast (AMP)."), "",
             f"| model | device | input px | samples/s | {baseline} samples/s | ratio |", "|---|---|---|---|---|---|"]
    for name in models:
        for key, r in res[name].items():
            b = bases[(r["size"], key)]
            lines.append(f"| {name} | {key} | {r['size']} | {r['samples_per_s']:.1f} | {b['samples_per_s']:.1f} | "
                         f"{r['samples_per_s'] / b['samples_per_s']:.2f}x |")
    lines.append("")
    return "\n".join(lines), {"models": res, "baselines": {f"{s} {k}": v for (s, k), v in bases.items()}}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--data", default="synthetic:120")
    ap.add_argument("--baseline", default=BASELINE, help="open_clip model name of the baseline")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    body, _ = run(a.models, a.batch, a.steps, data=a.data, baseline=a.baseline)
    print(body)
    if not a.no_write:
        write_section("train", body)
    return body


if __name__ == "__main__":
    main()
