"""mR against the stage-2 rerank depth K on UCM-captions' val split (AMFMN's test ids), for the committed UCM
checkpoints whose score is not the embedding dot product (rsdemo/checkpoints/ucm/*): what rsdemo.index's
Retriever.rerank_k default is set from.

    python scripts/rerank_depth.py                  # ucm/amfmn-lite0 (the issue's measurement)
    python scripts/rerank_depth.py --models ucm/amfmn-lite0 ucm/ccnet-lite0 ucm/dove-lite0 --json docs/rerank_depth.json

The Retriever reranks, per query, the K best candidates of stage 1 (embedding cosine, FAISS) by the model's full
score and keeps the rest in stage-1 order; text -> images shortlists K images, image -> captions (search_captions)
K captions. Here both are simulated on the full score matrices of `rsdemo eval` (rsdemo.evaluate.model_scores):
per query, the stage-1 top K move ahead of everything else in full-score order. "stage 1" is K = 0 (the
embeddings alone); K = 210 reranks every val image for a text query (= `rsdemo eval`'s mR). Ties pessimistic, as
`rsdemo eval`. Data: --data (default ../shared/data/ucm_captions), --images (../shared/data/ucm_images).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("RSDEMO_SHARED_DATA", ROOT.parent / "shared" / "data"))
KS = (0, 10, 50, 100, 210)


def reranked(full: np.ndarray, embed: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Scores whose ranking along `axis` (0: images per caption, 1: captions per image) is: the stage-1 top k by
    the full score, then the rest by the stage-1 score."""
    if k <= 0:
        return embed
    e = embed if axis == 1 else embed.T
    f = full if axis == 1 else full.T
    k = min(k, e.shape[1])
    top = np.argpartition(-e, k - 1, axis=1)[:, :k]
    out = e - 10.0                                   # every stage-1 score below every reranked one (|s| <= 1)
    np.put_along_axis(out, top, np.take_along_axis(f, top, axis=1) + 10.0, axis=1)
    return out if axis == 1 else out.T


def depth_table(full: np.ndarray, embed: np.ndarray, owner, ks=KS) -> dict:
    from rsdemo.evaluate import recall

    rows = {}
    for k in ks:
        t2i = recall(reranked(full, embed, k, axis=0), owner)   # text -> images: K images per caption
        i2t = recall(reranked(full, embed, k, axis=1), owner)   # image -> captions: K captions per image
        r = {key: (i2t if key.startswith("i2t") else t2i)[key] for key in t2i if key[:3] in ("i2t", "t2i")}
        r["mr"] = float(np.mean(list(r.values())))
        rows[k] = r
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["ucm/amfmn-lite0"])
    ap.add_argument("--data", default=str(SHARED / "ucm_captions"))
    ap.add_argument("--images", default=str(SHARED / "ucm_images"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--ks", type=int, nargs="+", default=list(KS))
    ap.add_argument("--json", help="also write the table here")
    a = ap.parse_args(argv)
    from rsdemo.checkpoint import load_model
    from rsdemo.data.formats import open_dataset
    from rsdemo.evaluate import model_scores

    ds = open_dataset(f"ucm:{a.data}", images=a.images).split(a.split)
    owner = ds.captions()[1]
    out = {}
    print(f"UCM-captions {a.split}: {len(ds)} images, {len(owner)} captions; mR (i2t R@1/5/10, t2i R@1/5/10) "
          f"with the stage-1 top K reranked by the full score (K = 0: stage 1 alone)\n")
    print("| model | " + " | ".join("stage 1" if k == 0 else f"K={k}" for k in a.ks) + " |")
    print("|---|" + "---|" * len(a.ks))
    for name in a.models:
        m = load_model(name)
        if m.separable:
            print(f"| {name} | separable: stage 1 is the full score |")
            continue
        full, embed = model_scores(m, ds)
        rows = depth_table(full, embed, owner, a.ks)
        out[name] = {str(k): v for k, v in rows.items()}
        print(f"| {name} | " + " | ".join(f"{rows[k]['mr']:.2f}" for k in a.ks) + " |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"split": a.split, "ks": a.ks, "models": out}, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
