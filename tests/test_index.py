"""The gallery index: persistence, staleness, resume, unreadable files, two-stage search, shards, CLI.

Kept fast: a 20-image synthetic gallery at 64 px, tiny untrained models for the bookkeeping, the committed 128 px
checkpoints where the scores must mean something (rerank order, image -> itself).
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from rsdemo.checkpoint import load_model, save
from rsdemo.data.synthetic import generate
from rsdemo.index import Retriever, embed_shard
from rsdemo.models.factory import create_model

QUERY = "a red house next to a road"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches run faster on one thread, and far faster when other jobs hold the cores (OpenMP spin-waits)."""
    import faiss

    was, fwas = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(was)
    faiss.omp_set_num_threads(fwas)


def tiny(seed=0, **over):
    torch.manual_seed(seed)
    cfg = dict(embed_dim=32, mvsa_dim=16, word_dim=16, image_size=64)
    return create_model("amfmn-slim", **{**cfg, **over})


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    d = tmp_path_factory.mktemp("gallery")
    for i, w in enumerate(generate(20, size=64)):
        Image.fromarray(w.image).save(d / f"{i:05d}.png")
    return d


@pytest.fixture
def copy(gallery, tmp_path):
    """A gallery the test may change."""
    return shutil.copytree(gallery, tmp_path / "gallery")


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def built(model, gallery, tmp_path_factory):
    out = tmp_path_factory.mktemp("idx")
    return Retriever.build(model, gallery, out=out, batch_size=8, progress=False), out


def same(a, b):
    assert [h["path"] for h in a] == [h["path"] for h in b]
    assert [h["score"] for h in a] == [h["score"] for h in b]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_persist_load_same_results(model, gallery, tmp_path, kind):
    r = Retriever.build(model, gallery, out=tmp_path, batch_size=8, kind=kind, progress=False)
    assert r.manifest["index"]["kind"] == kind and len(r) == 20
    assert {"index.faiss", "embeddings.npy", "manifest.json"} <= {p.name for p in tmp_path.iterdir()}
    back = Retriever.load(tmp_path, model)
    assert type(back.index).__name__ == ("IndexFlatIP" if kind == "flat" else "IndexHNSWFlat")
    same(r.search_text(QUERY, k=5), back.search_text(QUERY, k=5))
    same(r.search_text(QUERY, k=5, rerank=False), back.search_text(QUERY, k=5, rerank=False))
    same(r.search_image(gallery / "00007.png", k=5), back.search_image(gallery / "00007.png", k=5))
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["count"] == 20 and man["dim"] == 32 and man["model"] == "amfmn-slim"
    assert man["checkpoint"] is None and len(man["weights_sha256"]) == 64
    with pytest.raises(ValueError, match="empty query"):
        back.search_text("   ")


def test_mismatch_refused(built, tmp_path):
    _, out = built
    with pytest.raises(ValueError, match="ccnet-slim.*rsdemo index"):
        Retriever.load(out, create_model("ccnet-slim", embed_dim=32, word_dim=16, image_size=64))
    with pytest.raises(ValueError, match="16-d"):
        Retriever.load(out, tiny(embed_dim=16))
    # two checkpoints of one model name: only the weights (and so the hashes) differ
    a = load_model(save(tiny(1), tmp_path / "a.safetensors"))
    b = load_model(save(tiny(2), tmp_path / "b.safetensors"))
    Retriever.build(a, built[0].paths, out=tmp_path / "idx", progress=False)
    man = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert man["checkpoint"] == str(tmp_path / "a.safetensors") and len(man["checkpoint_sha256"]) == 64
    assert Retriever.load(tmp_path / "idx", a).paths == built[0].paths
    with pytest.raises(ValueError, match="other weights.*rsdemo index"):
        Retriever.load(tmp_path / "idx", b)


