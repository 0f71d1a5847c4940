"""What "a card's numbers reproduce" means on another x86-64 machine, and the measurement behind it.

Float results differ in their last bits between CPUs: MKL (torch's matrix products), oneDNN (convolutions) and
ATen's vectorised loops pick other kernels, or sum in another order, on other processors. Scores therefore drift
a little, and a query whose correct candidate is within that drift of a rival may change rank, which moves a
recall by 100/n_queries. So a card is checked in two ways:

* On the kernel setting recorded in the card as "kernels" (`kernel_setting()` of the process that wrote it, or
  that `python -m rsdemo.drift --record` found to give every number exactly), every metric must come out
  exactly (1e-6).
* Elsewhere, every metric must lie in the interval `recall_bounds(scores, owner, eps)` computed from this machine's
  score matrix: the best and worst value the metric can take if every score moves by up to eps, so each query's
  rank lies between its rank with all rivals eps lower and the right candidates eps higher, and the reverse.
  eps = TOLERANCE x the largest |score| of the matrix; TOLERANCE is the largest relative score drift measured
  (`python -m rsdemo.drift`, docs/REPRODUCIBILITY.md) times SAFETY.

Ties (rsdemo.evaluate) are exact float equality; evaluate.model_scores gives identical captions the same column,
so they tie on every machine and stay ties inside the interval. Two different candidates that score within eps of
each other are not ties; they are what the interval covers. With eps = 0 the interval is the recall itself.

Switches: the environment variables in SETTINGS choose kernels; `python -m rsdemo.drift` evaluates every committed
card under each in a subprocess and reports the drift (`--worker OUT.npz` is that subprocess); `--record` writes
this process's kernels into the cards it reproduces exactly. RSDEMO_SHARED_DATA (default ../shared/data beside
the repository) holds the UCM data; UCM cards are skipped without it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .data.formats import open_dataset
from .evaluate import KS, model_scores, ranks, recall, same_text_same_score
from .files import cache_root, write_text
from .kernels import KERNEL_VARS, cpu_has_avx512, cpu_name, kernel_setting  # noqa: F401 - drift's API

ROOT = Path(__file__).resolve().parents[1]

# Kernel choices a test run can emulate with environment variables, each in a fresh process (the libraries read
# them at load time). MKL_CBWR=COMPATIBLE is the code path MKL takes on non-Intel CPUs; AVX2 and AVX512 are those
# it takes on Intel CPUs with those instruction sets. "no-avx512" is a CPU without AVX-512 (an older Intel, an AMD
# Zen 2/3): MKL, ATen's vectorised loops and oneDNN's convolutions all on their AVX2 paths; "no-avx512-compatible"
# the same with MKL's compatible path.
NO_AVX512 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SETTINGS = {
    "default": {},
    "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
    "mkl-avx2": {"MKL_CBWR": "AVX2"},
    "mkl-avx512": {"MKL_CBWR": "AVX512"},
    "no-avx512": {"MKL_CBWR": "AVX2", **NO_AVX512},
    "no-avx512-compatible": {"MKL_CBWR": "COMPATIBLE", **NO_AVX512},
}

# Largest measured |score drift| / max |score| over every card, matrix and setting (docs/REPRODUCIBILITY.md), and
# the margin taken over it. Filled in from `python -m rsdemo.drift`.
MEASURED = 4.37e-5
SAFETY = 10.0
TOLERANCE = MEASURED * SAFETY


def same_kernels(card: dict, now: dict | None = None) -> bool:
    """True when this process computes with the kernels recorded in the card (so its numbers must be exact); a card
    without a record is held to the interval only."""
    wrote = card.get("kernels")
    if not wrote:
        return False
    now = now or kernel_setting()
    return all(now.get(k) == v for k, v in wrote.items())


def rank_bounds(sim, owner, eps: float) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((i2t_lo, i2t_hi), (t2i_lo, t2i_hi)): each query's best and worst rank (evaluate.ranks, pessimistic) when
    every score may move by up to eps. Best: the right candidates gain eps and the rivals lose eps, so only rivals
    more than 2 eps above count, plus the exact ties (identical inputs tie on every machine). Worst: the reverse,
    every rival within 2 eps below counts too. With eps = 0 both are the pessimistic rank."""
    sim = np.array(sim, dtype=np.float64)
    owner = np.asarray(owner).astype(np.intp)
    pos = (owner, np.arange(len(owner)))
    ties = [p - o for p, o in zip(ranks(sim, owner, "pessimistic"), ranks(sim, owner, "optimistic"))]
    up, down = sim.copy(), sim
    up[pos] += 2 * eps       # the same as every rival 2 eps lower
    best = [r + t for r, t in zip(ranks(up, owner, "optimistic"), ties)]
    down[pos] -= 2 * eps
    return tuple(zip(best, ranks(down, owner, "pessimistic")))


