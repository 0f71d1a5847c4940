"""The synthetic aerial world: determinism, coverage, caption truth, spans, hard negatives, export round trip."""
import re
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from rsdemo.data import synthetic as S
from rsdemo.data.captions import keyword_words
from rsdemo.data.formats import load_karpathy, open_dataset
from rsdemo.data.text import tokenize
from rsdemo.data.world import NUMBERS
from rsdemo.evaluate import recall
from rsdemo.baselines import keyword_scores

N = 300


@pytest.fixture(scope="module")
def world():
    return list(S.generate(N, seed=0))


def test_deterministic_and_prefix_stable():
    a = list(S.generate(25, seed=7))
    b = list(S.generate(40, seed=7))[:25]
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.ids, y.ids)
        assert x.captions == y.captions and x.split == y.split and x.objects == y.objects
    c = list(S.generate(25, seed=8))
    assert any(x.captions != y.captions for x, y in zip(a, c))


def test_coverage(world):
    assert len(S.SCENES) >= 12 and len(S.KINDS) >= 10
    assert len({w.label for w in world}) == len(S.SCENES)
    classes = Counter(o["class"] for w in world for o in w.objects if not o.get("structure"))
    assert len(classes) >= 10, classes
    colours = {o["colour"] for w in world for o in w.objects if "colour" in o}
    assert len(colours) >= 6
    counts = Counter(len([o for o in w.objects if o.get("group") == 0]) for w in world)
    assert len(counts) >= 6  # main-group counts from 1 up
    assert Counter(w.split for w in world).keys() == {"train", "val", "test"}


def test_images_and_masks(world):
    for w in world[:50]:
        assert w.image.shape == (256, 256, 3) and w.image.dtype == np.uint8
        assert w.ids.shape == (256, 256)
        present = set(np.unique(w.ids).tolist()) - {0}
        assert present == {o["id"] for o in w.objects}  # every object visible, no stray ids
        assert w.image.std() > 5  # textured, not flat


def test_five_distinct_captions(world):
    for w in world:
        assert len(w.captions) == 5 and len(set(w.captions)) == 5
        assert all(c[0].isupper() and c.endswith(".") for c in w.captions)


def _numbers():
    return {w: i for i, w in enumerate(NUMBERS)} | {"a": 1, "an": 1, "one": 1}


def test_spans_point_at_the_named_objects(world):
    num = _numbers()
    by_id = lambda w: {o["id"]: o for o in w.objects}
    checked = Counter()
    for w in world:
        objs = by_id(w)
        for text, spans in zip(w.captions, w.spans):
            toks = tokenize(text)
            assert spans, text  # every caption names at least one object
            for sp in spans:
                phrase = toks[sp.start:sp.end]
                assert phrase and sp.objects, (text, sp)
                classes = {objs[i]["class"] for i in sp.objects}
                assert len(classes) == 1
                cls = classes.pop()
                nouns = keyword_words(cls)
                assert set(phrase) & nouns, (text, phrase, cls)
                for i in sp.objects:  # the mask really holds the object
                    assert (w.ids == i).any()
                if objs[sp.objects[0]].get("structure"):
                    continue
                # the count stated is the number of instances referred to
                if phrase[0] in num and not (phrase[0] == "a" and phrase[1:2] == ["pair"]):
                    assert num[phrase[0]] == len(sp.objects), (text, phrase)
                    checked["count"] += 1
                if phrase[:3] == ["a", "pair", "of"]:
                    assert len(sp.objects) == 2
                colour = [t for t in phrase if t in S.COLOURS]
                if colour:
                    assert all(objs[i]["colour"] == colour[0] for i in sp.objects), (text, phrase)
                    checked["colour"] += 1
    assert checked["count"] > 500 and checked["colour"] > 500


def _centroid(ids, objects):
    ys, xs = np.nonzero(np.isin(ids, list(objects)))
    return xs.mean(), ys.mean()


def test_relations_are_true(world):
    seen = Counter()
    for w in world:
        for text, spans in zip(w.captions, w.spans):
            low = text.lower()
            for rel in ("to the left of", "to the right of", "above", "below"):
                if f" {rel} " not in f" {low} " or len(spans) < 2:
                    continue
                # relation phrases stand between the first two object phrases
                (ax, ay), (bx, by) = _centroid(w.ids, spans[0].objects), _centroid(w.ids, spans[1].objects)
                ok = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}[rel]
                assert ok, (text, (ax, ay), (bx, by))
                seen[rel] += 1
    assert sum(seen.values()) > 100, seen


