"""InstantID as the dataset generator: per-image prompts and poses from a pose bank, recorded in the
manifest, reproducible, and exactly what the pipeline makes when called directly."""

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.synth.generators import derive_seed
from idgen.synth.poses import DEFAULT_BANK, PoseBank, resolve_pose_bank

PROMPTS = ["a photo of a person", "an oil painting of a person", "a pencil sketch of a person"]


def config(output, **changes):
    settings = {
        "output_dir": str(output), "seed": 5,
        "generator": {"type": "instantid-tiny", "num_inference_steps": 2, "micro_batch": 4},
        "identities": {"count": 2, "dim": 32, "max_cosine": 0.3, "steps": 50},
        "variation": {"images_per_identity": 4, "prompts": PROMPTS, "poses": "default"},
        "filter": {"enabled": False},
        "writers": {"formats": ["imagefolder", "parquet", "webdataset"], "shard_size": 5},
        "runtime": {"batch_size": 4, "progress": False, "device": "cpu"},
    }
    for section, values in changes.items():
        settings[section] = {**settings[section], **values} if isinstance(values, dict) else values
    return settings


def tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] != "journal"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, one_thread):
    from idgen.synth import generate_dataset

    output = tmp_path_factory.mktemp("instantid") / "ds"
    return output, generate_dataset(config(output))


