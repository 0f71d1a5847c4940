"""Encoding a gallery for rsdemo.index: listing its images, one model pass per batch giving both the stage-1
embeddings and the model's image state (rsdemo.models.base: image_state, state_embedding), resumable chunks, and
shards computed by several processes or machines (embed_shard; Retriever.merge joins them). The files themselves
are rsdemo.store's.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import torch

from .data.dataset import IMAGE_EXTS, CaptionDataset
from .data.images import open_image
from .files import file_sha256, weights_sha256
from .store import read_chunk, state_dtype, write_chunk, write_shard


# ---- model identity ---------------------------------------------------------------------------------------

def identity(model) -> dict:
    ck = getattr(model, "checkpoint", None)
    return {"model": model.name, "checkpoint": str(ck) if ck else None,
            "checkpoint_sha256": file_sha256(ck) if ck and Path(ck).is_file() else None,
            "weights_sha256": weights_sha256(model), "state_version": int(getattr(model, "state_version", 1))}


@contextmanager
def _inference(model):
    """eval mode (BatchNorm must not depend on the batch) and no autograd, restoring the model's mode after."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _vectors(x: torch.Tensor) -> np.ndarray:
    # renormalise in float32: models may compute in half precision, and the index needs unit vectors
    a = np.ascontiguousarray(x.detach().float().cpu().numpy(), dtype=np.float32)
    if len(a):
        faiss.normalize_L2(a)
    return a


def _model_dim(model) -> int:
    with _inference(model):
        return int(model.encode_text(["dimension probe"]).shape[-1])


# ---- gallery ----------------------------------------------------------------------------------------------

def list_images(folder) -> list[str]:
    """Image files under folder (recursively), absolute, sorted."""
    found = []
    for dirpath, _, files in os.walk(folder):
        found += [os.path.join(dirpath, f) for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTS]
    return sorted(os.path.abspath(p) for p in found)


def _gallery(images):
    """-> (paths, skipped, captions, source folder, dataset name)."""
    if isinstance(images, CaptionDataset):
        paths, skipped, captions = [], [], []
        for i, rec in enumerate(images.records):
            try:
                p = os.path.abspath(images.image_path(i))
                paths.append(p)
            except ValueError as e:  # DataError: the annotation names a file that is not there
                p = rec.filename
                skipped.append({"path": p, "reason": str(e)})
            captions += [{"text": c, "image": p} for c in rec.captions]
        return _unique(paths), skipped, captions, None, images.name
    if isinstance(images, (str, os.PathLike)):
        if not Path(images).is_dir():
            raise ValueError(f"{images}: not a folder of images")
        return list_images(images), [], None, os.path.abspath(images), None
    return _unique(os.path.abspath(p) for p in images), [], None, None, None


def _unique(paths) -> list[str]:
    return list(dict.fromkeys(paths))  # an image listed twice would be returned twice


def _size(p) -> int:
    try:
        return os.stat(p).st_size
    except OSError:
        return -1


def _try_load(path):
    try:
        return open_image(path), None
    except Exception as e:  # noqa: BLE001 - any undecodable file is skipped and reported, never fatal
        return None, f"{type(e).__name__}: {e}"


def _chunk_key(ident: dict, config: dict, paths: list[str], state=None) -> str:
    h = hashlib.sha256(ident["weights_sha256"].encode())
    h.update(json.dumps(config, sort_keys=True, default=str).encode())  # preprocessing (image_size, ...) matters
    v = ident.get("state_version", 1)      # named only past 1: version-1 chunks keep their keys (and are reused)
    h.update((f"state={state}\n" if v == 1 else f"state={state} version={v}\n").encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def _embed(model, paths, batch_size=32, chunk_dir=None, chunk=1024, resume=True, progress=True, workers=4,
           ident=None, state="float16"):
    """Embeds paths in order -> (float32 [n_kept, d], image state {key: [n_kept, ...]} in the `state` dtype ({}
    when None), kept paths, skipped [{path, reason}])."""
    from tqdm import tqdm

    if chunk_dir is not None and ident is None:
        ident = identity(model)
    parts, states, kept, skipped = [], [], [], []
    n_chunks = 0
    with _inference(model), ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(paths), disable=not progress, desc="index", unit="img") as bar:
        for c, start in enumerate(range(0, len(paths), chunk)):
            group = paths[start:start + chunk]
            n_chunks = c + 1
            f = Path(chunk_dir) / f"chunk-{c:06d}.npz" if chunk_dir is not None else None
            key = _chunk_key(ident, model.config.as_dict(), group, state) if f is not None else ""
            got = read_chunk(f, key) if f is not None and resume else None
            if got is not None:
                bar.update(len(group))
            else:
                got = _embed_group(model, group, batch_size, pool, bar, state)
                if f is not None:
                    write_chunk(f, key, *got)
            if len(got[2]):
                parts.append(got[0])
                states.append(got[1])
            kept += got[2]
            skipped += got[3]
    if chunk_dir is not None:  # chunks left from a larger gallery would only take space
        for old in Path(chunk_dir).glob("chunk-*.npz"):
            m = re.fullmatch(r"chunk-(\d+)\.npz", old.name)
            if m and int(m.group(1)) >= n_chunks:
                old.unlink()
    emb = np.concatenate(parts) if parts else np.zeros((0, _model_dim(model)), np.float32)
    return np.ascontiguousarray(emb, dtype=np.float32), _join(states), kept, skipped


