"""rsdemo's demo page, as a Hugging Face Space (and `python app.py` locally) starts it.

The page itself is rsdemo.page (layout and events over rsdemo.demo, drawn by rsdemo.ui); `rsdemo serve` starts
the same page. `python app.py [--gallery DIR] [--data SPEC] [--split NAME] [--host H] [--port N]`; on a Space the
same options come from RSDEMO_GALLERY / RSDEMO_DATA / RSDEMO_SPLIT, and RSDEMO_HF_REPO names a model repo holding
the checkpoints.
"""
from rsdemo.page import ASSETS, LAUNCH, build, folders_allowed, main, serve, tame_malloc  # noqa: F401 - the Space's API

if __name__ == "__main__":
    main()
