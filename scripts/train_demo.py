"""Trains the demo checkpoints on the synthetic world and publishes them into rsdemo/checkpoints/.

    python scripts/train_demo.py                 # train every demo model, then publish
    python scripts/train_demo.py --publish-only  # copy runs/MODEL/best.* to rsdemo/checkpoints/MODEL.*
    python scripts/train_demo.py --publish-only --models M --from runs/ablate/M/full/seed0   # publish another run

Each model is trained by exactly `rsdemo train --model MODEL --data synthetic --out runs/MODEL` plus its SETS below
(its card records the command); best.safetensors (fp16) and its card become rsdemo/checkpoints/MODEL.safetensors /
.json.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "rsdemo" / "checkpoints"   # the committed checkpoints (rsdemo.checkpoint.CHECKPOINT_DIR)
DEMO = ["amfmn-slim", "clip-tiny", "ccnet-slim", "ssjdn-slim", "dove-slim",
        "amfmn-lite0", "dual-lite0", "ccnet-lite0", "ssjdn-lite0", "dove-lite0"]
# config overrides of the demo runs. The seed models whose maps read regions, at 256 px, the synthetic world's own
# size: their stride-16 maps are then 16x16, where the world's small objects (about 1.5% of the image) span cells
# of their own; at 128 px an object shares one cell with its surroundings. ccnet-lite0's word maps then point at
# the phrase's objects far more often, dove-lite0's roam_text rises above its random floor (at 128 px it pointed
# below it), ssjdn-lite0's coarser SEM maps point far more often. Chosen on the val split
# (rsdemo eval-explain --split val); the test split stays the report.
SETS = {m: ["--set", "image_size=256"] for m in ("ccnet-lite0", "dove-lite0", "ssjdn-lite0")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEMO)
    ap.add_argument("--publish-only", action="store_true")
    ap.add_argument("--from", dest="src", help="with --publish-only and one model: the run folder to publish "
                    "(its card records the command and budget it was trained with)")
    a = ap.parse_args()
    if a.src and (len(a.models) != 1 or not a.publish_only):
        ap.error("--from needs --publish-only and exactly one --models")
    for m in a.models:
        run = Path(a.src).resolve() if a.src else ROOT / "runs" / m
        if not a.publish_only:
            subprocess.run([sys.executable, "-m", "rsdemo", "train", "--model", m, "--data", "synthetic",
                            "--out", str(run), "--quiet", *SETS.get(m, [])], check=True, cwd=ROOT)
        shutil.copyfile(run / "best.safetensors", CKPT / f"{m}.safetensors")
        card = json.loads((run / "best.json").read_text())
        # the best card was written mid-run; the whole run's time is the training budget that was spent
        card["run_seconds"] = json.loads((run / "last.json").read_text())["train_seconds"]
        card.setdefault("cpus", os.cpu_count())  # cards from before the field existed (published where trained)
        (CKPT / f"{m}.json").write_text(json.dumps(card, indent=1) + "\n")
        size = (CKPT / f"{m}.safetensors").stat().st_size / 2**20
        print(f"published rsdemo/checkpoints/{m}.safetensors ({size:.1f} MB)")


if __name__ == "__main__":
    main()
