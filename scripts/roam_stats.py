"""How sharp DOVE's ROAM is in a checkpoint (the numbers in the DOVE module docstring, "Cosine attention in ROAM").

    python scripts/roam_stats.py dove-slim dove-lite0                     # synthetic world, val split
    python scripts/roam_stats.py ucm/dove-lite0 --data ucm:../shared/data/ucm_captions --images ../shared/data/ucm_images

Per checkpoint, over the first --images-n images of the split, each with its first caption:
- peak / uniform: the largest weight of each slot's attention over the positions, divided by the uniform weight
  1/positions (1: the slot pools every position alike), the mean over slots and images;
- min slot cosine: the smallest cosine between two of the K regional features of an image, the mean over images
  (1: all slots are the same vector);
- text entropy / ln K: the entropy of the caption's weights over the K slots over its maximum (1: the text weighs
  every slot alike, so roam_text is the same map for every query).
"""
import argparse
import math

import torch
import torch.nn.functional as F

from rsdemo.checkpoint import load_model
from rsdemo.data.formats import open_dataset


@torch.no_grad()
def stats(model, ds, n: int) -> dict:
    peak, cos, ent = [], [], []
    for i in range(min(n, len(ds))):
        s = ds[i]
        st = model.state_tensors(model.image_state(model.one_image(s.image)))
        att = st["roam"][0].flatten(1)                                     # [K, positions]
        peak.append(float(att.amax(1).mean()) * att.shape[1])
        sl = F.normalize(st["slots"][0], dim=-1)
        cos.append(float((sl @ sl.T).min()))
        t = model._text_global(*model._words([s.captions[0]]))
        beta = model._final(st["global"], st["slots"], t)[1][0, 0]
        ent.append(float(-(beta * beta.clamp(min=1e-12).log()).sum()) / math.log(len(beta)))
    return {"peak / uniform": sum(peak) / len(peak), "min slot cosine": sum(cos) / len(cos),
            "text entropy / ln K": sum(ent) / len(ent), "images": len(peak)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="DOVE checkpoint names or .safetensors files")
    ap.add_argument("--data", default="synthetic")
    ap.add_argument("--images", default=None, help="image folder (real datasets)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--images-n", type=int, default=50)
    a = ap.parse_args()
    ds = open_dataset(a.data, images=a.images).split(a.split)
    print("| model | peak / uniform | min slot cosine | text entropy / ln K | images |\n|---|---|---|---|---|")
    for name in a.models:
        m = load_model(name, device="cpu")
        if m.arch != "dove" or not m.use_roam:
            raise SystemExit(f"{name}: not a DOVE model with ROAM on ({m.arch}); this script reads ROAM's state")
        r = stats(m, ds, a.images_n)
        print(f"| {name} | {r['peak / uniform']:.2f} | {r['min slot cosine']:.3f} | {r['text entropy / ln K']:.4f} "
              f"| {r['images']} |")


if __name__ == "__main__":
    main()