def _join(states: list[dict]) -> dict:
    return {k: np.concatenate([s[k] for s in states]) for k in states[0]} if states else {}


def _embed_group(model, paths, batch_size, pool, bar, state="float16"):
    embs, states, kept, skipped = [], [], [], []
    for s in range(0, len(paths), batch_size):
        batch = paths[s:s + batch_size]
        ims = []
        for p, (im, err) in zip(batch, pool.map(_try_load, batch)):
            if err is None:
                ims.append(im)
                kept.append(p)
            else:
                skipped.append({"path": p, "reason": err})
        if ims:
            x = model.preprocess(ims)
            if state is None:
                embs.append(_vectors(model.encode_image(x)))
            else:  # one pass: the stage-1 embedding is read off the state
                st = model.image_state(x)
                embs.append(_vectors(model.state_embedding(st)))
                states.append({k: v.detach().cpu().numpy().astype(state_dtype(state)) for k, v in st.items()})
        bar.update(len(batch))
    emb = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
    return emb, _join(states), kept, skipped


# ---- shards -----------------------------------------------------------------------------------------------

def embed_shard(model, paths, rank=None, world=None, out="shards", batch_size=32, progress=True,
                state="float16") -> Path:
    """Embeds the rank-th contiguous slice of the sorted gallery into out/shard-RRRRR-of-WWWWW.npy (+ .state.npz,
    the image state in `state` precision, and .json with its paths, skipped files and model identity).
    rank/world default to $RANK/$WORLD_SIZE, so
    `torchrun --nnodes=... --nproc_per_node=... script.py` runs one slice per process (move the model to
    cuda:$LOCAL_RANK first). Finished shards are skipped on a rerun; a shard interrupted midway resumes from its
    chunks. `Retriever.merge(out, model, index_dir)` then joins them.

    Serving a gallery too large for one machine maps onto FAISS's sharded deployment: instead of merging, each
    machine (or GPU) builds an index over its own slice (exactly what one shard file holds, in global order, so
    global id = shard start + local id) and serves it; a query is broadcast, every shard returns its top-k
    with scores, and the coordinator keeps the best k of the union (what faiss.IndexShards(d, successive_ids=True)
    does in one process across GPUs, and what a small fan-out service does across machines). Stage 2 then runs
    once, on the coordinator's merged shortlist, since rescoring needs only those few images.
    """
    rank = int(os.environ.get("RANK", 0) if rank is None else rank)
    world = int(os.environ.get("WORLD_SIZE", 1) if world is None else world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard rank {rank} of world {world}: need 0 <= rank < world")
    if isinstance(paths, (str, os.PathLike)):
        if not Path(paths).is_dir():
            raise ValueError(f"{paths}: not a folder of images")
        source, paths = os.path.abspath(paths), list_images(paths)
    else:
        source, paths = None, sorted(_unique(os.path.abspath(p) for p in paths))  # every rank must agree
    n = len(paths)
    start, end = n * rank // world, n * (rank + 1) // world
    out = Path(out)
    name = f"shard-{rank:05d}-of-{world:05d}"
    ident = identity(model)
    meta = {**ident, "rank": rank, "world": world, "start": start, "end": end, "total": n, "source": source,
            "list_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest(), "state": state}
    npy, js = out / f"{name}.npy", out / f"{name}.json"
    if npy.is_file() and js.is_file() and npy.with_suffix(".state.npz").is_file():
        try:
            old = json.loads(js.read_text())
            if all(old.get(k) == v for k, v in meta.items() if k != "checkpoint"):
                return npy
        except ValueError:
            pass
    chunks = out / f".{name}.chunks"
    emb, st, kept, skipped = _embed(model, paths[start:end], batch_size, chunks, progress=progress, ident=ident,
                                    state=state)
    meta.update(dim=int(emb.shape[1]), paths=kept, skipped=skipped)
    write_shard(npy, meta, emb, st)
    shutil.rmtree(chunks, ignore_errors=True)
    return npy
