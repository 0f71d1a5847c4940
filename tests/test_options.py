"""Typed configs: every key is declared by its architecture (or shared), unknown keys and wrong types fail with
the valid keys and a "did you mean", from the Python API, the CLI and a JSON config alike; every registered
config and every config stored in a committed checkpoint or card validates."""
import json

import pytest

from rsdemo.checkpoint import CHECKPOINT_DIR, read_meta
from rsdemo.cli import main
from rsdemo.models.factory import create_model, options
from rsdemo.models.options import Options, TrainOptions
from rsdemo.models.registry import list_models, model_config

CHECKPOINTS = sorted(CHECKPOINT_DIR.rglob("*.safetensors"))


def test_a_misspelt_switch_fails_naming_the_right_one():
    with pytest.raises(ValueError, match=r"unknown option 'use_mvas' \(did you mean 'use_mvsa'") as e:
        create_model("amfmn-slim", use_mvas=False)
    assert "valid options:" in str(e.value) and "use_dynamic_margin" in str(e.value)
    assert create_model("amfmn-slim", use_mvsa=False).switches()["use_mvsa"] is False


@pytest.mark.parametrize("args,expected", [
    (["--set", "use_mvas=false"], "'use_mvsa'"),
    (["--set", "train.lrr=1e-4"], "'train.lr'"),
    (["--set", "use_mvsa=maybe"], "option 'use_mvsa' expects bool"),
    (["--set", "train.optimizer=sgd"], "'adam' | 'adamw'"),
])
def test_cli_set_fails_before_any_work(args, expected, tmp_path, capsys):
    code = main(["train", "--model", "amfmn-slim", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path),
                 "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert "nowhere" not in err   # the config was refused before the data was opened
    assert not any(tmp_path.iterdir())


def test_a_json_config_with_an_unknown_key_fails(tmp_path, monkeypatch):
    cfg = {**model_config("dove-slim"), "region": 4}
    (tmp_path / "dove-typo.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("RSDEMO_MODEL_CONFIGS", str(tmp_path))
    with pytest.raises(ValueError, match=r"dove-typo: unknown option 'region' \(did you mean 'regions'"):
        create_model("dove-typo")


@pytest.mark.parametrize("name", list_models())
def test_every_registered_config_validates_and_round_trips(name):
    opts = options(model_config(name), name)
    assert type(opts).parse(opts.as_dict()) == opts
    assert isinstance(opts.train, TrainOptions)


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.relative_to(CHECKPOINT_DIR).as_posix())
def test_every_committed_checkpoint_config_validates(path):
    """The config in the file's metadata (what load() rebuilds from) and the card's copy of it."""
    options(read_meta(path)["config"], path.stem)
    card = json.loads(path.with_suffix(".json").read_text())
    options(card["config"], path.stem)
    if "train_settings" in card:
        TrainOptions.parse(card["train_settings"], path.stem, prefix="train.")


def test_old_key_names_are_read_as_todays():
    """amfmn-slim's checkpoint stored use_dynamic_margin as "dynamic_margin"."""
    opts = options({"arch": "amfmn", "dynamic_margin": False}, "old")
    assert opts.use_dynamic_margin is False and "dynamic_margin" not in opts.as_dict()


def test_values_are_typed():
    o = Options.parse({"embed_dim": 64, "train": {"lr": 1, "grad_clip": None}})
    assert o.train.lr == 1.0 and isinstance(o.train.lr, float) and o.train.grad_clip is None
    for bad, msg in [({"embed_dim": "64"}, "expects int"), ({"embed_dim": True}, "expects int"),
                     ({"classes": "abc"}, r"expects list\[str\]"), ({"train": 3}, "must be a mapping")]:
        with pytest.raises(ValueError, match=msg):
            Options.parse(bad)
    assert o.replace(train={"epochs": 3}).train.lr == 1.0