def recall_bounds(sim, owner, eps: float, ks=KS) -> dict[str, tuple[float, float]]:
    """{metric: (lo, hi)} for the recalls and mr of evaluate.recall when every score may move by up to eps."""
    (i_lo, i_hi), (t_lo, t_hi) = rank_bounds(sim, owner, eps)
    out = {}
    for name, lo, hi in (("i2t", i_lo, i_hi), ("t2i", t_lo, t_hi)):
        for k in sorted(ks):
            out[f"{name}_r{k}"] = (100.0 * float(np.mean(hi < k)), 100.0 * float(np.mean(lo < k)))
    out["mr"] = tuple(float(np.mean([v[i] for v in out.values()])) for i in (0, 1))
    return out


def tolerance(sim) -> float:
    """eps for a score matrix: TOLERANCE times its largest |score|."""
    return TOLERANCE * float(np.max(np.abs(sim)))


def check(card: dict, split: str, full, embed, owner, now: dict | None = None) -> list[str]:
    """Differences between a card's metrics on `split` and scores computed here ([] when it reproduces): exact on
    the kernels that wrote the card, else within recall_bounds at tolerance(scores)."""
    exact = same_kernels(card, now)
    want = card["metrics"][split]
    problems = []
    for sim, keys in ((full, [k for k in want if k.startswith(("i2t", "t2i")) or k == "mr"]),
                      (embed if embed is not None else full, ["mr_embed"] if "mr_embed" in want else [])):
        if not keys:
            continue
        got = recall(sim, owner)
        eps = tolerance(sim)
        bounds = recall_bounds(sim, owner, eps)
        for k in keys:
            g, (lo, hi) = got["mr" if k == "mr_embed" else k], bounds["mr" if k == "mr_embed" else k]
            if exact and abs(g - want[k]) > 1e-6:
                problems.append(f"{k}: {g!r} here, card {want[k]!r} (same kernels as the card: must be exact)")
            elif not exact and not lo - 1e-9 <= want[k] <= hi + 1e-9:
                problems.append(f"{k}: card {want[k]!r} outside [{lo!r}, {hi!r}] (scores here +-{eps:.3g})")
    return problems


# ---- evaluating the committed cards ----------------------------------------------------------------------------
def card_dir() -> Path:
    """The committed cards' folder (rsdemo.checkpoint.CHECKPOINT_DIR)."""
    from .checkpoint import CHECKPOINT_DIR   # loads torch: after a worker has set the kernel variables

    return CHECKPOINT_DIR


