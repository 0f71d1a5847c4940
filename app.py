"""rsdemo demo page (Gradio). Thin: everything it shows comes from rsdemo's public API.

Until the search models land this page browses the embedded synthetic aerial world: images, their five captions
and the ground-truth object masks that the heatmaps will be scored against.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr
import numpy as np

import rsdemo

WORLD = os.environ.get("RSDEMO_WORLD", "synthetic:240")


def build(spec: str = WORLD) -> gr.Blocks:
    ds = rsdemo.open_dataset(spec).split("test", "val", "train")
    scenes = ["all"] + ds.labels

    def pick(scene):
        idx = [i for i, r in enumerate(ds.records) if scene == "all" or r.label == scene][:60]
        return [(str(ds.image_path(i)), ds.records[i].label) for i in idx], idx

    def show(idx, evt: gr.SelectData):
        i = idx[evt.index]
        s = ds[i]
        img = np.asarray(s.image).astype(np.float32)
        if s.masks is not None:  # tint every object so the ground truth is visible
            obj = s.masks > 0
            img[obj] = 0.55 * img[obj] + 0.45 * np.array([255, 64, 32])
        caps = "\n".join(f"{k + 1}. {c}" for k, c in enumerate(s.captions))
        return img.astype(np.uint8), f"**scene:** {s.label}\n\n{caps}"

    with gr.Blocks(title="rsdemo") as demo:
        gr.Markdown("# rsdemo: remote-sensing image-text retrieval\n"
                    "Browse the embedded synthetic aerial world (scenes, five captions each, object masks). "
                    "Text and image search arrive with the model zoo.")
        idx = gr.State([])
        with gr.Row():
            scene = gr.Dropdown(scenes, value="all", label="scene")
        with gr.Row():
            gallery = gr.Gallery(label="images", columns=6, height=420, allow_preview=False)
            with gr.Column():
                overlay = gr.Image(label="objects (ground-truth masks)", type="numpy")
                text = gr.Markdown()
        scene.change(pick, scene, [gallery, idx])
        demo.load(pick, scene, [gallery, idx])
        gallery.select(show, idx, [overlay, text])
    return demo


if __name__ == "__main__":
    build().launch()
