"""A new architecture is one model file plus one JSON config and nothing else.

The test writes a throwaway architecture (a strided conv and hashed bag-of-words, ~2k weights) and its config into
a temporary folder, names the folder in RSDEMO_MODEL_CONFIGS (where the registry finds configs *and* model files),
and runs everything a registered model goes through: create, train one step, eval (CLI), index and search (CLI),
explain (own map and both baselines) and the page's search endpoint. No file of the package is touched.
"""
import json
import shutil
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

MODEL_FILE = '''
    """Tiny: a throwaway architecture for tests/test_new_arch.py (what a new model file looks like)."""
    from __future__ import annotations

    import zlib
    from dataclasses import dataclass

    import torch
    from torch import nn

    from rsdemo import losses
    from rsdemo.models.base import CamTarget, Explanation, Pairs, RetrievalModel
    from rsdemo.models.options import Options
    from rsdemo.models.registry import register, register_loss


    @dataclass(kw_only=True)
    class TinyOptions(Options):
        width: int = 8
        buckets: int = 64


    @register("tinyarch")
    class Tiny(RetrievalModel):
        config_class = TinyOptions

        def __init__(self, config, name=None):
            super().__init__(config, name)
            self.conv = nn.Conv2d(3, self.config.width, 3, stride=4, padding=1)
            self.img = nn.Linear(self.config.width, self.embed_dim)
            self.txt = nn.EmbeddingBag(self.config.buckets, self.embed_dim)

        def tokenize(self, texts):
            ids = [[zlib.crc32(w.encode()) % self.config.buckets for w in t.lower().split()] or [0] for t in texts]
            offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
            return torch.tensor([w for i in ids for w in i]), offsets

        def _map(self, images):
            return torch.relu(self.conv(self._images(images)))

        def encode_image(self, images):
            return self.normalize(self.img(self._map(images).mean((2, 3))))

        def encode_text(self, texts):
            ids, offsets = self._texts(texts)
            return self.normalize(self.txt(ids.to(self.device), offsets.to(self.device)))

        def forward(self, images, texts):
            return {"scores": self.encode_image(images) @ self.encode_text(texts).T}

        def position_embeddings(self, x):
            return self.img(self._map(x).permute(0, 2, 3, 1))

        def cam_target(self):
            return CamTarget(self.conv, False, lambda out: out, lambda t: t)

        @torch.no_grad()
        def explain(self, image, text):
            x = self._images(image if torch.is_tensor(image) else [image])
            pos = self.normalize(self.position_embeddings(x)[0])
            sim = pos @ self.encode_text([text])[0]
            return Explanation({"patch_sim": sim.cpu().numpy()}, text.split() or ["<empty>"],
                               float(self.score(x, [text])[0, 0]))


    @register_loss("tinyarch")
    def tiny_loss(model: Tiny, out: dict, pairs: Pairs) -> dict:
        s = out["scores"]
        mask = losses.duplicate_mask(pairs.captions, pairs.image_ids).to(s.device)
        loss = losses.infonce(s, temperature=0.1, mask=mask)
        return {"loss": loss, "infonce": loss.detach()}
'''
CONFIG = {"arch": "tinyarch", "description": "a throwaway architecture", "embed_dim": 16, "image_size": 32,
          "width": 8, "train": {"optimizer": "adamw", "lr": 0.01, "epochs": 1, "batch_size": 200}}
DATA = "synthetic:50:3"   # 46 train images, 230 pairs: one step of 200


@pytest.fixture
def folder(tmp_path, monkeypatch):
    d = tmp_path / "models"
    d.mkdir()
    (d / "tinyarch.py").write_text(textwrap.dedent(MODEL_FILE))
    (d / "tiny-test.json").write_text(json.dumps(CONFIG))
    monkeypatch.setenv("RSDEMO_MODEL_CONFIGS", str(d))
    monkeypatch.setenv("RSDEMO_CACHE", str(tmp_path / "cache"))
    return d


def test_a_new_architecture_is_one_file_and_one_config(folder, tmp_path, capsys):
    from rsdemo import Demo, Gallery, create_model, list_models
    from rsdemo import explain as E
    from rsdemo.cli import main
    from rsdemo.data.formats import open_dataset
    from rsdemo.training import TrainArgs, train

    assert "tiny-test" in list_models()
    with pytest.raises(ValueError, match="did you mean 'buckets'"):
        create_model("tiny-test", bucket=3)

    # train: one step
    run = tmp_path / "run"
    card = train(TrainArgs(model="tiny-test", data=DATA, out=str(run), progress=False))
    assert card["steps"] == 1 and card["arch"] == "tinyarch" and card["config"]["width"] == 8
    ck = run / "last.safetensors"

    # eval: the CLI reproduces the card from the saved file
    assert main(["eval", "--checkpoint", str(ck), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mr"] == pytest.approx(card["metrics"]["val"]["mr"], abs=1e-6)

    # index and search a small folder of images (CLI)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    ds = open_dataset(DATA)
    for i in range(8):
        shutil.copy(ds.image_path(i), gallery / f"img{i}.png")
    assert main(["index", "--model", str(ck), "--images", str(gallery), "--out", str(tmp_path / "idx"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "a red house", "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3 and all(h["path"].startswith(str(gallery)) for h in hits)

    # explain: the model's own map and both baselines, through the same functions the page uses
    model = create_model("tiny-test")
    image = Image.open(gallery / "img0.png").convert("RGB")
    maps = E.explain_all(model, image, "a red house")
    assert {"patch_sim", "baseline_region_sim", "baseline_gradcam"} <= set(maps)
    assert all(np.isfinite(m).all() and m.shape == (8, 8) for m in maps.values())

    # the page's search endpoint, over the gallery, with the checkpoint as the page would find it
    shelf = tmp_path / "checkpoints"
    shelf.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(ck.with_suffix(suffix), shelf / f"tiny-test{suffix}")
    demo = Demo(Gallery(images=str(gallery)), dirs=[shelf], cache=tmp_path / "app-cache")
    found = demo.search_text("a red house", model="tiny-test", k=3)
    assert [h["path"] for h in found] == [h["path"] for h in hits]


def test_the_new_architecture_is_in_every_registry_parametrized_test(folder):
    """list_models() is what the parametrized tests (test_models, ...) iterate: a folder in RSDEMO_MODEL_CONFIGS
    adds its models to them; loading a checkpoint of the architecture needs the same folder."""
    from rsdemo.models.factory import create_model
    from rsdemo.models.registry import list_archs, list_models
    from rsdemo.training.step import TrainStep

    assert "tiny-test" in list_models() and "tinyarch" in list_archs()
    m = create_model("tiny-test").train()
    x = torch.randn(4, 3, 32, 32)
    caps = ["a red house", "two planes", "green trees", "a harbour"]
    out = TrainStep(m)(x, caps, caps, None, [0, 1, 2, 3])
    out["loss"].backward()
    assert m.txt.weight.grad is not None