def test_missing_or_corrupt_files_refused(built, model, tmp_path):
    with pytest.raises(ValueError, match="no such index"):
        Retriever.load(tmp_path / "nope", model)
    out = shutil.copytree(built[1], tmp_path / "idx")
    (out / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="index.faiss"):
        Retriever.load(out, model)
    (out / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="corrupt manifest"):
        Retriever.load(out, model)


def test_stale_gallery_refused(model, gallery, copy, tmp_path):
    Retriever.build(model, copy, out=tmp_path / "idx", progress=False)
    (copy / "00004.png").unlink()
    with pytest.raises(ValueError, match="00004.png no longer exists"):
        Retriever.load(tmp_path / "idx", model)
    shutil.copy(gallery / "00004.png", copy / "00004.png")
    Retriever.load(tmp_path / "idx", model)  # back as it was
    shutil.copy(gallery / "00005.png", copy / "new.png")
    with pytest.raises(ValueError, match="now holds 21 image files"):
        Retriever.load(tmp_path / "idx", model)


def test_resume_recomputes_only_missing_chunk(model, gallery, tmp_path, monkeypatch):
    first = Retriever.build(model, gallery, out=tmp_path, batch_size=4, chunk=8, progress=False)
    chunks = sorted((tmp_path / "chunks").glob("chunk-*.npz"))
    assert len(chunks) == 3
    chunks[-1].unlink()
    seen = []
    encode = model.image_state  # one pass per batch gives the embedding and the image state
    monkeypatch.setattr(model, "image_state", lambda x: (seen.append(len(x)), encode(x))[1])
    again = Retriever.build(model, gallery, out=tmp_path, batch_size=4, chunk=8, progress=False)
    assert sum(seen) == 4  # the last chunk holds images 16..19
    assert again.paths == first.paths
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    assert again.state.keys() == first.state.keys()
    for k in first.state:
        np.testing.assert_array_equal(again.state[k], first.state[k])
    seen.clear()
    Retriever.build(model, gallery, out=tmp_path, batch_size=4, chunk=8, progress=False, resume=False)
    assert sum(seen) == 20


