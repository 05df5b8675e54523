"""Arc2Face's Expression Adapter as the dataset generator's variation: each image gets a FLAME
expression from the bank ``variation.expressions``, recorded in the manifest, and the images are
exactly what the pipeline makes when called directly with the recorded expressions."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.errors import ConfigError

BANK = np.round(np.random.RandomState(3).randn(3, 55), 3).tolist()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A saved tiny Arc2Face pipeline and an Arc2Face folder holding its exp_adapter/ as published."""
    from idgen.testing import tiny_arc2face
    from idgen.testing.tiny_arc2face import write_arc2face_extensions

    folder = tmp_path_factory.mktemp("arc2face")
    pipe = tiny_arc2face()
    pipe.save_pretrained(folder / "model")
    write_arc2face_extensions(folder / "Arc2Face", pipe.unet)
    return folder


def config(output, published, **variation):
    return {"output_dir": str(output), "seed": 2,
            "generator": {"type": "arc2face", "path": str(published / "model"), "num_inference_steps": 2,
                          "micro_batch": 4, "expression_adapter": str(published / "Arc2Face")},
            "identities": {"count": 2, "dim": 128, "max_cosine": 0.3, "steps": 20},
            "variation": {"images_per_identity": 4, "expressions": BANK, **variation},
            "filter": {"enabled": False}, "writers": {"formats": ["imagefolder", "parquet"], "shard_size": 8},
            "runtime": {"batch_size": 4, "progress": False, "device": "cpu"}}


def test_images_carry_their_recorded_expression_and_equal_direct_pipeline_calls(published, tmp_path, one_thread):
    from safetensors.torch import load_file

    from idgen.pipelines import Arc2FacePipeline
    from idgen.synth import generate_dataset

    output = tmp_path / "ds"
    generate_dataset(config(output, published))
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert np.allclose(json.loads((output / "expressions.json").read_text()), BANK)
    for identity in range(2):   # each identity walks its own shuffle of the bank: all three before a repeat
        mine = sorted((r for r in records if r["label"] == identity), key=lambda r: r["index"])
        assert sorted(r["expression_index"] for r in mine[:3]) == [0, 1, 2]

    batch = sorted((r for r in records if r["label"] == 1), key=lambda r: r["index"])
    target = load_file(str(output / "identities.safetensors"))["identities"][1]
    pipe = Arc2FacePipeline.from_pretrained(published / "model")
    pipe.set_progress_bar_config(disable=True)
    pipe.load_expression_adapter(published / "Arc2Face")
    images = pipe(id_embeds=target.expand(4, -1), expression=[BANK[r["expression_index"]] for r in batch],
                  generator=[torch.Generator().manual_seed(r["seed"]) for r in batch], num_inference_steps=2,
                  output_type="pil").images
    for record, image in zip(batch, images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        assert np.array_equal(np.asarray(Image.open(output / record["file"])), np.asarray(Image.open(buffer)))
    plain = pipe(id_embeds=target.expand(4, -1), generator=[torch.Generator().manual_seed(r["seed"]) for r in batch],
                 num_inference_steps=2, output_type="np").images
    assert np.abs(plain - np.stack([np.asarray(i, dtype=np.float32) / 255 for i in images])).mean() > 1e-3


def test_a_bank_of_wrong_length_vectors_is_refused_naming_the_setting(published, tmp_path):
    from idgen.synth import generate_dataset

    with pytest.raises(ConfigError, match=r"variation\.expressions: expression has shape \(2, 54\)"):
        generate_dataset(config(tmp_path / "ds", published, expressions=[[0.0] * 54] * 2))
