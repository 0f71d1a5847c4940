"""Writes the app's example images and queries from the synthetic world's test split (seed 0).

Usage: python scripts/make_assets.py   (rewrites rsdemo/assets/examples/ and rsdemo/assets/examples.json: package
data, so an installed copy's page shows them too)
"""
import json
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "rsdemo" / "assets"
sys.path.insert(0, str(ROOT))
from rsdemo.data import synthetic  # noqa: E402


def main(n: int = 6) -> None:
    out = HERE / "examples"
    out.mkdir(exist_ok=True)
    picked, labels = [], set()
    for w in synthetic.generate(1000, seed=0):
        if w.split == "test" and w.label not in labels:  # one per scene, so the examples vary
            labels.add(w.label)
            picked.append(w)
        if len(picked) == n:
            break
    examples = []
    for i, w in enumerate(picked):
        name = f"{i}_{w.label}.png"
        Image.fromarray(w.image).save(out / name, optimize=True)
        examples.append({"image": f"examples/{name}", "label": w.label, "query": w.captions[0]})
    (HERE / "examples.json").write_text(json.dumps(examples, indent=1) + "\n")
    print(f"wrote {len(examples)} examples to {out}")


if __name__ == "__main__":
    main()