def test_unreadable_images_skipped_and_listed(model, gallery, tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    for i in range(4):
        shutil.copy(gallery / f"{i:05d}.png", d)
    (d / "empty.png").write_bytes(b"")
    (d / "notes.jpg").write_text("not an image\n")
    r = Retriever.build(model, d, out=tmp_path / "idx", progress=False)
    assert len(r) == 4
    skipped = {s["path"]: s["reason"] for s in r.manifest["skipped"]}
    assert set(skipped) == {str(d / "empty.png"), str(d / "notes.jpg")}
    assert all(skipped.values())
    assert len(Retriever.load(tmp_path / "idx", model)) == 4  # skipped files do not make it stale


@pytest.fixture(scope="module")
def trained(gallery):
    m = load_model("amfmn-slim")
    assert m.separable is False
    return Retriever.build(m, gallery, batch_size=20, progress=False, state="float32")


@pytest.mark.parametrize("state", ["float32", "float16", None])
def test_rerank_orders_shortlist_by_model_score(trained, gallery, state):
    """Stage 2 from the cached state (float32: model.score to 1e-5; float16: 1e-3, same order) or, with no
    state, from the pixels."""
    m = trained.model
    r = trained if state == "float32" else Retriever.build(m, gallery, batch_size=20, progress=False, state=state)
    shortlist = r.search_text(QUERY, k=12, rerank=False)
    with torch.no_grad():
        s = m.score(m.preprocess([Image.open(h["path"]).convert("RGB") for h in shortlist]), [QUERY])[:, 0].numpy()
    want = [shortlist[i]["path"] for i in np.argsort(-s, kind="stable")[:5]]
    got = r.search_text(QUERY, k=5, rerank=12)
    assert [h["path"] for h in got] == want
    tol = 1e-3 if state == "float16" else 1e-5
    np.testing.assert_allclose([h["score"] for h in got], np.sort(s)[::-1][:5], rtol=0, atol=tol)
    assert [h["rank"] for h in got] == [1, 2, 3, 4, 5]


def test_stage_two_and_explain_read_the_state_not_the_backbone(trained, tmp_path, monkeypatch):
    out = trained.save(tmp_path / "idx")
    back = Retriever.load(out, trained.model)
    info = back.manifest["state"]
    assert info["dtype"] == "float32" and set(info["shapes"]) == {"global", "mvsa"}
    assert info["bytes_per_image"] == 4 * sum(int(np.prod(v)) for v in info["shapes"].values())
    assert all(isinstance(v, np.memmap) for v in back.state.values())  # memory-mapped, not read into RAM
    assert f"{info['bytes_per_image']:,} B/image" in repr(back)
    want = back.search_text(QUERY, k=5, rerank=12)
    ex = back.explain(want[0]["index"], QUERY)
    monkeypatch.setattr(trained.model.backbone, "forward", lambda *a: pytest.fail("image backbone ran"))
    assert back.search_text(QUERY, k=5, rerank=12) == want
    again = back.explain(want[0]["index"], QUERY)
    assert again.maps.keys() == ex.maps.keys() and np.array_equal(again.maps["mvsa"], ex.maps["mvsa"])
    assert again.score == pytest.approx(want[0]["score"], abs=1e-5)


def test_index_from_before_the_state_asks_for_a_rebuild(built, model, tmp_path):
    out = shutil.copytree(built[1], tmp_path / "idx")
    man = json.loads((out / "manifest.json").read_text())
    man["format"] = 1
    del man["state"]
    (out / "manifest.json").write_text(json.dumps(man))
    shutil.rmtree(out / "state")
    with pytest.raises(ValueError, match=r"before the cached image state.*rebuild it with `rsdemo index"):
        Retriever.load(out, model)
    with pytest.raises(ValueError, match="state dtype 'bfloat16'"):
        Retriever.build(model, built[0].paths[:2], progress=False, state="bfloat16")


def test_state_of_another_map_version_is_rebuilt(built, model, tmp_path, monkeypatch):
    """A model whose state changes meaning bumps state_version: a saved index (and its resumable chunks) from the
    old version is refused with the rebuild command, never read as if it were the new maps."""
    out = shutil.copytree(built[1], tmp_path / "idx")
    assert json.loads((out / "manifest.json").read_text())["state_version"] == 1
    monkeypatch.setattr(type(model), "state_version", 2)
    with pytest.raises(ValueError, match=r"version 1 of 'amfmn-slim'.*reads version 2; rebuild it with `rsdemo"):
        Retriever.load(out, model)
    calls = []
    encode = model.image_state
    monkeypatch.setattr(model, "image_state", lambda x: (calls.append(len(x)), encode(x))[1])
    again = Retriever.build(model, built[0].paths, out=out, batch_size=8, progress=False)
    assert sum(calls) == len(built[0].paths)    # no chunk of version 1 was reused
    assert again.manifest["state_version"] == 2 and Retriever.load(out, model).paths == built[0].paths
    # shards computed before the bump are refused at merge, not joined with the new maps
    monkeypatch.setattr(type(model), "state_version", 1)
    embed_shard(model, built[0].paths, 0, 1, out=tmp_path / "shards", progress=False)
    monkeypatch.setattr(type(model), "state_version", 2)
    with pytest.raises(ValueError, match="version 1 of the model's maps.*re-run embed_shard"):
        Retriever.merge(tmp_path / "shards", model, tmp_path / "m")


def test_separable_model_returns_stage_one(gallery, monkeypatch):
    m = load_model("clip-tiny")
    assert m.separable
    r = Retriever.build(m, gallery, batch_size=20, progress=False)
    monkeypatch.setattr(m, "score", lambda *a: pytest.fail("score called for a separable model"))
    with torch.no_grad():
        q = m.encode_text([QUERY]).numpy()
    scores, ids = r.index.search(q / np.linalg.norm(q), 5)
    got = r.search_text(QUERY, k=5)
    assert [h["index"] for h in got] == ids[0].tolist()
    np.testing.assert_allclose([h["score"] for h in got], scores[0], rtol=1e-6)
    # image -> image: a gallery image finds itself first
    hit = r.search_image(gallery / "00011.png", k=3)[0]
    assert hit["path"] == str(gallery / "00011.png") and hit["rank"] == 1 and hit["score"] == pytest.approx(1, abs=1e-4)


def test_shards_merge_equals_single_build(model, gallery, tmp_path, monkeypatch):
    embed_shard(model, gallery, 0, 2, out=tmp_path / "shards", progress=False)
    with pytest.raises(ValueError, match=r"missing shards \[1\]"):
        Retriever.merge(tmp_path / "shards", model, tmp_path / "m")
    monkeypatch.setenv("RANK", "1")  # as under torchrun
    monkeypatch.setenv("WORLD_SIZE", "2")
    embed_shard(model, str(gallery), out=tmp_path / "shards", progress=False)
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.npy")) == \
        ["shard-00000-of-00002.npy", "shard-00001-of-00002.npy"]
    merged = Retriever.merge(tmp_path / "shards", model, tmp_path / "m", kind="flat")
    single = Retriever.build(model, gallery, kind="flat", progress=False)
    assert merged.paths == single.paths
    np.testing.assert_allclose(merged.embeddings, single.embeddings, atol=1e-5)
    assert merged.manifest["state"] == single.manifest["state"]
    for k in single.state:
        np.testing.assert_allclose(merged.state[k], single.state[k], atol=1e-3)
    assert [h["path"] for h in merged.search_text(QUERY, k=20, rerank=False)] == \
        [h["path"] for h in single.search_text(QUERY, k=20, rerank=False)]
    assert Retriever.load(tmp_path / "m", model).paths == single.paths
    # a leftover shard of another run overlaps the slices of this one
    embed_shard(model, gallery, 0, 3, out=tmp_path / "shards", progress=False)
    with pytest.raises(ValueError, match="overlap"):
        Retriever.merge(tmp_path / "shards", model, tmp_path / "m2")


def test_dataset_index_searches_captions(model, tmp_path):
    from rsdemo.data.formats import load_karpathy
    from rsdemo.data.synthetic import export

    syn = export(tmp_path / "syn", n=6, size=64)
    ds = load_karpathy(syn / "dataset_synthetic.json", images=syn / "images")
    r = Retriever.build(model, ds, out=tmp_path / "idx", progress=False)
    assert len(r) == 6 and len(r.captions) == ds.num_captions
    back = Retriever.load(tmp_path / "idx", model)
    hits = back.search_captions(r.paths[2], k=4)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(h["caption"] in {c["text"] for c in r.captions} for h in hits)
    assert hits == r.search_captions(r.paths[2], k=4)
    assert not model.separable  # stage 2 reranks from the image's state, computed once: the model's own score
    was, _ = model.training, model.eval()
    with torch.no_grad():
        full = model.score(model.preprocess([Image.open(r.paths[2]).convert("RGB")]), [h["caption"] for h in hits])
    model.train(was)
    assert np.allclose([h["score"] for h in hits], full[0].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no captions"):
        Retriever.build(model, r.paths, progress=False).search_captions(r.paths[0])


def run(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rsdemo", *args], capture_output=True, text=True, env=env)


def test_cli_index_and_search(gallery, tmp_path):
    out = tmp_path / "idx"
    ck = save(tiny(), tmp_path / "tiny.safetensors")  # a 64 px checkpoint: the subprocesses stay quick
    r = run("index", "--model", str(ck), "--images", str(gallery), "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "indexed 20 images" in r.stdout
    r = run("search", str(out), QUERY, "--k", "3", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and all(h["path"].startswith(str(gallery)) for h in hits)
    r = run("search", str(tmp_path / "missing"), QUERY)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "no such index" in r.stderr
