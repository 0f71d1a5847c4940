"""The files of a gallery index folder (rsdemo.index builds and reads them): what is written, how, and how it is
read back.

Layout (format 2):
- manifest.json: model identity, gallery, index parameters, the state's dtype and shapes. Written last and removed
  first, so a crash mid-save leaves no manifest and the folder is refused rather than read half-old, half-new.
- embeddings.npy: float32 [n, d], the stage-1 embeddings; index.faiss: the FAISS index over them.
- state/<key>.npy: the model's image state (rsdemo.models.base, image_state: pooled features, region features,
  slots, saliency and per-position maps, whatever score_state and explain_state read), one file per key, [n, ...],
  float16 by default (float32 on request). Read memory-mapped (np.load(mmap_mode="r")): a gallery larger than
  RAM pages in only the rows a query's shortlist touches.
- chunks/chunk-NNNNNN.npz: embeddings and state of each run of images as they are computed, keyed by the model
  weights, the config, the state dtype and the images' paths, sizes and mtimes, so an interrupted build resumes.
Every file is written atomically (rsdemo.files.atomic_write). An index of format 1 (before the image state was
cached) is refused with the command that rebuilds it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .files import atomic_write

FORMAT = 2
FILES = ("manifest.json", "embeddings.npy", "index.faiss")
STATE_DTYPES = {"float16": np.float16, "float32": np.float32}


def save_npy(path, arr) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temp name
            np.save(f, arr)
    atomic_write(path, write)


def write_json(path, doc) -> None:
    text = json.dumps(doc, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def state_dtype(name):
    if name not in STATE_DTYPES:
        raise ValueError(f"state dtype {name!r}: expected one of {', '.join(STATE_DTYPES)} (or None: no state)")
    return STATE_DTYPES[name]


def state_info(state: dict[str, np.ndarray], dtype: str) -> dict:
    """The manifest's description of a state: dtype, per-image shape of each key, bytes per image."""
    shapes = {k: list(v.shape[1:]) for k, v in state.items()}
    per = sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()) * np.dtype(STATE_DTYPES[dtype]).itemsize
    return {"dtype": dtype, "shapes": shapes, "bytes_per_image": int(per)}


# ---- chunks (resumable builds) ----------------------------------------------------------------------------

def write_chunk(path: Path, key: str, emb, state: dict, kept, skipped) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temp name
            np.savez(f, key=np.array(key), emb=emb, paths=np.array(kept, dtype=str),
                     skipped=np.array([s["path"] for s in skipped], dtype=str),
                     reasons=np.array([s["reason"] for s in skipped], dtype=str),
                     **{f"state_{k}": v for k, v in state.items()})
    atomic_write(path, write)