def shared_data() -> Path:
    env = os.environ.get("RSDEMO_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def cards(ucm: bool = True) -> list[Path]:
    """The committed cards: checkpoints/*.json, and checkpoints/ucm/*.json when the UCM data is here."""
    out = sorted(card_dir().glob("*.json"))
    if ucm and (shared_data() / "ucm_captions").is_dir():
        out += sorted((card_dir() / "ucm").glob("*.json"))
    return [p for p in out if p.with_suffix(".safetensors").is_file()]


def card_split(card: dict) -> str:
    """The split a card's headline numbers are on: UCM cards follow AMFMN (its "test" is the val ids), else test."""
    return "val" if card["data"].startswith("ucm:") else "test"


def _local(spec: str | None) -> str | None:
    """A card's data path written relative to the repository as ../shared/data/...: resolved to shared_data()."""
    if not spec:
        return spec
    fmt, sep, path = spec.rpartition(":") if ":" in spec else ("", "", spec)
    if path.startswith("../shared/data/"):
        path = str(shared_data() / path[len("../shared/data/"):])
    return f"{fmt}{sep}{path}"


def card_scores(path: Path) -> dict:
    """{"split", "full", "embed", "owner"}: the card's checkpoint scored on the card's data and split, here."""
    from .checkpoint import load   # loads torch: after a worker has set the kernel variables

    card = json.loads(Path(path).read_text())
    split = card_split(card)
    ds = open_dataset(_local(card["data"]), images=_local(card.get("images"))).split(split)
    full, embed = model_scores(load(Path(path).with_suffix(".safetensors")), ds)
    return {"split": split, "full": full, "embed": embed, "owner": ds.captions()[1]}


def _name(path: Path) -> str:
    return str(Path(path).relative_to(card_dir()).with_suffix(""))


def worker(out: str, ucm: bool = True) -> None:
    """Scores of every committed card under this process's kernels, saved to `out` (.npz) with kernel_setting()."""
    arrays = {}
    for p in cards(ucm):
        s = card_scores(p)
        n = _name(p)
        arrays[f"{n}|full"], arrays[f"{n}|owner"] = s["full"], s["owner"]
        if s["embed"] is not None:
            arrays[f"{n}|embed"] = s["embed"]
    np.savez(out, kernels=json.dumps(kernel_setting()), **arrays)


def run_setting(name: str, out: Path, ucm: bool = True, timeout: float = 1800, reuse: bool = False) -> dict:
    """worker() in a fresh process under SETTINGS[name], with its own feature cache (the cached backbone features
    are recomputed under those kernels too); with `reuse`, an existing `out` is read instead. Returns {card name:
    {"full", "embed", "owner"}, "kernels": ...}."""
    if not (reuse and Path(out).is_file()):
        _run_worker(name, out, ucm, timeout)
    z = np.load(out, allow_pickle=False)
    got: dict = {"kernels": json.loads(str(z["kernels"]))}
    for key in z.files:
        if "|" in key:
            n, what = key.split("|")
            got.setdefault(n, {"embed": None})[what] = z[key]
    return got


def _run_worker(name: str, out: Path, ucm: bool, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
    env.update(SETTINGS[name])
    src = cache_root()
    with tempfile.TemporaryDirectory(prefix="rsdemo-drift-") as cache:
        # everything cached but the encoders' features (exported datasets: pixels, not floats) is shared
        for child in (src.iterdir() if src.is_dir() else []):
            if child.name != "features":
                (Path(cache) / child.name).symlink_to(child)
        env["RSDEMO_CACHE"] = cache
        r = subprocess.run([sys.executable, "-m", "rsdemo.drift", "--worker", str(out)] + ([] if ucm else ["--no-ucm"]),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode:
        raise RuntimeError(f"drift worker under {name} failed:\n{r.stderr[-3000:]}")


def settings_here() -> list[str]:
    """SETTINGS that this CPU can run (MKL_CBWR=AVX512 and the AVX-512 paths need an AVX-512 CPU)."""
    return [s for s in SETTINGS if "AVX512" not in SETTINGS[s].values() or cpu_has_avx512()]


def measure(names=None, ucm: bool = True, keep: str | None = None) -> dict:
    """Each setting's scores against the default's: per card and matrix the largest |drift| and |score|, and the
    metrics under each setting. Returns a JSON-able report. `keep`: a folder where each setting's scores are saved
    (SETTING.npz) and taken from on the next run instead of scoring again."""
    names = list(names or settings_here())
    if "default" not in names:
        names.insert(0, "default")
    with tempfile.TemporaryDirectory(prefix="rsdemo-drift-") as tmp:
        runs = {n: run_setting(n, Path(keep or tmp) / f"{n}.npz", ucm, reuse=bool(keep)) for n in names}

    base = runs["default"]
    report = {"cpu": base["kernels"]["cpu"], "isa": base["kernels"]["isa"], "settings": {}, "cards": {}}
    for n in names:
        report["settings"][n] = {"env": SETTINGS[n], "kernels": runs[n]["kernels"]}
    worst = 0.0
    for card in (k for k in base if k != "kernels"):
        c = json.loads((card_dir() / f"{card}.json").read_text())
        split = card_split(c)
        texts = open_dataset(_local(c["data"]), images=_local(c.get("images"))).split(split).captions()[0]
        for n in names:   # scores saved before model_scores tied identical captions: tie them now
            for what in ("full", "embed"):
                if runs[n][card][what] is not None:
                    runs[n][card][what] = same_text_same_score(runs[n][card][what], texts)
        rows = {}
        for n in names:
            s = runs[n][card]
            row = {}
            for what in ("full", "embed"):
                if s[what] is None:
                    continue
                d = float(np.max(np.abs(s[what].astype(np.float64) - base[card][what])))
                scale = float(np.max(np.abs(base[card][what])))
                m = recall(s[what], s["owner"])
                b = recall_bounds(s[what], s["owner"], tolerance(s[what]))
                want = ({"mr": c["metrics"][split]["mr_embed"]} if what == "embed" else
                        {k: v for k, v in c["metrics"][split].items() if k.startswith(("i2t", "t2i")) or k == "mr"})
                row[what] = {"max_drift": d, "max_abs_score": scale, "rel_drift": d / scale,
                             "bitwise_equal": bool(np.array_equal(s[what], base[card][what])),
                             "metrics": {k: v for k, v in m.items() if k.startswith(("i2t", "t2i", "mr"))},
                             "interval": {k: list(v) for k, v in b.items()},
                             "card_inside": all(b[k][0] - 1e-9 <= v <= b[k][1] + 1e-9 for k, v in want.items())}
                worst = max(worst, d / scale)
            rows[n] = row
        report["cards"][card] = {"split": split, "card": {k: v for k, v in c["metrics"][split].items()
                                                          if k.startswith(("i2t", "t2i", "mr"))}, "settings": rows}
    report["max_rel_drift"] = worst
    report["tolerance"] = {"measured": MEASURED, "safety": SAFETY, "relative": TOLERANCE}
    return report


def summary(rep: dict) -> str:
    """Markdown tables of a measure() report: per setting, and per metric (largest change against the default)."""
    out = ["| setting | max abs score drift | max relative | matrices bitwise = default | metrics moved vs default "
           "(card: metric points) | cards inside the interval |", "|---|---|---|---|---|---|"]
    per_metric: dict[str, list] = {}
    vs_card: dict[str, list] = {}
    for n in rep["settings"]:
        d = rel = 0.0
        same = total = inside = 0
        moved = []
        for card, r in rep["cards"].items():
            for what, v in r["settings"][n].items():
                d, rel, total = max(d, v["max_drift"]), max(rel, v["rel_drift"]), total + 1
                same += v["bitwise_equal"]
                inside += v["card_inside"]
                ref = r["settings"]["default"][what]["metrics"]
                for k, x in v["metrics"].items():
                    name = "mr_embed" if (what == "embed" and k == "mr") else k
                    if what == "embed" and k != "mr":
                        continue
                    delta = x - ref[k]
                    per_metric.setdefault(name, []).append((abs(delta), card, n))
                    if name in r["card"]:
                        vs_card.setdefault(name, []).append((abs(x - r["card"][name]), card, n))
                    if abs(delta) > 1e-9:
                        moved.append(f"{card}: {name} {delta:+.2f}")
        out.append(f"| {n} | {d:.3g} | {rel:.3g} | {same} of {total} | {'; '.join(moved) or 'none'} | "
                   f"{inside} of {total} |")
    out += ["", "| metric | largest change vs default (points) | where | largest difference from the card (points) "
            "| where |", "|---|---|---|---|---|"]
    for k, rows in per_metric.items():
        big, card = max(rows), max(vs_card.get(k, [(0.0, "", "")]))
        out.append(f"| {k} | {big[0]:.2f} | {big[1] + ' under ' + big[2] if big[0] > 1e-9 else '-'} | "
                   f"{card[0]:.2f} | {card[1] + ' under ' + card[2] if card[0] > 1e-9 else '-'} |")
    return "\n".join(out)


def record(ucm: bool = True) -> list[str]:
    """Writes this process's kernel_setting() as "kernels" into every committed card that has no record yet and
    whose numbers it reproduces exactly (its metrics untouched); returns a line per card saying what it did."""
    now, out = kernel_setting(), []
    for p in cards(ucm):
        card = json.loads(p.read_text())
        if card.get("kernels"):
            out.append(f"{_name(p)}: already records {card['kernels']}")
            continue
        s = card_scores(p)
        problems = check(dict(card, kernels=now), s["split"], s["full"], s["embed"], s["owner"], now)
        if problems:
            out.append(f"{_name(p)}: not exact here, left as it was: {'; '.join(problems)}")
            continue
        card["kernels"] = now
        write_text(p, json.dumps(card, indent=1) + "\n")
        out.append(f"{_name(p)}: exact here, kernels recorded")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m rsdemo.drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", metavar="OUT.npz", help="(internal) score every card under this process's kernels")
    p.add_argument("--settings", nargs="*", help=f"which of {', '.join(SETTINGS)} (default: all this CPU runs)")
    p.add_argument("--no-ucm", action="store_true", help="leave out the UCM cards")
    p.add_argument("--json", metavar="PATH", help="also write the full report here")
    p.add_argument("--keep", metavar="DIR", help="save each setting's scores here, and reuse those already here")
    p.add_argument("--record", action="store_true",
                   help="record this process's kernels in every card without a record that it reproduces exactly")
    a = p.parse_args(argv)
    if a.worker:
        worker(a.worker, ucm=not a.no_ucm)
        return 0
    if a.record:
        print("\n".join(record(ucm=not a.no_ucm)))
        return 0
    rep = measure(a.settings, ucm=not a.no_ucm, keep=a.keep)
    if a.json:
        Path(a.json).write_text(json.dumps(rep, indent=1) + "\n")
    print(f"{rep['cpu']} (ATen {rep['isa']}); largest relative score drift {rep['max_rel_drift']:.3g}; "
          f"tolerance {TOLERANCE:.3g} = {MEASURED:.3g} x {SAFETY:g}")
    for card, r in rep["cards"].items():
        for n, row in r["settings"].items():
            for what, v in row.items():
                keys = {"mr_embed": "mr"} if what == "embed" else {k: k for k in r["card"] if k != "mr_embed"}
                moved = {k: round(v["metrics"][m] - r["card"][k], 4) for k, m in keys.items() if k in r["card"]}
                moved = {k: x for k, x in moved.items() if x}
                print(f"{card:<22} {what:<5} {n:<15} drift {v['max_drift']:.3g} (rel {v['rel_drift']:.3g})"
                      f"{' bitwise' if v['bitwise_equal'] else ''}  vs card: {moved or 'equal'}"
                      f"{'' if v['card_inside'] else '  CARD OUTSIDE THE INTERVAL'}")
    print()
    print(summary(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
