"""What several bench scripts share: the models (trained checkpoint when there is one) and a synthetic gallery."""
from __future__ import annotations

import statistics
import time


def model_for(name: str):
    """-> (model in eval mode, "checkpoint" or "random init"). Speed does not depend on the weights' values,
    but a trained model makes the rerank and explanation work realistic (e.g. attention that is not uniform)."""
    from rsdemo.checkpoint import CHECKPOINT_DIR, load_model
    from rsdemo.models.factory import create_model

    if (CHECKPOINT_DIR / f"{name}.safetensors").is_file():
        m, how = load_model(name), "checkpoint"
    else:
        m, how = create_model(name), "random init"
    return m.float().eval(), how


def world(n: int):
    """The synthetic world with n images (exported once into rsdemo's cache)."""
    from rsdemo import open_dataset

    return open_dataset(f"synthetic:{n}")


def gallery_paths(n: int) -> list[str]:
    ds = world(n)
    return [str(ds.image_path(i)) for i in range(len(ds))]


def queries(n: int) -> list[str]:
    """n captions of the synthetic world (realistic text for the models' vocabularies)."""
    ds = world(max(40, n))
    caps = [c for r in ds.records for c in r.captions[:1]]
    return caps[:n]


def median_ms(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1e3


def openclip_baseline(name: str, size: int):
    """-> (open_clip model, random init, at input size `size`; its tokenizer). name "toy" is a one-layer CLIP
    for the toy-size test run, where ViT-B-32 itself would take most of the time budget."""
    import open_clip

    if name == "toy":
        from open_clip.model import CLIPTextCfg, CLIPVisionCfg

        m = open_clip.CLIP(embed_dim=32, vision_cfg=CLIPVisionCfg(layers=1, width=64, head_width=32, patch_size=32,
                                                                  image_size=size),
                           text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
        return m, open_clip.get_tokenizer("ViT-B-32")
    m = open_clip.create_model(name, pretrained=None, force_image_size=size)
    return m, open_clip.get_tokenizer(name)
