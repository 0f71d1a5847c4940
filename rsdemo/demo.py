"""What the demo page does, as plain Python: pick a model, search a gallery by text or image, explain a result.

The service behind the page: it returns data (hits, maps, scores, matrices), never pixels, charts or wording:
rsdemo.ui renders, rsdemo.page lays out (app.py and `rsdemo serve` start it), so everything the page shows is
reachable from Python (and the same calls back the page's named API endpoints). A `Demo` holds one gallery (the synthetic demo gallery by default, or any
image folder, with its annotation file when given) and the models that have a checkpoint; each model's index of
the gallery is built once, kept on disk, and reopened on the next start.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .checkpoint import catalogue, checkpoint_dirs, load_model, rank  # noqa: F401 - re-exported (public names of the service)
from .data.formats import dataset_name, domain, open_dataset
from .data.images import open_image
from .data.sources import resolve_gallery
from . import results
from .explain import (IMAGE_MAP, SENTENCE, cooccurrence, find_word, gradcam, image_similarity, own_maps,
                      region_similarity, word_map, words)
from .files import cache_root
from .index import Retriever, list_images
from .models.registry import arch_class

DEFAULT_GALLERY = "synthetic:300:7"  # a world with another seed: images no demo checkpoint saw in training
MAX_QUERY = 1000                     # characters; a longer text is refused rather than silently cut (the page's
                                     # text box stops at the same length)
MAX_K = 50
BASELINES = ("baseline_region_sim", "baseline_gradcam")


class InputError(ValueError):
    """Something the user gave (text, image, model, gallery name) cannot be used; the message says why."""


# ---- inputs ------------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # ANSI escapes, then the rest


def clean_query(text) -> str:
    """The query as a model should see it: control characters dropped, whitespace collapsed, NFC; refuses an
    empty or over-long text with a message the page can show."""
    if text is None or not isinstance(text, str):
        raise InputError("Type a description of the images you are looking for.")
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", text))
    text = " ".join(text.split())
    if not text:
        raise InputError("Type a description of the images you are looking for.")
    if len(text) > MAX_QUERY:
        raise InputError(f"The description is {len(text):,} characters long; please keep it under {MAX_QUERY:,}.")
    return text


def read_image(image):
    """An uploaded image (path or PIL) as 8-bit RGB, or InputError saying why it cannot be used. PIL images go
    through the same loader, so the pixel limit holds for every caller."""
    if image is None:
        raise InputError("Upload an image (PNG, JPEG, TIFF or WebP) first.")

    try:
        return open_image(image)
    except ValueError as e:  # DataError: the loader's one-line reason (not an image, too many pixels, ...)
        raise InputError(str(e).split("\n")[0]) from None
    except Exception as e:  # noqa: BLE001 - any other decoder failure becomes one clear line
        raise InputError(f"Could not read that file as an image ({type(e).__name__}: {e}).") from None


def summary(card: dict) -> str:
    """One plain sentence on what a model does, for the page: its architecture's `summary` (a class attribute
    beside the model), else the first clause of the card's description."""
    try:
        text = getattr(arch_class(card.get("arch")), "summary", "")
    except ValueError:   # an architecture this install does not have
        text = ""
    return text or re.split(r"[:;(]", card.get("description") or "", maxsplit=1)[0].strip()


# ---- galleries ---------------------------------------------------------------------------------------------

