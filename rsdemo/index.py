"""A persistent gallery index for retrieval: embed the images once, answer text or image queries in milliseconds.

Two stages. Stage 1 is a FAISS search over the L2-normalised float32 image embeddings (inner product = cosine):
exact `IndexFlatIP` for small galleries, `IndexHNSWFlat` (approximate, sub-linear) from `hnsw_threshold` images
on. It returns a shortlist (`rerank_k`, 50 by default, or k if larger). Stage 2 runs only for models whose
`score` is not the embedding dot product (`model.separable is False`, e.g. AMFMN's vision-guided text): the
shortlisted images are loaded again and rescored with `model.score`, which is too costly to run over the whole
gallery. For separable models stage 1 already is the model's score and is returned as is.

Persistence. `save(out)` writes index.faiss, embeddings.npy and manifest.json, each atomically (temp file, fsync,
rename). The manifest is written last and removed first, so a crash mid-save leaves no manifest and the folder
is refused rather than read half-old, half-new. `build(..., out=...)` also keeps the embeddings in
out/chunks/chunk-NNNNNN.npz as they are computed; a rerun reuses every chunk whose key (model weights + that
chunk's paths, sizes and mtimes) still matches, so a large folder interrupted at 90% costs 10% to finish.

Staleness. `load` refuses an index (ValueError saying what differs and how to rebuild) when the model's name,
embedding dimension or weights (sha256 of the state dict; the checkpoint file's sha256 is recorded too) differ
from the manifest's: embeddings of another model live in another space and would give confident noise. It also
refuses when a listed image no longer exists or changed size, and, for an index built from a folder, when the
folder now holds a different number of image files. Unreadable images are skipped at build time and listed in
the manifest with the reason; they never abort a build.

Sharding. See `embed_shard` and `Retriever.merge`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import torch

from .data.dataset import IMAGE_EXTS, CaptionDataset, open_image
from .files import atomic_write, file_sha256, weights_sha256
from .version import __version__

KINDS = ("auto", "flat", "hnsw")
FORMAT = 1
FILES = ("manifest.json", "embeddings.npy", "index.faiss")


# ---- model identity ---------------------------------------------------------------------------------------

def identity(model) -> dict:
    ck = getattr(model, "checkpoint", None)
    return {"model": model.name, "checkpoint": str(ck) if ck else None,
            "checkpoint_sha256": file_sha256(ck) if ck and Path(ck).is_file() else None,
            "weights_sha256": weights_sha256(model)}


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


def _chunk_key(ident: dict, config: dict, paths: list[str]) -> str:
    h = hashlib.sha256(ident["weights_sha256"].encode())
    h.update(json.dumps(config, sort_keys=True, default=str).encode())  # preprocessing (image_size, ...) matters
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def _write_chunk(path: Path, key: str, emb, kept, skipped) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temp name
            np.savez(f, key=np.array(key), emb=emb, paths=np.array(kept, dtype=str),
                     skipped=np.array([s["path"] for s in skipped], dtype=str),
                     reasons=np.array([s["reason"] for s in skipped], dtype=str))
    atomic_write(path, write)


def _read_chunk(path: Path, key: str):
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            skipped = [{"path": p, "reason": r} for p, r in zip(z["skipped"].tolist(), z["reasons"].tolist())]
            return z["emb"], z["paths"].tolist(), skipped
    except Exception:  # noqa: BLE001 - a damaged chunk is just recomputed
        return None


def _embed(model, paths, batch_size=32, chunk_dir=None, chunk=1024, resume=True, progress=True, workers=4,
           ident=None):
    """Embeds paths in order -> (float32 [n_kept, d], kept paths, skipped [{path, reason}])."""
    from tqdm import tqdm

    if chunk_dir is not None and ident is None:
        ident = identity(model)
    parts, kept, skipped = [], [], []
    n_chunks = 0
    with _inference(model), ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(paths), disable=not progress, desc="index", unit="img") as bar:
        for c, start in enumerate(range(0, len(paths), chunk)):
            group = paths[start:start + chunk]
            n_chunks = c + 1
            f = Path(chunk_dir) / f"chunk-{c:06d}.npz" if chunk_dir is not None else None
            key = _chunk_key(ident, model.config.as_dict(), group) if f is not None else ""
            got = _read_chunk(f, key) if f is not None and resume else None
            if got is not None:
                bar.update(len(group))
            else:
                got = _embed_group(model, group, batch_size, pool, bar)
                if f is not None:
                    _write_chunk(f, key, *got)
            if len(got[1]):
                parts.append(got[0])
            kept += got[1]
            skipped += got[2]
    if chunk_dir is not None:  # chunks left from a larger gallery would only take space
        for old in Path(chunk_dir).glob("chunk-*.npz"):
            m = re.fullmatch(r"chunk-(\d+)\.npz", old.name)
            if m and int(m.group(1)) >= n_chunks:
                old.unlink()
    emb = np.concatenate(parts) if parts else np.zeros((0, _model_dim(model)), np.float32)
    return np.ascontiguousarray(emb, dtype=np.float32), kept, skipped


def _embed_group(model, paths, batch_size, pool, bar):
    embs, kept, skipped = [], [], []
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
            embs.append(_vectors(model.encode_image(model.preprocess(ims))))
        bar.update(len(batch))
    emb = np.concatenate(embs) if embs else np.zeros((0, 0), np.float32)
    return emb, kept, skipped


# ---- FAISS ------------------------------------------------------------------------------------------------

def _make_index(emb: np.ndarray, kind="auto", hnsw_threshold=50_000, hnsw_m=32, ef_construction=200,
                ef_search=128):
    if kind not in KINDS:
        raise ValueError(f"index kind {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "auto":
        kind = "flat" if len(emb) < hnsw_threshold else "hnsw"
    d = emb.shape[1]
    if kind == "flat":
        index, params = faiss.IndexFlatIP(d), {"kind": "flat"}
    else:
        index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
        params = {"kind": "hnsw", "M": int(hnsw_m), "ef_construction": int(ef_construction),
                  "ef_search": int(ef_search)}
    index.add(emb)
    return index, params


def _save_npy(path, arr) -> None:
    atomic_write(path, lambda tmp: _write_npy(tmp, arr))


def _write_npy(tmp, arr) -> None:
    with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temp name
        np.save(f, arr)


def read_manifest(path) -> dict:
    """The manifest of an index folder; ValueError if it is not one."""
    path = Path(path)
    f = path / "manifest.json"
    if not path.is_dir():
        raise ValueError(f"{path}: no such index folder (build one with `rsdemo index`)")
    if not f.is_file():
        raise ValueError(f"{path}: not an index or an incomplete one (no manifest.json); "
                         f"rebuild it with `rsdemo index ... --out {path}`")
    try:
        man = json.loads(f.read_text())
        if man.get("format") != FORMAT:
            raise ValueError(f"format {man.get('format')!r}, this rsdemo reads {FORMAT}")
        missing = [k for k in ("model", "weights_sha256", "dim", "index", "paths", "sizes", "skipped") if k not in man]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{f}: corrupt manifest ({e}); rebuild with `rsdemo index ... --out {path}`") from None
    return man


# ---- the index --------------------------------------------------------------------------------------------

class Retriever:
    """A model plus its gallery index. Build with `build` (or `merge`), reopen with `load`, query with search_*."""

    rerank_k = 50       # stage-1 shortlist for stage 2 (or k if larger)
    batch_size = 32     # images per forward pass when rescoring
    prepared_mb = 256   # preprocessed gallery images kept in memory for stage 2

    def __init__(self, model, embeddings: np.ndarray, index, manifest: dict):
        self.model = model
        self.embeddings = embeddings
        self.index = index
        self._dim, self._total = int(index.d), int(index.ntotal)  # plain ints: faiss attributes cost ~0.3 us a read
        self.manifest = manifest
        self.paths: list[str] = manifest["paths"]
        self.captions: list[dict] | None = manifest.get("captions")
        self._caption_emb = None
        self._prep: dict[int, torch.Tensor] = {}
        self._prep_bytes = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (f"Retriever({self.manifest['model']!r}, {len(self)} images, {self.manifest['index']['kind']}, "
                f"{len(self.manifest['skipped'])} skipped)")

    # ---- building ---------------------------------------------------------------------------------------
    @classmethod
    def build(cls, model, images, out=None, batch_size=32, kind="auto", hnsw_threshold=50_000, hnsw_m=32,
              ef_construction=200, ef_search=128, progress=True, resume=True, chunk=1024):
        """Embeds a folder (recursive, sorted), a list of paths, or a CaptionDataset (its captions are kept for
        search_captions) and indexes it. With `out`, embeddings are kept in out/chunks as they are computed (a
        rerun skips finished chunks unless resume=False) and the index is saved to out."""
        if kind not in KINDS:
            raise ValueError(f"index kind {kind!r}: expected one of {', '.join(KINDS)}")
        paths, skipped, captions, source, dataset = _gallery(images)
        chunk_dir = Path(out) / "chunks" if out is not None else None
        ident = identity(model)
        emb, kept, bad = _embed(model, paths, batch_size, chunk_dir, chunk, resume, progress, ident=ident)
        skipped += bad
        if not kept:
            raise ValueError(f"no readable images in {source or dataset or 'the list given'} "
                             f"({len(skipped)} skipped)")
        r = cls._create(model, emb, kept, skipped, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search,
                        captions=captions, source=source, dataset=dataset, ident=ident)
        if out is not None:
            r.save(out)
        return r

    @classmethod
    def _create(cls, model, emb, paths, skipped, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search,
                captions=None, source=None, dataset=None, ident=None):
        index, params = _make_index(emb, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search)
        manifest = {
            "format": FORMAT, "rsdemo": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(ident or identity(model)), "dim": int(emb.shape[1]), "index": params, "count": len(paths),
            "source": source, "dataset": dataset, "paths": list(paths), "sizes": [_size(p) for p in paths],
            "skipped": skipped, "captions": captions,
        }
        return cls(model, emb, index, manifest)

    def save(self, out) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # the manifest is the commit marker: gone while the other files change, written last
        (out / "manifest.json").unlink(missing_ok=True)
        _save_npy(out / "embeddings.npy", self.embeddings)
        atomic_write(out / "index.faiss", lambda tmp: faiss.write_index(self.index, tmp))
        text = json.dumps(self.manifest, indent=1) + "\n"
        atomic_write(out / "manifest.json", lambda tmp: Path(tmp).write_text(text))
        return out

    @classmethod
    def load(cls, path, model, check_files=True):
        """Reopens a saved index for `model`. Refuses (ValueError) another model, other weights, another
        dimension, missing or corrupt files and, with check_files, a gallery that changed on disk."""
        path = Path(path)
        man = read_manifest(path)
        src = man.get("source") or "DIR"
        fix = (f"rebuild it with `rsdemo index --model {getattr(model, 'checkpoint', None) or model.name} "
               f"--images {src} --out {path}`")
        if man["model"] != model.name:
            raise ValueError(f"{path}: index built with model {man['model']!r}, not {model.name!r}; {fix}")
        dim = _model_dim(model)
        if int(man["dim"]) != dim:
            raise ValueError(f"{path}: index holds {man['dim']}-d embeddings, model {model.name!r} gives {dim}-d; "
                             f"{fix}")
        ident = identity(model)
        if man["weights_sha256"] != ident["weights_sha256"]:
            raise ValueError(f"{path}: index built with other weights of {model.name!r} (checkpoint "
                             f"{man.get('checkpoint')}, sha256 {str(man.get('checkpoint_sha256'))[:12]}) than the "
                             f"model given (checkpoint {ident['checkpoint']}, sha256 "
                             f"{str(ident['checkpoint_sha256'])[:12]}); {fix}")
        for name in FILES[1:]:
            if not (path / name).is_file():
                raise ValueError(f"{path}: {name} is missing; {fix}")
        try:
            emb = np.load(path / "embeddings.npy", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path}/embeddings.npy: unreadable ({e}); {fix}") from None
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as e:
            raise ValueError(f"{path}/index.faiss: unreadable ({str(e).strip().splitlines()[-1]}); {fix}") from None
        n = len(man["paths"])
        if emb.ndim != 2 or emb.shape != (n, dim) or emb.dtype != np.float32 or index.ntotal != n or index.d != dim:
            raise ValueError(f"{path}: files disagree (manifest {n} images x {dim}, embeddings {emb.shape} "
                             f"{emb.dtype}, index {index.ntotal} x {index.d}); {fix}")
        if man["index"]["kind"] == "hnsw":  # efSearch is a query-time setting: take the manifest's
            faiss.downcast_index(index).hnsw.efSearch = int(man["index"]["ef_search"])
        if check_files:
            _check_gallery(man, fix)
        return cls(model, emb, index, man)

    @classmethod
    def merge(cls, shard_dir, model, out, kind="auto", hnsw_threshold=50_000, hnsw_m=32, ef_construction=200,
              ef_search=128):
        """Joins the shards of `embed_shard` (all ranks of one world, computed by this model) into one index,
        saved to out. Refuses missing ranks, shards of another run, and shards that overlap or leave gaps."""
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
            raise ValueError(f"{shard_dir}: shards of several runs (world sizes {worlds}) overlap; "
                             f"remove the stale ones")
        world = worlds[0]
        missing = [r for r in range(world) if (world, r) not in metas]
        if missing:
            raise ValueError(f"{shard_dir}: missing shards {missing} of {world}")
        ident = identity(model)
        parts, paths, skipped, seen = [], [], [], set()
        first = None
        end = 0
        for r in range(world):
            f = metas[(world, r)]
            try:
                meta = json.loads(f.read_text())
                emb = np.load(f.with_suffix(".npy"), allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"{f}: missing or unreadable shard ({e})") from None
            first = first or meta
            if meta.get("list_sha256") != first.get("list_sha256"):
                raise ValueError(f"{f}: computed over another image list than rank 0's; re-run that shard")
            if meta.get("weights_sha256") != ident["weights_sha256"] or meta.get("model") != model.name:
                raise ValueError(f"{f}: computed with model {meta.get('model')!r} and other weights than the "
                                 f"model given; re-run embed_shard with this model")
            if meta["start"] != end:
                raise ValueError(f"{f}: covers [{meta['start']}, {meta['end']}) but the previous shards end at "
                                 f"{end}: shards overlap or leave a gap")
            end = meta["end"]
            if len(emb) != len(meta["paths"]):
                raise ValueError(f"{f}: {len(meta['paths'])} paths but {len(emb)} embeddings")
            dup = seen.intersection(meta["paths"])
            if dup:
                raise ValueError(f"{f}: overlaps earlier shards (e.g. {sorted(dup)[0]})")
            seen.update(meta["paths"])
            parts.append(emb)
            paths += meta["paths"]
            skipped += meta["skipped"]
        if end != first["total"]:
            raise ValueError(f"{shard_dir}: shards cover {end} of {first['total']} images")
        if not paths:
            raise ValueError(f"{shard_dir}: no readable images in any shard ({len(skipped)} skipped)")
        emb = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
        r = cls._create(model, emb, paths, skipped, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search,
                        source=first.get("source"), ident=ident)
        r.save(out)
        return r

    # ---- queries ----------------------------------------------------------------------------------------
    def search_text(self, text: str, k: int = 10, rerank=None) -> list[dict]:
        """Text -> images. rerank: None/True = stage 2 when the model is not separable, False = stage 1 only,
        an int = stage 2 over that many stage-1 candidates."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty query")
        k = _check_k(k)
        with _inference(self.model):
            q = _vectors(self.model.encode_text([text]))
        second = rerank is not False and not self.model.separable
        ids, scores = self._nearest(self.index, q, max(k, self._shortlist(rerank)) if second else k)
        if second:
            scores = self._rescore(ids, text)
            order = np.argsort(-scores, kind="stable")
            ids, scores = ids[order], scores[order]
        return [{"rank": i + 1, "path": self.paths[j], "score": float(s), "index": int(j)}
                for i, (j, s) in enumerate(zip(ids[:k], scores[:k]))]

    def search_image(self, image, k: int = 10, rerank=None) -> list[dict]:
        """Image (PIL image or path) -> gallery images by embedding cosine. `rerank` is accepted for a uniform
        call and has no effect: model.score compares an image with text, so image->image has no stage 2."""
        k = _check_k(k)
        return self.search_vector(self._image_vector(image), k)

    def search_vector(self, vec, k: int = 10) -> list[dict]:
        """An embedding (shape [d] or [1, d], from this model) -> gallery images by cosine, stage 1 only: for
        callers that embed queries themselves."""
        if k.__class__ is not int or k < 1:  # the common case checked in one step; _check_k explains the rest
            k = _check_k(k)
        q = np.array(vec, dtype=np.float32).reshape(1, -1)  # a copy: normalising must not touch the caller's
        if q.shape[1] != self._dim:
            raise ValueError(f"query has {q.shape[1]} dimensions, the index {self._dim}")
        faiss.normalize_L2(q)
        scores, ids = self.index.search(q, k if k < self._total else self._total)
        ids, scores = ids[0], scores[0]
        if len(ids) and ids[-1] < 0:  # HNSW may return fewer than asked, padded with -1 at the end
            keep = ids >= 0
            ids, scores = ids[keep], scores[keep]
        # plain-list loop: per-element numpy scalars would cost more than the search itself on small galleries
        paths = self.paths
        return [{"rank": i, "path": paths[j], "score": s, "index": j}
                for i, j, s in zip(range(1, len(ids) + 1), ids.tolist(), scores.tolist())]

    def search_captions(self, image, k: int = 10, rerank=None) -> list[dict]:
        """Image -> the dataset's captions (index built from a CaptionDataset); two stages as search_text.
        Results carry `caption` and `path` (the image the caption belongs to)."""
        if not self.captions:
            raise ValueError("this index has no captions: build it from a dataset (`rsdemo index --data ...`)")
        k = _check_k(k)
        if self._caption_emb is None:  # encoded on first use: most indexes are never asked image->text
            texts = [c["text"] for c in self.captions]
            with _inference(self.model):
                emb = np.concatenate([_vectors(self.model.encode_text(texts[i:i + 256]))
                                      for i in range(0, len(texts), 256)])
            self._caption_emb = faiss.IndexFlatIP(emb.shape[1])
            self._caption_emb.add(emb)
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image)
        q = self._image_vector(image)
        second = rerank is not False and not self.model.separable
        ids, scores = self._nearest(self._caption_emb, q, max(k, self._shortlist(rerank)) if second else k)
        if second:
            with _inference(self.model):
                scores = self.model.score(self.model.preprocess([image]),
                                          [self.captions[j]["text"] for j in ids])[0].float().cpu().numpy()
            order = np.argsort(-scores, kind="stable")
            ids, scores = ids[order], scores[order]
        return [{"rank": i + 1, "caption": self.captions[j]["text"], "path": self.captions[j]["image"],
                 "score": float(s), "index": int(j)} for i, (j, s) in enumerate(zip(ids[:k], scores[:k]))]

    # ---- helpers ----------------------------------------------------------------------------------------
    def _shortlist(self, rerank) -> int:
        if rerank is None or rerank is True:
            return self.rerank_k
        if isinstance(rerank, int) and rerank > 0:
            return rerank
        raise ValueError(f"rerank: expected None, True, False or a positive int, got {rerank!r}")

    @staticmethod
    def _nearest(index, q: np.ndarray, n: int):
        scores, ids = index.search(q, min(n, index.ntotal))
        if len(ids[0]) == 0 or ids[0, -1] >= 0:  # the common case, checked cheaply: no padding
            return ids[0], scores[0]
        keep = ids[0] >= 0  # HNSW may return fewer than asked, padded with -1 at the end
        return ids[0][keep], scores[0][keep]

    def _image_vector(self, image) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            image = open_image(image)
        with _inference(self.model):
            return _vectors(self.model.encode_image(self.model.preprocess([image])))

    def _prepared(self, j: int) -> torch.Tensor:
        """Gallery image j decoded and preprocessed for the model (kept up to prepared_mb, so repeated reranks of
        a demo gallery read and decode no files; float32, so stage-2 scores equal model.score exactly)."""
        x = self._prep.get(j)
        if x is None:
            im, err = _try_load(self.paths[j])
            if err is not None:
                raise ValueError(f"stale index: {self.paths[j]} cannot be read any more ({err}); "
                                 f"rebuild with `rsdemo index`")
            x = self.model.preprocess([im])[0].cpu()
            if self._prep_bytes + x.nbytes <= self.prepared_mb << 20:
                self._prep[j] = x
                self._prep_bytes += x.nbytes
        return x

    def _rescore(self, ids, text: str) -> np.ndarray:
        out = []
        with _inference(self.model):
            for s in range(0, len(ids), self.batch_size):
                batch = torch.stack([self._prepared(int(j)) for j in ids[s:s + self.batch_size]])
                batch = batch.to(self.model.device)
                out.append(self.model.score(batch, [text])[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_gallery(man: dict, fix: str) -> None:
    for p, size in zip(man["paths"], man["sizes"]):
        now = _size(p)
        if now < 0:
            raise ValueError(f"stale index: {p} no longer exists; {fix}")
        if size >= 0 and now != size:
            raise ValueError(f"stale index: {p} changed ({size} -> {now} bytes); {fix}")
    src = man.get("source")
    if src:
        have, had = len(list_images(src)), len(man["paths"]) + len(man["skipped"])
        if have != had:
            raise ValueError(f"stale index: {src} now holds {have} image files, the index was built from {had}; "
                             f"{fix}")


# ---- shards -----------------------------------------------------------------------------------------------

def embed_shard(model, paths, rank=None, world=None, out="shards", batch_size=32, progress=True) -> Path:
    """Embeds the rank-th contiguous slice of the sorted gallery into out/shard-RRRRR-of-WWWWW.npy (+ .json with
    its paths, skipped files and model identity). rank/world default to $RANK/$WORLD_SIZE, so
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
            "list_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest()}
    npy, js = out / f"{name}.npy", out / f"{name}.json"
    if npy.is_file() and js.is_file():
        try:
            old = json.loads(js.read_text())
            if all(old.get(k) == v for k, v in meta.items() if k != "checkpoint"):
                return npy
        except ValueError:
            pass
    chunks = out / f".{name}.chunks"
    emb, kept, skipped = _embed(model, paths[start:end], batch_size, chunks, progress=progress, ident=ident)
    _save_npy(npy, emb)
    meta.update(dim=int(emb.shape[1]), paths=kept, skipped=skipped)
    text = json.dumps(meta, indent=1) + "\n"
    atomic_write(js, lambda tmp: Path(tmp).write_text(text))  # the json last: it marks the shard finished
    shutil.rmtree(chunks, ignore_errors=True)
    return npy
