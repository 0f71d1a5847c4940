"""File I/O helpers every layer uses (a leaf: imports nothing of the package, and no torch at import time).

- cache_root(): where caches live: RSDEMO_CACHE, default ~/.cache/rsdemo (synthetic worlds, frozen-encoder
  features, the page's indexes, downloaded datasets, each in its own subfolder).
- atomic_write(path, write) / write_text(path, text): temp file in the same folder, fsync, rename: a crash leaves
  the old file or none, never half of one.
- read_state(path) / load_plain(path): weights and training states read without unpickling anything but tensors
  and plain containers (safetensors, or torch.load(weights_only=True)); a file that would build other objects is
  refused with a ValueError, never run.
- file_sha256(path) / weights_sha256(module): the identity of a file, and of a model's weights with or without a
  file (names, dtypes, shapes and bytes of its state dict): one hash for indexes and feature caches alike.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """RSDEMO_CACHE, default ~/.cache/rsdemo."""
    return Path(os.environ.get("RSDEMO_CACHE", Path.home() / ".cache" / "rsdemo"))


def atomic_write(path, write) -> None:
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
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; what we write are ordinary files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path, text: str) -> None:
    """atomic_write of a text file (cards, manifests, stamps)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(module, skip: tuple[str, ...] = ()) -> str:
    """Hash of the state dict's names, dtypes, shapes and bytes (keys starting with a `skip` prefix left out):
    the weights' identity, with or without a file."""
    import torch  # heavy: only when a model is hashed, so importing this leaf stays cheap

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        if skip and k.startswith(skip):
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def reason(e: Exception) -> str:
    """The informative line of a decoder's or torch.load's error (torch's also suggests weights_only=False, which
    we never do)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    hits = [ln for ln in lines if "nsupported" in ln]
    return (hits or lines or [type(e).__name__])[0]


def load_plain(path, what: str = "plain weights file"):
    """torch.load(weights_only=True): tensors and plain containers only; ValueError naming `what` otherwise."""
    import torch  # heavy: only when a torch file is read

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, zip/EOF errors of a damaged file
        raise ValueError(f"{path}: refused to load: not a {what} (torch.load(weights_only=True): "
                         f"{reason(e)})") from None


def read_state(path) -> dict:
    """A weights file (.safetensors, or .pt/.pth/.bin read by load_plain) -> flat state dict of tensors."""
    import torch  # heavy: only when weights are read

    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # with torch: only when weights are read
        try:
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"{path}: unreadable safetensors file ({e})") from None
    else:
        state = load_plain(path)
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