class Gallery:
    """The images the page searches: a dataset (synthetic spec or annotations + image folder, optionally one
    split) or a bare folder. `key` names its cache folder."""

    def __init__(self, images: str | None = None, data: str | None = None, split: str | None = None):
        self.dataset = None
        images, data, split = resolve_gallery(images, data, split)  # a dataset name ('ucm'): fetched, verified
        if images is None and data is None:
            data = DEFAULT_GALLERY
        if data is not None:
            ds = open_dataset(data, images=images)
            if split:
                if split not in ds.split_counts():
                    raise InputError(f"{data} has no split {split!r} (has {', '.join(ds.split_counts())})")
                ds = ds.split(split)
            self.dataset = ds
            # the image root when given (the Land Use layout keeps images in class subfolders below it)
            self.folder = (str(ds.image_root) if ds.has_images() else
                           str(Path(ds.image_path(0)).parent) if len(ds) else str(images or ""))
        else:
            if not Path(images).is_dir():
                raise InputError(f"{images}: not a folder of images")
            self.folder = str(Path(images).resolve())
        self.data, self.split = data, split
        self.domain = domain(data) if data else "folder"
        self.size = len(self.dataset) if self.dataset is not None else len(list_images(self.folder))
        # the title names the gallery on the page and in the API: what it is, never where it lies on disk
        where = dataset_name(data) if data else Path(self.folder).name
        self.title = " · ".join([where] + ([split] if split else [])
                                + [f"{self.size:,} image{'s' if self.size != 1 else ''}"])
        if data == DEFAULT_GALLERY:
            self.title = f"synthetic demo gallery · {self.size} scenes never seen in training"
        ident = f"{data}|{Path(images).resolve() if images else ''}|{split}"
        self.key = hashlib.sha256(ident.encode()).hexdigest()[:12]

    def source(self):
        """What Retriever.build indexes: the dataset (its captions kept for image->text) or the folder."""
        return self.dataset if self.dataset is not None else self.folder

    def example_queries(self, n: int = 6) -> list[str]:
        """Captions of the gallery's own data, spread over its scene labels (a bare folder has generic ones)."""
        if self.dataset is None:
            return ["many buildings next to a road", "a river through green fields", "planes at an airport"]
        return self.dataset.example_captions(n)

    def example_images(self, n: int = 6) -> list[str]:
        """n of the gallery's own images to search with, one per scene label in turn (labels spread evenly over
        the sorted list), or spread evenly over a bare folder; none for a synthetic gallery (the page keeps its
        packaged examples: scenes the gallery does not hold)."""
        def spread(items: list) -> list:
            return [items[i] for i in dict.fromkeys(np.linspace(0, len(items) - 1, min(n, len(items))).round()
                                                     .astype(int).tolist())]

        if self.domain == "synthetic":
            return []
        if self.dataset is None:
            return spread(list_images(self.folder))
        by_label: dict[str, list[int]] = {}
        for i, r in enumerate(self.dataset.records):
            by_label.setdefault(r.label or "", []).append(i)
        groups = ([by_label[k] for k in spread(sorted(by_label))] if len(by_label) > 1
                  else [[i] for i in spread(list(range(len(self.dataset))))])   # no labels: spread over images
        out = []
        for ids in groups:
            for i in ids:
                try:
                    out.append(os.path.abspath(self.dataset.image_path(i)))
                    break
                except ValueError:  # a listed image that is missing: the next one of its label
                    continue
        return out

    def labels(self) -> dict[str, str]:
        """Absolute image path -> scene label, where the data has labels."""
        if self.dataset is None:
            return {}
        out = {}
        for i, r in enumerate(self.dataset.records):
            try:
                out[os.path.abspath(self.dataset.image_path(i))] = r.label
            except ValueError:
                pass
        return out


# ---- the demo ----------------------------------------------------------------------------------------------

