"""``idgen dataset verify``: a finished dataset checked against its manifest, every problem named by file.

The dataset: three identities × two grey images (no models), one image per shard, so each format
has six shards.
"""

import json
from pathlib import Path

import pytest

from idgen.cli import main
from idgen.errors import DataError
from idgen.synth.verify import verify_dataset


def grey_images(id_embeds, generators, **conditions):
    import torch
    from PIL import Image

    return [Image.new("RGB", (16, 16), (int(torch.rand(1, generator=g) * 255),) * 3) for g in generators]


@pytest.fixture()
def dataset(tmp_path) -> Path:
    from idgen.synth import SynthConfig, generate_dataset

    folder = tmp_path / "faces"
    generate_dataset(SynthConfig.from_dict({
        "output_dir": str(folder), "identities": {"count": 3, "dim": 16, "steps": 5},
        "variation": {"images_per_identity": 2}, "filter": {"enabled": False}, "writers": {"shard_size": 1},
        "runtime": {"batch_size": 4, "progress": False, "device": "cpu"}}), generator=grey_images)
    return folder


def problems(folder: Path) -> list[str]:
    """The problems listed in the one-line error ``verify_dataset`` raises on ``folder``."""
    from idgen.synth.verify import REPAIR

    with pytest.raises(DataError) as raised:
        verify_dataset(folder)
    message = str(raised.value)
    assert "\n" not in message and message.endswith(f". {REPAIR}")
    listed = message.split(" problem(s) found: ", 1)[1][: -len(f". {REPAIR}")]
    return listed.split("; ")


def test_a_good_dataset_passes_with_its_counts(dataset, capsys):
    assert main(["dataset", "verify", str(dataset)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary == {"images": 6, "identities": 3, "formats": ["imagefolder", "parquet", "webdataset"],
                       "shards": {"parquet": 6, "webdataset": 6}}


def test_a_missing_shard_is_named(dataset, capsys):
    (dataset / "data" / "train-00004-of-00006.parquet").unlink()
    (dataset / "webdataset" / "train-000001.tar").unlink()
    assert problems(dataset) == ["data/train-00004-of-00006.parquet: missing (the manifest's images make 6 shards)",
                                 "webdataset/train-000001.tar: missing (the manifest's images make 6 shards)"]
    assert main(["dataset", "verify", str(dataset)]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"idgen: error: {dataset}: 2 problem(s) found: data/train-00004-of-00006.parquet: missing")
    assert error.count("\n") == 1 and "rerunning it as it is" in error


def test_a_corrupted_image_and_corrupted_shards_are_named(dataset):
    image = dataset / "images" / "id000001" / "0.jpg"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    parquet = dataset / "data" / "train-00002-of-00006.parquet"
    parquet.write_bytes(parquet.read_bytes()[:100])
    tar = dataset / "webdataset" / "train-000003.tar"
    tar.write_bytes(tar.read_bytes().replace(b"\xff\xd8\xff", b"\x00\xd8\xff", 1))   # the JPEG's first bytes
    found = problems(dataset)
    assert found[0] == ("images/id000001/0.jpg: its sha256 differs from the one in manifest.jsonl (the file is "
                        "corrupted or was changed)")
    assert found[1].startswith("data/train-00002-of-00006.parquet: cannot be read as parquet (")
    assert found[2] == ("webdataset/train-000003.tar: holds 1 images, the manifest puts 1 there, and they first differ "
                        "at image 0 of the shard (corrupted, or from another run)")
    assert len(found) == 3


def test_images_missing_or_not_listed_and_wrong_counts_are_named(dataset):
    (dataset / "images" / "id000002" / "1.jpg").unlink()
    (dataset / "images" / "id000002" / "7.jpg").write_bytes(b"not ours")
    stats = json.loads((dataset / "stats.json").read_text())
    (dataset / "stats.json").write_text(json.dumps(dict(stats, images=5)))
    assert problems(dataset) == ["manifest.jsonl: lists 6 images, stats.json says 5",
                                 "images/id000002/1.jpg: listed in manifest.jsonl but missing",
                                 "images/id000002/7.jpg: not listed in manifest.jsonl"]


def test_a_manifest_naming_a_path_outside_the_images_is_refused_without_reading_it(dataset, tmp_path):
    lines = (dataset / "manifest.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps(dict(first, file="../../secret.jpg"))
    (dataset / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    found = problems(dataset)
    assert found[0] == "manifest.jsonl: '../../secret.jpg' is not where the dataset keeps image 0 of id000000"
    assert found[1] == "images/id000000/0.jpg: not listed in manifest.jsonl"


def test_a_folder_that_is_not_a_finished_dataset_is_refused(tmp_path, dataset):
    with pytest.raises(DataError, match="config.json: missing; this is not a folder written by"):
        verify_dataset(tmp_path)
    (dataset / "manifest.jsonl").unlink()
    with pytest.raises(DataError, match="manifest.jsonl: missing: the dataset was not assembled; run the same"):
        verify_dataset(dataset)
