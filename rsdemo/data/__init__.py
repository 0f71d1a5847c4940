"""Data layer: one CaptionDataset for every format (formats.py) and the synthetic world (synthetic.py)."""