def read_chunk(path: Path, key: str):
    """(embeddings, state, paths, skipped) of a chunk written under the same key, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            skipped = [{"path": p, "reason": r} for p, r in zip(z["skipped"].tolist(), z["reasons"].tolist())]
            state = {k[len("state_"):]: z[k] for k in z.files if k.startswith("state_")}
            return z["emb"], state, z["paths"].tolist(), skipped
    except Exception:  # noqa: BLE001 - a damaged chunk is just recomputed
        return None


# ---- the index folder -------------------------------------------------------------------------------------

def read_manifest(path) -> dict:
    """The manifest of an index folder; ValueError (saying how to rebuild) if it is not one we can read."""
    path = Path(path)
    f = path / "manifest.json"
    fix = f"rebuild it with `rsdemo index --model MODEL --images DIR --out {path}`"
    if not path.is_dir():
        raise ValueError(f"{path}: no such index folder (build one with `rsdemo index`)")
    if not f.is_file():
        raise ValueError(f"{path}: not an index or an incomplete one (no manifest.json); {fix}")
    try:
        man = json.loads(f.read_text())
        fmt = man.get("format")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{f}: corrupt manifest ({e}); {fix}") from None
    if fmt == 1:
        raise ValueError(f"{path}: an index from before the cached image state (format 1; this rsdemo reads "
                         f"{FORMAT}: stage 2 and explanations now read the model's image state stored beside the "
                         f"embeddings); {fix}")
    try:
        if fmt != FORMAT:
            raise ValueError(f"format {fmt!r}, this rsdemo reads {FORMAT}")
        missing = [k for k in ("model", "weights_sha256", "dim", "index", "paths", "sizes", "skipped", "state")
                   if k not in man]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{f}: corrupt manifest ({e}); {fix}") from None
    return man


def save_state(out: Path, state: dict[str, np.ndarray]) -> None:
    """out/state/<key>.npy for each key; files of keys no longer in the state are removed."""
    d = Path(out) / "state"
    d.mkdir(parents=True, exist_ok=True)
    for k, v in state.items():
        save_npy(d / f"{k}.npy", np.ascontiguousarray(v))
    for old in d.glob("*.npy"):
        if old.stem not in state:
            old.unlink()


def load_state(path: Path, man: dict, fix: str) -> dict[str, np.ndarray]:
    """The state files of an index, memory-mapped, checked against the manifest."""
    info, n = man["state"], len(man["paths"])
    if info is None:
        return {}
    dtype = state_dtype(info.get("dtype"))
    out = {}
    for k, shape in info["shapes"].items():
        f = Path(path) / "state" / f"{k}.npy"
        try:
            a = np.load(f, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{f}: missing or unreadable ({e}); {fix}") from None
        if a.shape != (n, *shape) or a.dtype != dtype:
            raise ValueError(f"{f}: holds {a.shape} {a.dtype}, the manifest says {(n, *shape)} {info['dtype']}; "
                             f"{fix}")
        out[k] = a
    return out


# ---- shards (rsdemo.index.embed_shard writes them, Retriever.merge joins them) ----------------------------

def write_shard(npy: Path, meta: dict, emb, state: dict) -> None:
    """shard-R-of-W.npy (embeddings), .state.npz (image state) and .json, the json last: it marks it finished."""
    save_npy(npy, emb)
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **state)
    atomic_write(npy.with_suffix(".state.npz"), write)
    write_json(npy.with_suffix(".json"), meta)


def read_shards(shard_dir, ident: dict, model: str):
    """Joins the shards of one world computed by this model -> (embeddings, state, state dtype, paths, skipped,
    source). Refuses missing ranks, shards of another run or model, and shards that overlap or leave gaps."""
    shard_dir = Path(shard_dir)
    metas = {}
    for f in sorted(shard_dir.glob("shard-*-of-*.json")):
        m = re.fullmatch(r"shard-(\d+)-of-(\d+)\.json", f.name)
        if m:
            metas[(int(m.group(2)), int(m.group(1)))] = f
    if not metas:
        raise ValueError(f"{shard_dir}: no shards (shard-RANK-of-WORLD.json); run embed_shard first")
    worlds = sorted({w for w, _ in metas})
    if len(worlds) > 1:
        raise ValueError(f"{shard_dir}: shards of several runs (world sizes {worlds}) overlap; remove the stale ones")
    world = worlds[0]
    missing = [r for r in range(world) if (world, r) not in metas]
    if missing:
        raise ValueError(f"{shard_dir}: missing shards {missing} of {world}")
    parts, states, paths, skipped, seen = [], [], [], [], set()
    first, end = None, 0
    for r in range(world):
        f = metas[(world, r)]
        try:
            meta = json.loads(f.read_text())
            emb = np.load(f.with_suffix(".npy"), allow_pickle=False)
            with np.load(f.with_suffix(".state.npz"), allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: missing or unreadable shard ({e}); re-run embed_shard for rank {r}") from None
        first = first or meta
        if meta.get("list_sha256") != first.get("list_sha256"):
            raise ValueError(f"{f}: computed over another image list than rank 0's; re-run that shard")
        if meta.get("weights_sha256") != ident["weights_sha256"] or meta.get("model") != model:
            raise ValueError(f"{f}: computed with model {meta.get('model')!r} and other weights than the "
                             f"model given; re-run embed_shard with this model")
        if meta.get("state") and meta.get("state_version", 1) != ident.get("state_version", 1):
            raise ValueError(f"{f}: its image state comes from version {meta.get('state_version', 1)} of the "
                             f"model's maps, this rsdemo reads version {ident.get('state_version', 1)}; re-run "
                             f"embed_shard with this rsdemo")
        if meta.get("state") != first.get("state"):
            raise ValueError(f"{f}: state {meta.get('state')!r}, rank 0's {first.get('state')!r}; re-run that shard")
        if meta["start"] != end:
            raise ValueError(f"{f}: covers [{meta['start']}, {meta['end']}) but the previous shards end at "
                             f"{end}: shards overlap or leave a gap")
        end = meta["end"]
        if len(emb) != len(meta["paths"]) or any(len(v) != len(emb) for v in state.values()):
            raise ValueError(f"{f}: {len(meta['paths'])} paths but {len(emb)} embeddings (or state rows)")
        dup = seen.intersection(meta["paths"])
        if dup:
            raise ValueError(f"{f}: overlaps earlier shards (e.g. {sorted(dup)[0]})")
        seen.update(meta["paths"])
        if len(emb):
            parts.append(emb)
            states.append(state)
        paths += meta["paths"]
        skipped += meta["skipped"]
    if end != first["total"]:
        raise ValueError(f"{shard_dir}: shards cover {end} of {first['total']} images")
    if not paths:
        raise ValueError(f"{shard_dir}: no readable images in any shard ({len(skipped)} skipped)")
    emb = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    state = {k: np.concatenate([s[k] for s in states]) for k in states[0]} if first.get("state") else {}
    return emb, state, first.get("state"), paths, skipped, first.get("source")