def test_positions_are_true(world):
    n = 0
    for w in world:
        for text, spans in zip(w.captions, w.spans):
            m = re.search(r"(in the|at the) (top|bottom) (left|right)( corner)?", text.lower())
            if not m or len(spans) != 1:
                continue
            cx, cy = _centroid(w.ids, spans[0].objects)
            assert S.position_name(cx, cy) == f"{m.group(2)} {m.group(3)}", text
            n += 1
    assert n > 50


def test_hard_negatives(world):
    fams = defaultdict(list)
    for w in world:
        fams[w.family].append(w)
    with_sibling = 0
    for members in fams.values():
        assert len({m.split for m in members}) == 1  # a family never straddles splits
        if len(members) > 1:
            base = members[0]
            for m in members[1:]:
                assert m.label == base.label
                assert set(m.captions) != set(base.captions)
            with_sibling += len(members)
    assert with_sibling / len(world) > 0.4


def test_scene_words_do_not_solve_it(world):
    ds = S.to_dataset(world)
    texts, owner = ds.captions()
    r = recall(keyword_scores(ds), owner)
    # knowing the scene and every object class present leaves counts, colours and relations unread
    assert r["t2i_r1"] < 15 and r["i2t_r1"] < 15 and r["mr"] < 40, r


def test_export_round_trip_1000(tmp_path):
    out = tmp_path / "syn"
    res = subprocess.run([sys.executable, "-m", "rsdemo", "make-synthetic", "--out", str(out), "--n", "1000",
                          "--quiet"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ds = open_dataset(f"rsitmd:{out / 'dataset_synthetic.json'}", images=out / "images")
    worlds = list(S.generate(1000, seed=0))
    assert len(ds) == 1000 and not ds.problems
    for i, (rec, w) in enumerate(zip(ds.records, worlds)):
        assert rec.captions == w.captions and rec.split == w.split and rec.label == w.label
        assert rec.spans == w.spans and rec.objects == w.objects and rec.keywords == w.keywords
    for i in range(0, 1000, 7):  # pixels: lossless PNG, images and masks identical
        s = ds[i]
        assert np.array_equal(np.asarray(s.image), worlds[i].image)
        assert np.array_equal(s.masks, worlds[i].ids)


def test_open_synthetic_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path))
    ds = open_dataset("synthetic:30:2")
    assert len(ds) == 30 and ds.labels
    stamp = (tmp_path / "synthetic-n30-s2-256" / "dataset_synthetic.json").stat().st_mtime_ns
    assert len(open_dataset("synthetic:30:2")) == 30
    assert (tmp_path / "synthetic-n30-s2-256" / "dataset_synthetic.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="synthetic"):
        open_dataset("synthetic:lots")


def test_committed_assets_match_the_generator():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "rsdemo" / "assets"
    examples = json.loads((root / "examples.json").read_text())
    assert len(examples) >= 4
    worlds = {w.captions[0]: w for w in S.generate(1000, seed=0) if w.split == "test"}
    for e in examples:
        w = worlds[e["query"]]  # regenerate with scripts/make_assets.py if the world changed
        assert w.label == e["label"]
        assert np.array_equal(np.asarray(Image.open(root / e["image"]).convert("RGB")), w.image)


def test_vocabulary_comes_from_the_grammar_without_rendering(monkeypatch):
    """A fresh word-level model's vocabulary is read off the caption grammar's tables (no scene is rendered). It
    used to be the words of 300 rendered scenes (seed 12345) by frequency: every one of those words is still in it,
    plus the four the grammar writes that sample never drew (unknown tokens before). Order and size only matter
    for untrained models: every checkpoint stores the vocabulary it was trained with (its training captions')."""
    from rsdemo.data import captions
    from rsdemo.data.text import Vocab
    from rsdemo.models.factory import create_model

    def no_render(*a, **k):
        raise AssertionError("building a vocabulary rendered a scene")

    captions.vocabulary.cache_clear()
    monkeypatch.setattr(S, "render", no_render)
    model = create_model("amfmn-slim")
    vocab = captions.vocabulary()
    assert model.vocab is vocab and vocab.itos[:2] == [Vocab.PAD, Vocab.UNK]
    monkeypatch.undo()
    sampled = Vocab.build(c for w in S.generate(300, seed=12345) for c in w.captions)   # the old way
    assert set(sampled.itos) <= set(vocab.itos)
    assert set(vocab.itos) - set(sampled.itos) == {"airplane", "plane", "diamonds", "fields"}
    for seed in (0, 5):   # nothing a world writes is unknown to it
        assert not {t for w in S.generate(200, seed=seed) for c in w.captions for t in tokenize(c)} - set(vocab.itos)
