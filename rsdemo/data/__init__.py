"""Data layer (imports nothing above it): errors.py (DataError, Problem), images.py (open_image, the one image
opener), text.py (tokenizer, Vocab), dataset.py (CaptionDataset), labels.py (scene labels), world.py + captions.py +
synthetic.py (the synthetic world: tables, caption grammar, rendering), download.py + sources.py (datasets fetched
by name), formats.py (the benchmark loaders and open_dataset), transforms.py (model inputs), report.py (checks)."""
