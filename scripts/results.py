"""Measures the "Demo checkpoints" results section (rsdemo/results/demo.json, then docs/RESULTS.md) from the
committed model cards and, for reference, the random and bag-of-scene-words baselines measured on the same split
by the same metric code.

    python scripts/results.py
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rsdemo.baselines import BASELINES  # noqa: E402
from rsdemo.data.formats import open_dataset  # noqa: E402
from rsdemo.evaluate import recall  # noqa: E402
from rsdemo import results  # noqa: E402

KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr"]


COLUMNS = [["model", "{model}"], ["i2t R@1", "{i2t_r1:.2f}"], ["R@5", "{i2t_r5:.2f}"], ["R@10", "{i2t_r10:.2f}"],
           ["t2i R@1", "{t2i_r1:.2f}"], ["R@5", "{t2i_r5:.2f}"], ["R@10", "{t2i_r10:.2f}"], ["mR", "{mr:.2f}"],
           ["notes", "{notes}"]]


def write_section(name: str, section: dict) -> None:
    """Stores one section's data (rsdemo/results/NAME.json) and regenerates docs/RESULTS.md from all of them."""
    results.save(name, section)


def main() -> None:
    cards = [json.loads(p.read_text()) for p in sorted((ROOT / "rsdemo" / "checkpoints").glob("*.json"))]
    rows = []
    datas = set()
    for c in cards:
        m = c["metrics"]["test"]
        note = (f"{c['params'] / 1e6:.1f}M params, {c['config']['image_size']} px, {c['epochs']} epochs in "
                f"{c['run_seconds'] / 60:.1f} min on "
                f"{c['device']} ({c['cpus']} cores), best epoch {c.get('best_epoch')} by val mR")
        if c.get("config", {}).get("freeze"):
            note += (f"; encoders frozen ({', '.join(c['config']['freeze'])}: ImageNet Lite0 / MiniLM), heads trained on "
                     f"their cached outputs (caching {c.get('feature_cache_seconds', 0):.0f} s, not in the "
                     f"minutes; 0 s where an earlier run's cache was reused)")
        if "mr_embed" in m:
            note += f"; stage-1 embeddings alone: mR {m['mr_embed']:.2f}"
        rows.append({"model": c["model"], "kind": "checkpoint", **{k: m[k] for k in KEYS}, "notes": note})
        datas.add(c["data"])
    for data in sorted(datas) or ["synthetic"]:
        test = open_dataset(data).split("test")
        _, owner = test.captions()
        for name in ("keywords", "random"):
            r = recall(BASELINES[name](test, seed=0), owner)
            what = ("bag-of-scene-words matcher (ground-truth scene and object classes, ties broken at random)"
                    if name == "keywords" else "random scores")
            rows.append({"model": f"baseline: {name}", "kind": "baseline", **{k: r[k] for k in KEYS},
                         "notes": f"{what}; {len(test)} images, {len(owner)} captions"})
    section = {
        "title": "Demo checkpoints (synthetic world, test split)",
        "before": ["`python scripts/results.py` (cards: rsdemo/checkpoints/*.json, written by `python scripts/train_demo.py`). "
                   "Protocol: image->text hit if any of the image's captions is in the top K; text->image per caption; "
                   "mR = mean of the six recalls; ties pessimistic (an equal score counts against the query)."],
        "columns": COLUMNS, "rows": rows}
    print(results.markdown(section))
    write_section("demo", section)


if __name__ == "__main__":
    main()
