"""A persistent gallery index for retrieval: embed the images once, answer text or image queries in milliseconds.

Two stages. Stage 1 is a FAISS search over the L2-normalised float32 image embeddings (inner product = cosine):
exact `IndexFlatIP` for small galleries, `IndexHNSWFlat` (approximate, sub-linear) from `hnsw_threshold` images
on. It returns a shortlist (`rerank_k`, or k if larger). Stage 2 runs only for models whose `score` is not the
embedding dot product (`model.separable is False`, e.g. AMFMN's vision-guided text): the shortlist is rescored
with `model.score_state` on the model's image state cached at build time (rsdemo.models.base: the same
computation as `model.score` from pixels, so no image backbone runs for a text query), and explaining a gallery
image (`explain`) reads the same state. For separable models stage 1 already is the model's score. The state is
float16 by default (`state="float32"` keeps it exact; `state=None` stores none, and stage 2 then reloads and
re-encodes the shortlisted images as before). Default depth: rerank_k, measured by scripts/rerank_depth.py.

Persistence: the folder's files, their atomic writes, the memory-mapped state and the resumable chunks are
rsdemo.store's. `build(..., out=...)` keeps embeddings and state in out/chunks as they are computed; a rerun reuses
every chunk whose key (model weights, config, state dtype, that chunk's paths, sizes and mtimes) still matches, so
a large folder interrupted at 90% costs 10% to finish.

Staleness. `load` refuses an index (ValueError saying what differs and how to rebuild) when the model's name,
embedding dimension or weights (sha256 of the state dict; the checkpoint file's sha256 is recorded too) differ
from the manifest's: embeddings of another model live in another space and would give confident noise. It also
refuses when a listed image no longer exists or changed size, and, for an index built from a folder, when the
folder now holds a different number of image files. Unreadable images are skipped at build time and listed in
the manifest with the reason; they never abort a build.

Sharding. See `embed_shard` and `Retriever.merge`.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np
import torch

from .data.images import open_image
from .encode import _embed, _gallery, _inference, _model_dim, _size, _try_load, _vectors
from .encode import embed_shard, identity, list_images  # noqa: F401 - public names of the index
from .files import atomic_write
from .store import (FILES, FORMAT, load_state, read_manifest, read_shards, save_npy,  # noqa: F401
                    save_state, state_dtype, state_info, write_json)
from .version import __version__

KINDS = ("auto", "flat", "hnsw")


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


# ---- the index --------------------------------------------------------------------------------------------

class Retriever:
    """A model plus its gallery index. Build with `build` (or `merge`), reopen with `load`, query with search_*."""

    # stage-1 shortlist for stage 2 (or k if larger). scripts/rerank_depth.py (UCM val, AMFMN split; the table in
    # docs/rerank_depth.json): mR of ucm/amfmn-lite0 43.59 (stage 1) -> 45.27 (K=10), 45.60 (50), 45.68 (100) =
    # 45.68 (210: every image); ucm/amfmn-slim and ucm/ccnet-lite0 also reach their best at K=100 (ucm/dove-lite0
    # is best at K=10: its full score ranks below a shallow rerank). From the cached state K=100 costs little more
    # than K=50 (bench/rerank.py)
    rerank_k = 100
    batch_size = 32     # images per forward pass when rescoring from pixels (an index without state)
    prepared_mb = 256   # preprocessed gallery images kept in memory for stage 2 from pixels

    def __init__(self, model, embeddings: np.ndarray, index, manifest: dict, state: dict | None = None):
        self.model = model
        self.embeddings = embeddings
        self.index = index
        self.state: dict[str, np.ndarray] = state or {}   # the model's image state per gallery image (memmaps)
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
        st = self.manifest["state"]
        st = f"state {st['dtype']} {st['bytes_per_image']:,} B/image" if st else "no state"
        return (f"Retriever({self.manifest['model']!r}, {len(self)} images, {self.manifest['index']['kind']}, "
                f"{st}, {len(self.manifest['skipped'])} skipped)")

    # ---- building ---------------------------------------------------------------------------------------
    @classmethod
    def build(cls, model, images, out=None, batch_size=32, kind="auto", hnsw_threshold=50_000, hnsw_m=32,
              ef_construction=200, ef_search=128, progress=True, resume=True, chunk=1024, state="float16"):
        """Embeds a folder (recursive, sorted), a list of paths, or a CaptionDataset (its captions are kept for
        search_captions) and indexes it, with the model's image state in `state` precision ("float16",
        "float32", or None for none). With `out`, embeddings and state are kept in out/chunks as they are
        computed (a rerun skips finished chunks unless resume=False) and the index is saved to out."""
        if kind not in KINDS:
            raise ValueError(f"index kind {kind!r}: expected one of {', '.join(KINDS)}")
        if state is not None:
            state_dtype(state)
        paths, skipped, captions, source, dataset = _gallery(images)
        chunk_dir = Path(out) / "chunks" if out is not None else None
        ident = identity(model)
        emb, st, kept, bad = _embed(model, paths, batch_size, chunk_dir, chunk, resume, progress, ident=ident,
                                    state=state)
        skipped += bad
        if not kept:
            raise ValueError(f"no readable images in {source or dataset or 'the list given'} "
                             f"({len(skipped)} skipped)")
        r = cls._create(model, emb, kept, skipped, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search,
                        captions=captions, source=source, dataset=dataset, ident=ident, state=st, dtype=state)
        if out is not None:
            r.save(out)
        return r

    @classmethod
    def _create(cls, model, emb, paths, skipped, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search,
                captions=None, source=None, dataset=None, ident=None, state=None, dtype=None):
        index, params = _make_index(emb, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search)
        manifest = {
            "format": FORMAT, "rsdemo": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(ident or identity(model)), "dim": int(emb.shape[1]), "index": params, "count": len(paths),
            "source": source, "dataset": dataset, "paths": list(paths), "sizes": [_size(p) for p in paths],
            "skipped": skipped, "captions": captions,
            "state": state_info(state, dtype) if dtype is not None else None,
        }
        return cls(model, emb, index, manifest, state if dtype is not None else None)

    def save(self, out) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # the manifest is the commit marker: gone while the other files change, written last
        (out / "manifest.json").unlink(missing_ok=True)
        save_npy(out / "embeddings.npy", self.embeddings)
        atomic_write(out / "index.faiss", lambda tmp: faiss.write_index(self.index, tmp))
        save_state(out, self.state)
        write_json(out / "manifest.json", self.manifest)
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
        if man["state"] and man.get("state_version", 1) != ident["state_version"]:
            raise ValueError(f"{path}: its image state was computed by version {man.get('state_version', 1)} of "
                             f"{model.name!r}'s maps, this rsdemo reads version {ident['state_version']}; {fix}")
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
        state = load_state(path, man, fix)
        if check_files:
            _check_gallery(man, fix)
        return cls(model, emb, index, man, state)

    @classmethod
    def merge(cls, shard_dir, model, out, kind="auto", hnsw_threshold=50_000, hnsw_m=32, ef_construction=200,
              ef_search=128):
        """Joins the shards of `embed_shard` (all ranks of one world, computed by this model) into one index,
        saved to out. Refuses missing ranks, shards of another run, and shards that overlap or leave gaps
        (rsdemo.store.read_shards)."""
        ident = identity(model)
        emb, state, dtype, paths, skipped, source = read_shards(shard_dir, ident, model.name)
        r = cls._create(model, emb, paths, skipped, kind, hnsw_threshold, hnsw_m, ef_construction, ef_search,
                        source=source, ident=ident, state=state, dtype=dtype)
        r.save(out)
        return r

    # ---- queries ----------------------------------------------------------------------------------------
    def search_text(self, text: str, k: int = 10, rerank=None) -> list[dict]:
        """Text -> images. rerank: None/True = stage 2 when the model is not separable, False = stage 1 only,
        an int = stage 2 over that many stage-1 candidates."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty query")
        k = _check_k(k)
        second = rerank is not False and not self.model.separable
        with _inference(self.model):
            texts = self.model.text_state([text]) if second else [text]   # the text encoded once for both stages
            q = _vectors(self.model.encode_text(texts))
        ids, scores = self._nearest(self.index, q, max(k, self._shortlist(rerank)) if second else k)
        if second:
            scores = self._rescore(ids, texts)
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
        second = rerank is not False and not self.model.separable
        if second:  # the image's state once: its stage-1 embedding and the stage-2 scores both read it
            with _inference(self.model):
                st = self.model.image_state(self.model.preprocess([image]))
                q = _vectors(self.model.state_embedding(st))
        else:
            q = self._image_vector(image)
        ids, scores = self._nearest(self._caption_emb, q, max(k, self._shortlist(rerank)) if second else k)
        if second:
            with _inference(self.model):
                scores = self.model.score_state(st, [self.captions[j]["text"] for j in ids])[0]
            scores = scores.float().cpu().numpy()
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

    def id_of(self, path: str) -> int:
        """The gallery id of an indexed image path (ValueError if it is not in the index)."""
        if getattr(self, "_ids", None) is None:
            self._ids = {p: i for i, p in enumerate(self.paths)}
        if path not in self._ids:
            raise ValueError(f"{path} is not in this index")
        return self._ids[path]

    def state_rows(self, ids) -> dict[str, np.ndarray]:
        """The cached image state of gallery images `ids` (in memory; the files stay memory-mapped)."""
        ids = np.asarray(ids, dtype=np.int64)
        return {k: np.asarray(v[ids]) for k, v in self.state.items()}

    def explain(self, j: int, text: str):
        """The model's own explanation of gallery image j against text, from the cached state where the index
        has one and the model explains from state (no image backbone runs), else from the image file."""
        with _inference(self.model):
            if self.state and self.model.explains_state():
                return self.model.explain_state(self.state_rows([j]), text)
            return self.model.explain(self._prepared(j)[None], text)   # a batch of one: any explain() takes it

    def _rescore(self, ids, texts) -> np.ndarray:
        """Full scores of gallery images `ids` against one text (a list of it, or the model's text_state)."""
        if self.state:  # the shortlist's cached image state: no image backbone runs
            with _inference(self.model):
                return self.model.score_state(self.state_rows(ids), texts)[:, 0].float().cpu().numpy()
        out = []
        with _inference(self.model):
            for s in range(0, len(ids), self.batch_size):
                batch = torch.stack([self._prepared(int(j)) for j in ids[s:s + self.batch_size]])
                batch = batch.to(self.model.device)
                out.append(self.model.score(batch, texts)[:, 0].float().cpu().numpy())
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
