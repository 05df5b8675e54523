"""InfiniteYou as the dataset generator: per-image prompts and poses recorded in the manifest, each
image exactly what the pipeline makes when called directly, and ``generator.type: infiniteyou``
reading downloads of FLUX.1-dev and InfiniteYou."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.synth.generators import build_generator, derive_seed
from idgen.synth.poses import PoseBank

PROMPTS = ["a photo of a person", "an oil painting of a person"]


pytestmark = pytest.mark.usefixtures("one_thread")


def config(output, **changes):
    settings = {
        "output_dir": str(output), "seed": 3,
        "generator": {"type": "infiniteyou-tiny", "num_inference_steps": 2, "micro_batch": 3},
        "identities": {"count": 2, "dim": 32, "max_cosine": 0.3, "steps": 50},
        "variation": {"images_per_identity": 3, "prompts": PROMPTS, "poses": "default"},
        "filter": {"enabled": False},
        "writers": {"formats": ["imagefolder"]},
        "runtime": {"batch_size": 3, "progress": False, "device": "cpu"},
    }
    for section, values in changes.items():
        settings[section] = {**settings[section], **values} if isinstance(values, dict) else values
    return settings


def records_of(output):
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def stored(image):
    """``image`` as the engine stores it (JPEG, quality 95), decoded again."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return np.asarray(Image.open(buffer))


def direct_images(output, label, poses):
    """Identity ``label``'s batch (the engine fills batches with whole identities: one pipeline call
    of ``micro_batch`` 3), remade by calling the tiny pipeline directly with the recorded prompts,
    poses (N × 5 × 2 pixels) and seeds."""
    from safetensors.torch import load_file

    from idgen.testing.tiny_infiniteyou import tiny_infiniteyou

    batch = sorted((r for r in records_of(output) if r["label"] == label), key=lambda r: r["index"])
    target = load_file(str(output / "identities.safetensors"))["identities"][label]
    keypoints = None if poses is None else np.stack([poses[r["pose_index"]] * 32 for r in batch])
    images = tiny_infiniteyou(embedding_dim=32)(
        [r["prompt"] for r in batch], id_embeds=target.expand(len(batch), -1), keypoints=keypoints,
        generator=[torch.Generator().manual_seed(r["seed"]) for r in batch], num_inference_steps=2,
        output_type="pil").images
    return batch, images


def test_dataset_records_prompt_and_pose_and_equals_direct_pipeline_calls(tmp_path):
    from idgen.synth import generate_dataset

    output = tmp_path / "posed"
    stats = generate_dataset(config(output))
    records = records_of(output)
    assert stats["images"] == len(records) == 6
    for record in records:
        assert record["prompt"] == PROMPTS[record["prompt_index"]] and record["generator"]["type"] == "infiniteyou-tiny"
        assert record["seed"] == derive_seed(3, record["label"], record["index"], record["attempt"])
    batch, images = direct_images(output, 1, PoseBank.load(output / "poses.json").keypoints)
    assert len({r["pose_index"] for r in batch}) == 3
    for record, image in zip(batch, images):
        assert image.size == (32, 32)
        assert np.array_equal(np.asarray(Image.open(output / record["file"])), stored(image))
    assert np.abs(np.asarray(images[0], float) - np.asarray(images[1], float)).mean() > 1  # not equal images


def test_without_a_pose_bank_infusenet_gets_no_pose(tmp_path):
    from idgen.synth import generate_dataset

    output = tmp_path / "unposed"
    generate_dataset(config(output, variation={"poses": None}))
    batch, images = direct_images(output, 0, None)
    assert all("pose_index" not in r for r in batch)
    for record, image in zip(batch, images):
        assert np.array_equal(np.asarray(Image.open(output / record["file"])), stored(image))


def test_generator_type_infiniteyou_reads_downloads_of_flux_and_infiniteyou(tmp_path):
    from diffusers import FluxPipeline

    from idgen.errors import ConfigError
    from idgen.testing.tiny_infiniteyou import infiniteyou_projection_state_dict, tiny_infiniteyou

    pipe = tiny_infiniteyou(embedding_dim=32)
    flux = {k: v for k, v in pipe.components.items() if k in FluxPipeline._get_signature_keys(FluxPipeline)[0]}
    FluxPipeline(**flux).save_pretrained(tmp_path / "FLUX.1-dev")
    variant = tmp_path / "InfiniteYou" / "infu_flux_v1.0" / "sim_stage1"
    pipe.controlnet.save_pretrained(variant / "InfuseNetModel")
    torch.save(infiniteyou_projection_state_dict(0, embedding_dim=32), variant / "image_proj_model.bin")

    generator = build_generator({"type": "infiniteyou", "path": str(tmp_path / "InfiniteYou"),
                                 "base": str(tmp_path / "FLUX.1-dev"), "variant": "sim_stage1",
                                 "dtype": "float32", "num_inference_steps": 2, "height": 32, "width": 32})
    vectors = torch.nn.functional.normalize(torch.randn(2, 32, generator=torch.Generator().manual_seed(0)), dim=-1)
    made = generator(vectors, [torch.Generator().manual_seed(s) for s in (4, 5)], prompt=PROMPTS)
    expected = pipe(PROMPTS, id_embeds=vectors, num_inference_steps=2, output_type="pil",
                    generator=[torch.Generator().manual_seed(s) for s in (4, 5)]).images
    for got, want in zip(made, expected):
        assert np.array_equal(np.asarray(got), np.asarray(want))
    with pytest.raises(ConfigError, match="generator.path"):
        build_generator({"type": "infiniteyou"})
