"""The one place that writes and reads checkpoints: NAME.safetensors (weights + the config/vocab needed to rebuild
the model, in the file's metadata) beside NAME.json (the model card). Writes are atomic: temp file, fsync, rename.
Loading never unpickles: safetensors only.

A model with frozen pretrained encoders (model.rebuilt_at_load(): e.g. ImageNet Lite0, MiniLM) is stored without
them: only the trained heads go in the file, its metadata lists the left-out prefixes, and load() rebuilds those
encoders from their pip-installed weights (the config keeps naming them), so the file stays a few MB.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path: Path, write) -> None:
    """Calls write(tmp_path), fsyncs and renames over `path`: a crash leaves the old file or none, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; a checkpoint is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _rebuilt(model) -> list[str]:
    f = getattr(model, "rebuilt_at_load", None)
    return list(f()) if f is not None else []


def _state(model, half: bool) -> dict[str, torch.Tensor]:
    out = {}
    skip = tuple(_rebuilt(model))
    for k, v in model.state_dict().items():
        if skip and k.startswith(skip):
            continue
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        out[k] = v.contiguous()
    return out


def save(model, path, card: dict | None = None, half: bool = False, extra: dict | None = None) -> Path:
    """Writes path (.safetensors) and its card (.json). `extra` tensors (optimizer state etc.) are not stored here."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    meta = {"rsdemo": json.dumps({"name": model.name, "config": model.config,
                                  "vocab": model.vocab.itos if getattr(model, "vocab", None) is not None else None,
                                  "rebuilt": _rebuilt(model)})}
    state = _state(model, half)
    # safetensors refuses tensors that share memory (tied weights): store a copy of each
    seen = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:
            state[k] = v.clone()
        seen[ptr] = k
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))
    if card is not None:
        write_card(path, card)
    return path


def write_card(path, card: dict) -> None:
    text = json.dumps(card, indent=1, default=str) + "\n"
    atomic_write(Path(path).with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))


def read_meta(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "rsdemo" not in meta:
        raise ValueError(f"{path}: not an rsdemo checkpoint (no 'rsdemo' metadata)")
    return json.loads(meta["rsdemo"])


def _mismatch(e: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
    more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
    return (lines[0].rstrip(".") + more) if lines else str(e).splitlines()[0]


def load(path, device: str | None = None):
    """Rebuilds the model from the checkpoint's own config and vocab, loads the weights (strict), eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .data.text import Vocab
    from .models.registry import build

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        meta = read_meta(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable checkpoint ({e})") from None
    vocab = Vocab(meta["vocab"][2:]) if meta.get("vocab") else None
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path}: not an rsdemo checkpoint (its metadata has no model config)")
    cfg = dict(meta["config"])
    rebuilt = tuple(meta.get("rebuilt") or ())
    if not rebuilt:
        cfg.pop("pretrained", None)  # the weights are all in this file; don't fetch the backbone's again
    try:
        model = build(cfg, meta.get("name"), vocab=vocab)
    except RuntimeError as e:  # a left-out pretrained encoder whose weights are not installed
        raise ValueError(f"{path}: cannot rebuild its frozen encoders {list(rebuilt)}: {e}") from None
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref else v for k, v in state.items()}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ: weights of another size (embed_dim, vocabulary, ...)
        raise ValueError(f"{path}: checkpoint does not fit model {meta.get('name')!r} ({_mismatch(e)})") from None
    missing = [k for k in missing if not (rebuilt and k.startswith(rebuilt))]
    if missing or unexpected:
        raise ValueError(f"{path}: checkpoint does not fit model {meta.get('name')!r} "
                         f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    model.checkpoint = str(path)
    card = path.with_suffix(".json")
    model.card = json.loads(card.read_text()) if card.is_file() else {}
    return model.to(device or "cpu").eval()