class Demo:
    """Galleries, the models with checkpoints, and the three things the page does with them (search by text,
    search by image, explain a result). Safe to share between concurrent users: every call names its model
    and gallery; indexes are built once per (gallery, model), other requests go on meanwhile."""

    def __init__(self, galleries=None, dirs=None, cache: str | os.PathLike | None = None):
        if galleries is None or isinstance(galleries, Gallery):
            galleries = [galleries or Gallery()]
        self.galleries: dict[str, Gallery] = {g.title: g for g in galleries}
        self.all_models = catalogue(dirs)
        for m in self.all_models:
            m["summary"] = summary(m["card"])
        if not self.all_models:
            raise InputError("no trained checkpoints found (rsdemo/checkpoints/ or RSDEMO_CHECKPOINTS); train one with "
                             "`rsdemo train` or set RSDEMO_HF_REPO")
        self.cache = Path(cache) if cache else cache_root() / "app"
        self._loaded: dict = {}
        self._retrievers: dict = {}
        self._explained: OrderedDict = OrderedDict()
        self._lock = threading.RLock()
        self._building: dict = {}      # per-key locks: one build per (gallery, model), nobody else waits
        self._labels: dict = {}
        self._pathsets: dict = {}

    # ---- galleries and models ----------------------------------------------------------------------------
    @property
    def gallery(self) -> Gallery:
        """The first (default) gallery."""
        return next(iter(self.galleries.values()))

    def get_gallery(self, name: str | None = None) -> Gallery:
        if not name:
            return self.gallery
        if name not in self.galleries:
            raise InputError(f"No gallery {name!r}; available: {', '.join(self.galleries)}.")
        return self.galleries[name]

    def add_gallery(self, images: str, data: str | None = None, split: str | None = None) -> Gallery:
        """Adds a folder (with its annotations, when given) to the galleries; its indexes are built on first use."""
        if not images or not str(images).strip():
            raise InputError("Type the path of a folder of images.")
        try:
            g = Gallery(str(images).strip(), data, split)
        except InputError:
            raise
        except ValueError as e:
            raise InputError(str(e).split("\n")[0]) from None
        if g.dataset is None and not g.size:
            raise InputError(f"{g.folder}: no images (PNG, JPEG, TIFF, WebP, BMP) in this folder.")
        with self._lock:
            for old in self.galleries.values():
                if old.key == g.key:
                    return old
            title, n = g.title, 1
            while g.title in self.galleries:  # another folder of the same name and size
                n += 1
                g.title = f"{title} ({n})"
            self.galleries[g.title] = g
        return g

    def models_for(self, gallery: str | None = None) -> list[dict]:
        """The models, those trained on the gallery's kind of imagery first, then by measured retrieval and
        grounding (checkpoint.rank)."""
        return rank(self.all_models, self.get_gallery(gallery).domain)

    @property
    def models(self) -> list[dict]:
        return self.models_for(None)

    def default_for(self, gallery: str | None = None) -> str:
        return self.models_for(gallery)[0]["name"]

    @property
    def default(self) -> str:
        return self.default_for(None)

    def names(self, gallery: str | None = None) -> list[str]:
        return [m["name"] for m in self.models_for(gallery)]

    def info(self, name: str) -> dict:
        for m in self.all_models:
            if m["name"] == name:
                return m
        raise InputError(f"Model {name!r} has no trained checkpoint here; available: "
                         f"{', '.join(m['name'] for m in self.all_models)}.")

    def _key_lock(self, key) -> threading.Lock:
        with self._lock:
            return self._building.setdefault(key, threading.Lock())

    def model(self, name: str | None = None):
        name = name or self.default
        info = self.info(name)
        with self._key_lock(("model", name)):
            if name not in self._loaded:
                device = "cuda" if torch.cuda.is_available() else None  # a GPU when there is one
                m = load_model(info["checkpoint"], device=device).eval()
                m.remember_texts()   # a query's results are explained with the same words: encoded once
                self._loaded[name] = m
        return self._loaded[name]

    def retriever(self, name: str | None = None, gallery: str | None = None, progress=None):
        """The model's index of the gallery: reopened from the cache, else built (and saved) once."""
        g = self.get_gallery(gallery)
        name = name or self.default_for(gallery)
        key = (g.key, name)
        r = self._retrievers.get(key)
        if r is not None:
            return r
        model = self.model(name)
        with self._key_lock(key):
            r = self._retrievers.get(key)
            if r is not None:
                return r
            out = self.cache / g.key / name
            if (out / "manifest.json").is_file():
                try:
                    r = Retriever.load(out, model)
                except ValueError:
                    r = None  # stale (images changed) or another checkpoint: rebuilt below
            if r is None:
                r = Retriever.build(model, g.source(), out=out, progress=progress is None)
            with self._lock:
                self._retrievers[key] = r
                self._pathsets[key] = set(r.paths)
            return r

    def label(self, path: str, g: Gallery) -> str | None:
        if g.key not in self._labels:
            self._labels[g.key] = g.labels()
        return self._labels[g.key].get(path)

    def _results(self, hits, g: Gallery) -> list[dict]:
        root = Path(g.folder)
        out = []
        for h in hits:
            p = Path(h["path"])
            name = str(p.relative_to(root)) if p.is_relative_to(root) else p.name
            out.append({"rank": h["rank"], "name": name, "score": round(h["score"], 4), "path": h["path"],
                        "label": self.label(h["path"], g)})
        return out

    @staticmethod
    def _k(k) -> int:
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise InputError(f"k must be a whole number, got {k!r}") from None
        if not 1 <= k <= MAX_K:
            raise InputError(f"k must be between 1 and {MAX_K}, got {k}")
        return k

    def search_text(self, query: str, model: str | None = None, k: int = 10, gallery: str | None = None):
        """Text -> the gallery's top-k images: [{rank, name, score, path, label}]."""
        query, k, g = clean_query(query), self._k(k), self.get_gallery(gallery)
        r = self.retriever(model, gallery)
        return self._results(r.search_text(query, k=min(k, len(r))), g)

    def search_image(self, image, model: str | None = None, k: int = 10, gallery: str | None = None):
        """Image (path or PIL) -> the gallery's most similar images, as search_text."""
        im, k, g = read_image(image), self._k(k), self.get_gallery(gallery)
        r = self.retriever(model, gallery)
        return self._results(r.search_image(im, k=min(k, len(r))), g)

    def resolve(self, name: str, model: str | None = None, gallery: str | None = None) -> str:
        """A result's name -> its file, only if that file is in the gallery's index (never a path the caller
        made up: ../, absolute paths and links out of the gallery are not served)."""
        g = self.get_gallery(gallery)
        if not isinstance(name, str) or not name:
            raise InputError("Pick a result first.")
        model = model or self.default_for(gallery)
        self.retriever(model, gallery)
        known = self._pathsets[(g.key, model)]
        # the index keeps absolute paths; a gallery opened with a relative folder (../data) names them relatively
        for p in (str(Path(g.folder) / name), os.path.abspath(Path(g.folder) / name), name):
            if p in known:
                return p
        raise InputError(f"{name!r} is not an image of this gallery.")

    def explanation(self, name: str, query: str, model: str | None = None, gallery: str | None = None):
        """The model's own explanation of (gallery image, query), kept for a few calls so that switching the
        shown map or word does not run the model again."""
        query = clean_query(query)
        model = model or self.default_for(gallery)
        path = self.resolve(name, model, gallery)
        key = (model, path, query)
        with self._lock:
            if key in self._explained:
                self._explained.move_to_end(key)
                return self._explained[key]
        m = self.model(model)
        r = self.retriever(model, gallery)
        image = open_image(path)  # shown under the map; the model's own maps read the index's cached image state
        ex = r.explain(r.id_of(path), query)
        item = {"ex": ex, "image": image, "maps": {}, "model": m, "query": query}
        with self._lock:
            self._explained[key] = item
            while len(self._explained) > 32:
                self._explained.popitem(last=False)
        return item

    def map_figures(self, model: str | None = None, gallery: str | None = None) -> tuple[dict[str, float], str | None]:
        """How often each map of `model` points at the thing named, in % (rsdemo.results.pointing: measured on the
        gallery's kind of imagery where that was measured for this model, else on the other), and where."""
        return results.pointing(model or self.default_for(gallery), self.get_gallery(gallery).domain)

    def best_map(self, names: list[str], model: str | None = None, gallery: str | None = None) -> str | None:
        """The map a result opens on: the best-measured of `names` for this model and imagery (its own map wins a
        tie with a baseline); the first of `names` when none was measured."""
        figures, _ = self.map_figures(model, gallery)
        measured = [n for n in names if n in figures]
        if not measured:
            return names[0] if names else None
        return max(measured, key=lambda n: (figures[n], results.own_map(n)))

    def _baseline(self, item: dict, chosen: str) -> np.ndarray:
        with self._lock:
            heat = item["maps"].get(chosen)
        if heat is None:
            m, image, query = item["model"], item["image"], item["query"]
            heat = (region_similarity(m, image, query) if chosen == "baseline_region_sim"
                    else gradcam(m, image, query))
            if heat is None:
                raise InputError(f"{chosen} is not available for this model.")
            with self._lock:
                item["maps"][chosen] = heat
        return heat

    def _whole(self, item: dict, chosen: str) -> np.ndarray:
        """Map `chosen` of one explanation (an own map, else a baseline computed once and kept with it)."""
        own = own_maps(item["ex"])
        if chosen in own:
            return own[chosen]
        if chosen not in BASELINES:
            raise InputError(f"Map {chosen!r} is not one of {', '.join(list(own) + list(BASELINES))}.")
        return self._baseline(item, chosen)

    def explain(self, name: str, query: str, model: str | None = None, map: str | None = None,
                word: str | None = None, gallery: str | None = None) -> dict:
        """One map (a model's own, or a baseline) of a gallery image, for the whole text or one of its words, as
        data: {image (PIL), heat (the map at its own resolution), map (its name: `map`, or by default the
        best-measured one, best_map), maps (the names to choose from), word (the word shown, or None for the
        whole text), words (the text's content words: rsdemo.explain.words keys, function words left out),
        word_source ("stack": the word's own rows of a per-word map; "alone": the map of the word alone as the
        text; None), same_for_words (that word's map equals the whole text's: a map that ignores the words),
        tokens, score, cooccurrence (rsdemo.explain.cooccurrence: the word x region matrix, or None), figures
        and measured_on (map_figures)}. rsdemo.ui draws it (ui.explained_image, ui.cooccurrence_view)."""
        model = model or self.default_for(gallery)
        item = self.explanation(name, query, model, gallery)
        ex, image = item["ex"], item["image"]
        names = list(own_maps(ex)) + list(BASELINES)
        chosen = map or self.best_map(names, model, gallery)
        if chosen not in names:
            raise InputError(f"Map {chosen!r} is not one of {', '.join(names)}.")
        heat = self._whole(item, chosen)
        key, source, same = None, None, False
        if word and word != SENTENCE:
            try:
                w = find_word(list(ex.tokens), word)
            except ValueError:
                raise InputError(f"No word {word!r} in “{item['query']}”.") from None
            key, one = w["key"], word_map(ex, chosen, w["key"])
            if one is not None:
                source = "stack"
            else:   # a map not built word by word: the same map with the word alone as the text
                alone = self.explanation(name, w["word"], model, gallery)
                if chosen not in own_maps(alone["ex"]) and chosen not in BASELINES:
                    raise InputError(f"Map {chosen!r} has no per-word version.")
                one, source = self._whole(alone, chosen), "alone"
                same = np.asarray(one).shape == np.asarray(heat).shape and np.allclose(one, heat, atol=1e-6)
            heat = one
        figures, where = self.map_figures(model, gallery)
        return {"image": image, "heat": np.asarray(heat), "map": chosen, "maps": names, "word": key,
                "words": [w["key"] for w in words(list(ex.tokens)) if not w["function"]], "word_source": source,
                "same_for_words": bool(same), "tokens": list(ex.tokens), "score": float(ex.score),
                "cooccurrence": cooccurrence(ex), "figures": figures, "measured_on": where}

    def explain_image(self, name: str, image, model: str | None = None, gallery: str | None = None) -> dict:
        """An image->image result explained: the cosine of each region of the result (`name`) with the query
        image's embedding (rsdemo.explain.image_similarity: which parts of the result look like the query to
        this model), as data shaped like explain's (map IMAGE_MAP, no words, no co-occurrence)."""
        query = read_image(image)
        model = model or self.default_for(gallery)
        path = self.resolve(name, model, gallery)
        m, result = self.model(model), open_image(path)
        with torch.no_grad():
            e = m.encode_image(m.preprocess([result, query])).float()
            e = torch.nn.functional.normalize(e, dim=-1)
            heat = image_similarity(m, result, e[1])
        if heat is None:
            raise InputError(f"{model} has no per-region embeddings, so it cannot show where an image matches.")
        return {"image": result, "heat": np.asarray(heat), "map": IMAGE_MAP, "maps": [IMAGE_MAP], "word": None,
                "words": [], "word_source": None, "same_for_words": False, "tokens": [],
                "score": float(e[0] @ e[1]), "cooccurrence": None, "figures": {}, "measured_on": None}

    def warm(self, model: str | None = None, gallery: str | None = None) -> None:
        """Loads the model and its index (what a cold start pays once)."""
        self.retriever(model, gallery)
