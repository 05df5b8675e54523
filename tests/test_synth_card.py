"""The dataset card describes the files the run actually wrote."""

import numpy as np

from idgen.synth import SynthConfig
from idgen.synth.card import write_card

STATS = {"images": 6, "identities_with_images": 3,
         "counts": {"generated": 8, "kept": 6, "no_face": 2, "low_similarity": 0, "duplicate": 0, "dropped": 0},
         "acceptance_rate": 0.75,
         "identities": {"max_cosine": 0.2, "mean_cosine": 0.0, "mean_nearest_cosine": 0.1}}


def card(tmp_path, formats):
    config = SynthConfig.from_dict({"identities": {"count": 3}, "writers": {"formats": formats}})
    write_card(tmp_path, config, STATS, np.array([0.6, 0.7]), np.array([0.1, -0.1]), np.array([0.0]))
    return (tmp_path / "README.md").read_text()


def test_card_lists_every_format_written(tmp_path):
    text = card(tmp_path, ["imagefolder", "parquet", "webdataset"])
    assert text.startswith("---\nconfigs:")          # datasets.load_dataset finds the parquet shards
    assert "data/train-*.parquet" in text and "webdataset/train-*.tar" in text
    assert "6 images of 3 synthetic identities" in text
    assert (tmp_path / "plots" / "similarity.png").read_bytes()[:4] == b"\x89PNG"


def test_card_of_an_imagefolder_only_run_names_no_missing_files(tmp_path):
    text = card(tmp_path, ["imagefolder"])
    assert "configs:" not in text and "parquet" not in text and "webdataset" not in text
    assert "images/<identity>/<n>.jpg" in text