def test_manifest_records_prompt_and_pose_per_image_and_matches_the_files(dataset, tmp_path):
    output, stats = dataset
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert stats["images"] == len(records) == 8
    assert sorted(r["file"] for r in records) == sorted(p.relative_to(output).as_posix()
                                                        for p in (output / "images").rglob("*.jpg"))
    bank = PoseBank.load(output / "poses.json")
    assert np.allclose(bank.keypoints, PoseBank.load(DEFAULT_BANK).keypoints)
    for record in records:
        assert hashlib.sha256((output / record["file"]).read_bytes()).hexdigest() == record["sha256"]
        assert record["prompt"] == PROMPTS[record["prompt_index"]]
        assert 0 <= record["pose_index"] < len(bank) == 24
        assert record["seed"] == derive_seed(5, record["label"], record["index"], record["attempt"])
        assert record["generator"]["type"] == "instantid-tiny"
    for identity in range(2):
        mine = sorted((r for r in records if r["label"] == identity), key=lambda r: r["index"])
        assert len({r["prompt_index"] for r in mine[:3]}) == 3  # every prompt before any repeats
        assert len({r["pose_index"] for r in mine}) == 4
    assert [r["pose_index"] for r in records[:4]] != [r["pose_index"] for r in records[4:]]

    import datasets

    loaded = datasets.load_dataset(str(output), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded["prompt"] == [r["prompt"] for r in records]
    assert loaded["pose_index"] == [r["pose_index"] for r in records]
    assert loaded[0]["image"].size == (64, 64)


def test_images_equal_direct_pipeline_calls_with_the_recorded_prompt_and_pose(dataset):
    """Identity 1's batch (the engine fills batches with whole identities: 4 images per batch, one
    pipeline call of ``micro_batch`` 4), remade by calling the tiny pipeline directly with the
    recorded prompts, the recorded poses drawn as keypoint images, the identity vector at InstantID's
    embedding scale and the recorded seeds."""
    from safetensors.torch import load_file

    from idgen.pipelines.keypoints import draw_keypoints
    from idgen.identity import normalize
    from idgen.testing.tiny_instantid import tiny_instantid

    output, _ = dataset
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    batch = sorted((r for r in records if r["label"] == 1), key=lambda r: r["index"])
    bank = PoseBank.load(output / "poses.json")
    target = load_file(str(output / "identities.safetensors"))["identities"][1]
    pipe = tiny_instantid(embedding_dim=32)
    images = pipe([r["prompt"] for r in batch], id_embeds=normalize(target).expand(4, -1) * 32 ** 0.5,
                  image=[draw_keypoints(bank.keypoints[r["pose_index"]] * 64, (64, 64)) for r in batch],
                  generator=[torch.Generator().manual_seed(r["seed"]) for r in batch],
                  num_inference_steps=2, height=64, width=64, output_type="pil").images
    for record, image in zip(batch, images):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        assert np.array_equal(np.asarray(Image.open(output / record["file"])), np.asarray(Image.open(buffer)))
    pixels = [np.asarray(image, dtype=float) for image in images]
    assert np.abs(pixels[0] - pixels[1]).mean() > 1  # the comparison above is not between equal images


def test_same_config_twice_gives_identical_files(dataset, tmp_path, one_thread, capsys):
    """The second run goes through the CLI with the settings in a YAML file."""
    import yaml

    from idgen.cli import main

    again = tmp_path / "again"
    settings = config(again)
    (tmp_path / "synth.yaml").write_text(yaml.safe_dump({k: v for k, v in settings.items() if k != "output_dir"}))
    assert main(["dataset", "generate", "--config", str(tmp_path / "synth.yaml"), f"output_dir={again}"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 8
    assert tree(again) == tree(dataset[0])


def test_pose_bank_from_photos_files_and_inline(faces_dir, dlib_analyzer, tmp_path):
    from idgen.errors import ConfigError
    from idgen.faces import iter_image_files, load_image

    bank = resolve_pose_bank(str(faces_dir), lambda: dlib_analyzer)
    files = list(iter_image_files(faces_dir))
    assert len(bank) == len(files) == 5
    for path, keypoints, source in zip(files, bank.keypoints, bank.sources):
        height, width = load_image(path).shape[:2]
        assert np.allclose(keypoints * [width, height], dlib_analyzer.get_face(path).landmarks, atol=1e-6)
        assert source == path.rsplit("/", 1)[-1]
    bank.save(tmp_path / "bank.json")
    np.save(tmp_path / "bank.npy", bank.keypoints)
    for stored in (tmp_path / "bank.json", tmp_path / "bank.npy"):
        assert np.allclose(resolve_pose_bank(str(stored), None).keypoints, bank.keypoints, atol=1e-6)
    assert np.allclose(resolve_pose_bank(bank.keypoints.tolist(), None).keypoints, bank.keypoints)
    np.save(tmp_path / "pixels.npy", bank.keypoints * 250)
    with pytest.raises(ConfigError, match="fractions"):
        resolve_pose_bank(str(tmp_path / "pixels.npy"), None)

    default = PoseBank.load(DEFAULT_BANK)  # measured on LFW: real, varied, inside the frame
    assert len(default) == 24 and all(s.endswith("_0001.jpg") for s in default.sources)
    assert default.keypoints.min() > 0 and default.keypoints.max() < 1
    eyes = default.keypoints[:, 1] - default.keypoints[:, 0]
    roll = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))
    assert roll.max() - roll.min() > 10

    # crop: coordinates map into the box; poses leaving it are dropped; diverse: no repeats
    inner = bank.crop((0.25, 0.25, 0.75, 0.75), margin=0.0)
    kept = [s in inner.sources for s in bank.sources]
    assert np.allclose(inner.keypoints, (bank.keypoints[kept] - 0.25) / 0.5)
    assert len(set(bank.diverse(3).sources)) == 3


def test_a_pose_bank_npy_of_objects_or_cut_short_is_refused_naming_it(tmp_path):
    """np.load with allow_pickle=False: an object array would be unpickled, so it is refused by name."""
    from hostile_files import cut_short, object_array_npy

    from idgen.errors import DataError

    object_array_npy(tmp_path / "objects.npy")
    np.save(tmp_path / "cut.npy", PoseBank.load(DEFAULT_BANK).keypoints)
    cut_short(tmp_path / "cut.npy")
    cases = {"objects.npy": r"it holds Python objects \(dtype object\), and idgen does not unpickle them",
             "cut.npy": "not a complete .npy array"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=rf"{name}: {message}.*P × 5 × 2 array"):
            resolve_pose_bank(str(tmp_path / name), None)
