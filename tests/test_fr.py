"""MobileFaceNet recognisers (`idgen.recognition`): margin heads against an
independent computation, the one learning-rate schedule, the face-set readers on a tiny set written
by idgen.synth's writers, training steps that lower the loss, a trained folder used
as an `idgen.faces` recogniser, and (slow) a short CPU training on real LFW View 1 training people
that must verify the held-out View 1 DevTest pairs clearly better than chance."""

import hashlib
import io
import json
import os
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.recognition import MarginHead, MobileFaceNet, align_images, read_face_set

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mobilefacenet_shapes_and_parameter_count():
    model = MobileFaceNet().eval()
    assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.3e6  # the paper's ~1 M parameters
    assert MobileFaceNet(64, width=0.5, resolution=64).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 64)
    with pytest.raises(ValueError, match="multiple of 16"):
        MobileFaceNet(resolution=50)


def warmup_cosine_reference(total, warmup_steps, decay_from_start):
    """The two schedules as the trainers wrote them before they shared one function."""
    if decay_from_start:   # the Face Transformer's: rise × cosine over all steps
        return [min(1.0, (step + 1) / max(1, warmup_steps)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
                for step in range(total + 1)]
    ramp = max(1, warmup_steps)    # MobileFaceNet's: rise, then cosine over the rest
    return [(step + 1) / ramp if step < ramp else 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(1, total - ramp)))
            for step in range(total + 1)]


@pytest.mark.parametrize("decay_from_start", [False, True])
def test_one_schedule_gives_both_trainers_their_learning_rates(decay_from_start):
    """Every learning rate either trainer applies (float32, as the optimizers use it) is the one it used
    before: the Face Transformer's bit for bit, MobileFaceNet's up to the last bit of a double."""
    from idgen.recognition import warmup_cosine

    for total in (1, 2, 7, 40, 333, 1246):
        for warmup in (0, 1, 5, round(0.05 * total), total):
            schedule = warmup_cosine(total, warmup, decay_from_start)
            got = np.array([schedule(step) for step in range(total + 1)])
            expected = np.array(warmup_cosine_reference(total, warmup, decay_from_start))
            if decay_from_start:
                assert np.array_equal(got, expected)
            assert np.allclose(got, expected, rtol=1e-15, atol=1e-16)
            for learning_rate in (0.1, 1e-3, 3e-2):
                assert np.array_equal(np.float32(learning_rate * got), np.float32(learning_rate * expected)), (total, warmup, learning_rate)


def margin_logits_reference(embeddings, centres, labels, kind, s, m):
    """The margin-head logits written out row by row with Python's math module (ArcFace's angle
    θ + m stops at π, so the true-class logit never rises again)."""
    out = np.zeros((len(embeddings), len(centres)))
    for i, (e, label) in enumerate(zip(embeddings, labels)):
        for j, c in enumerate(centres):
            cos = min(1.0, max(-1.0, float(np.dot(e, c) / np.linalg.norm(e) / np.linalg.norm(c))))
            if j == label:
                cos = cos - m if kind == "cosface" else math.cos(min(math.acos(cos) + m, math.pi))
            out[i, j] = s * cos
    return out


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_head_used_for_training_matches_the_formula(kind):
    """MobileFaceNet trains with the Face Transformer's head; checked here where θ + m passes π too."""
    torch.manual_seed(0)
    head = MarginHead(8, 5, kind, scale=10.0, margin=0.3).double()
    embeddings = torch.randn(5, 8, dtype=torch.float64)
    embeddings[4] = -head.weight[2].detach()  # θ = π for its true class
    labels = torch.tensor([0, 3, 1, 4, 2])
    logits = head(embeddings, labels).detach().numpy()
    expected = margin_logits_reference(embeddings.numpy(), head.weight.detach().numpy(), labels.tolist(), kind, 10.0, 0.3)
    assert np.allclose(logits, expected, atol=1e-5)
    changed = ~np.isclose(logits, head(embeddings).detach().numpy())  # the margin moves the true class only
    assert (changed[:4] == np.eye(5, dtype=bool)[labels[:4].numpy()]).all()  # (row 4 is at cos π already)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MobileFaceNet(32, width=0.25, resolution=32)
    head = MarginHead(32, 4, "arcface", scale=16.0, margin=0.5)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 4
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(head(model(images), labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.fixture
def synth_folder(tmp_path, faces_dir):
    """A tiny face set in idgen.synth's layout: images/<identity>/<n>.jpg, manifest, parquet, WebDataset."""
    from idgen.synth.writers import write_manifest, write_parquet, write_webdataset

    out = tmp_path / "synth"
    records = []
    for k, photo in enumerate(sorted(faces_dir.iterdir())):
        label, index = k % 2, k // 2
        file = f"images/id{label:06d}/{index}.jpg"
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        Image.open(photo).convert("RGB").save(out / file, quality=95)
        records.append({"file": file, "label": label, "identity": f"id{label:06d}", "index": index, "seed": k,
                        "attempt": 0, "similarity": 0.9, "perturbation": 0.0})

    def read(record):
        return (out / record["file"]).read_bytes()

    write_manifest(records, out / "manifest.jsonl")
    write_parquet(records, read, out / "data", shard_size=2)
    write_webdataset(records, read, out / "webdataset", shard_size=2)
    return out, records


def test_every_synth_format_reads_as_the_same_face_set(synth_folder):
    out, records = synth_folder
    expected = {(r["label"], (out / r["file"]).read_bytes()) for r in records}

    def pairs(faces):
        return {(int(label), item if isinstance(item, bytes) else Path(item).read_bytes())
                for item, label in zip(faces.images, faces.labels)}

    for source, format in [(out, "auto"), (out / "images", "imagefolder"), (out / "data", "parquet"),
                           (out / "webdataset", "webdataset"), (out / "data", "auto"), (out / "webdataset", "auto"),
                           (sorted((out / "webdataset").glob("*.tar"))[0], "auto")]:
        faces = read_face_set(source, format)
        assert faces.names == ["id000000", "id000001"][:len(faces.names)], (source, format)
        if source.is_dir():
            assert pairs(faces) == expected, (source, format)
        else:  # one shard of two images
            assert len(faces.images) == 2 and pairs(faces) <= expected


def test_unreadable_face_sets_are_data_errors_naming_the_path(tmp_path):
    from idgen.errors import DataError

    with pytest.raises(DataError, match="missing: no such file"):
        read_face_set(tmp_path / "missing")
    (tmp_path / "empty" / "person").mkdir(parents=True)
    with pytest.raises(DataError, match="empty: found 0 identity folder"):
        read_face_set(tmp_path / "empty")
    with pytest.raises(DataError, match="no parquet shards"):
        read_face_set(tmp_path / "empty", "parquet")


def test_shards_that_cannot_be_parsed_are_data_errors_naming_them(synth_folder, tmp_path):
    """A truncated parquet shard, a file that is not a tar, a ``.cls`` that is not a number, and a
    parquet file without the face set's columns: each a DataError naming the shard, never the parser's
    own exception."""
    import tarfile

    from hostile_files import cut_short
    from idgen.errors import DataError

    out, _ = synth_folder
    shard = cut_short(sorted((out / "data").glob("*.parquet"))[0])
    with pytest.raises(DataError, match=f"{shard}: not readable as parquet shards"):
        read_face_set(shard)
    (tmp_path / "not.tar").write_bytes(b"not a tar file" * 100)
    with pytest.raises(DataError, match="not.tar: not readable as webdataset shards"):
        read_face_set(tmp_path / "not.tar")
    with tarfile.open(tmp_path / "odd.tar", "w") as tar:
        for name, data in (("a.jpg", (out / "images/id000000/0.jpg").read_bytes()), ("a.cls", b"Ann")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="odd.tar: not readable as webdataset shards"):
        read_face_set(tmp_path / "odd.tar")
    import datasets

    datasets.Dataset.from_dict({"text": ["a"], "label": [0]}).to_parquet(tmp_path / "text.parquet")
    with pytest.raises(DataError, match=r"text.parquet: a face set needs an 'image' column.*\['text', 'label'\]"):
        read_face_set(tmp_path / "text.parquet")


def test_a_webdataset_member_over_the_image_size_cap_is_refused_before_it_is_read(tmp_path):
    """A tar member that declares more than MAX_IMAGE_FILE_BYTES (a hole: no disk, no time) is refused
    from its header, before any of it is read."""
    import tarfile

    from idgen.errors import DataError
    from idgen.faces.image import MAX_IMAGE_FILE_BYTES

    shard = tmp_path / "big.tar"
    info = tarfile.TarInfo("a.jpg")
    info.size = MAX_IMAGE_FILE_BYTES + 1
    with open(shard, "wb") as handle:
        handle.write(info.tobuf(tarfile.USTAR_FORMAT))
        handle.truncate(512 + -(-info.size // 512) * 512 + 1024)   # its data, then the tar's end
    with pytest.raises(DataError, match=f"big.tar: the member 'a.jpg' is {info.size:,} bytes, more than"):
        read_face_set(shard)


def test_a_parquet_face_set_takes_its_names_from_class_labels(faces_dir, tmp_path):
    """A face set written with ``datasets`` and a ``ClassLabel`` label (as ``push_to_hub`` of an
    ``imagefolder`` gives) and no ``identity`` column is read with the class names, in label order;
    one whose image cells only name files is refused (a path in a shard is never followed)."""
    import datasets

    from idgen.errors import DataError

    photos = sorted(faces_dir.iterdir())[:4]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["ann", "bob"])})

    def write(images, name):
        datasets.Dataset.from_dict({"image": images, "label": [1, 0, 1, 1]}, features=features).to_parquet(tmp_path / name)
        return tmp_path / name

    with pytest.raises(DataError, match="paths.parquet: a row holds no image bytes"):
        read_face_set(write([str(p) for p in photos], "paths.parquet"))
    faces = read_face_set(write([{"bytes": p.read_bytes(), "path": p.name} for p in photos], "people.parquet"))
    assert faces.names == ["ann", "bob"] and faces.labels.tolist() == [1, 0, 1, 1]
    assert faces.images == [p.read_bytes() for p in photos]


def _box_crop(rgb, size, box):
    """The "box" alignment written out: the ArcFace template in the centred square of box × shorter side."""
    from idgen.faces import ARCFACE_TEMPLATE, align_face

    side = box * min(rgb.shape[:2])
    corner = np.array([rgb.shape[1] - side, rgb.shape[0] - side]) / 2
    return align_face(rgb, corner + ARCFACE_TEMPLATE / 112 * side, size)


def test_aligned_crops_are_cached_atomically(synth_folder, tmp_path):
    from safetensors.numpy import load_file, save_file

    from idgen.faces import load_image

    faces = read_face_set(synth_folder[0] / "data")
    crops = align_images(faces.images, 32, "box", 0.5, cache_dir=tmp_path / "cache", progress=False)
    assert crops.shape == (len(faces.images), 32, 32, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[0], _box_crop(load_image(Image.open(io.BytesIO(faces.images[0]))), 32, 0.5))
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".safetensors"  # no temporary files left behind
    stored = load_file(str(cached[0]))  # one crop per image, named by the SHA-256 of its bytes
    keys = [hashlib.sha256(image).hexdigest() for image in faces.images]
    assert set(stored) == set(keys) and all(np.array_equal(stored[k], c) for k, c in zip(keys, crops))
    save_file({k: 255 - v for k, v in stored.items()}, str(cached[0]))  # a second call must read the cache
    assert np.array_equal(align_images(faces.images, 32, "box", 0.5, cache_dir=tmp_path / "cache", progress=False),
                          255 - crops)


def test_an_edited_photo_is_aligned_again_not_served_from_the_cache(synth_folder, tmp_path):
    """Same path, new bytes: the photo is aligned again; the unchanged photos still come from the cache."""
    from safetensors.numpy import load_file, save_file

    from idgen.faces import load_image

    files = read_face_set(synth_folder[0]).images  # paths: images/<identity>/<n>.jpg
    cache = tmp_path / "cache"
    first = align_images(files, 32, "box", 0.5, cache_dir=cache, progress=False)
    [store] = cache.iterdir()
    save_file({k: 255 - v for k, v in load_file(str(store)).items()}, str(store))  # mark what the cache serves
    mirrored = np.ascontiguousarray(load_image(files[0])[:, ::-1])
    Image.fromarray(mirrored).save(files[0], quality=95)
    again = align_images(files, 32, "box", 0.5, cache_dir=cache, progress=False)
    assert np.array_equal(again[0], _box_crop(load_image(files[0]), 32, 0.5))
    assert not np.array_equal(again[0], first[0]) and not np.array_equal(again[0], 255 - first[0])
    assert np.array_equal(again[1:], 255 - first[1:])
    assert [p.name for p in cache.iterdir()] == [store.name]  # the new crop joined the same file


def test_cli_trained_folder_is_a_recognizer_for_the_analyzer(synth_folder, tmp_path, capsys):
    """`idgen recognizer train --architecture mobilefacenet` on the tiny parquet set writes a folder that
    `FaceAnalyzer.from_backend` (hence `idgen eval verify --recognizer`) loads, and its embeddings are the
    model's own."""
    pytest.importorskip("dlib")
    from idgen.cli import main
    from idgen.faces import FaceAnalyzer, align_face, load_image
    from idgen.models import to_tensor
    from idgen.recognition import TrainedRecognizer

    out = tmp_path / "model"
    assert main(["recognizer", "train", "--architecture", "mobilefacenet", "--data", str(synth_folder[0] / "data"),
                 "--output-dir", str(out), "--epochs", "2",
                 "--batch-size", "4", "--width", "0.25", "--resolution", "32", "--embedding-size", "16",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\nsaved")[0])
    assert summary["images"] == 5 and summary["identities"] == 2 and summary["steps"] == 2  # 1 full batch × 2 epochs
    assert json.loads((out / "config.json").read_text())["model"] == {"embedding_size": 16, "width": 0.25, "resolution": 32,
                                                                "variant": "paper"}

    photo = synth_folder[0] / "images" / "id000000" / "0.jpg"
    analyzer = FaceAnalyzer.from_backend("dlib", str(out))
    face = analyzer.get_face(photo)
    assert face.embedding.shape == (16,)
    model = TrainedRecognizer(out).model
    with torch.no_grad():
        expected = model(to_tensor(align_face(load_image(photo), face.landmarks, 32)[None]))[0]
    assert np.allclose(face.embedding, expected.numpy(), atol=1e-4)


def people_of(path: Path) -> dict:
    """``name -> number of photos`` from an LFW people file."""
    return {name: int(count) for name, count in (line.split() for line in path.read_text().splitlines()[1:])}


@pytest.mark.slow
def test_training_on_lfw_dev_train_people_verifies_dev_test_pairs(lfw_dir, tmp_path):
    """LFW View 1: train on people of peopleDevTrain.txt only (≥ 8 photos, at most 12 each; the
    deep-funneled photos are already aligned, so the ArcFace template is placed in a centred box of
    half the image, about where dlib's landmarks put it),
    then the LFW 10-fold protocol on all 1,000 pairsDevTest.txt pairs, whose people are never trained on.
    An untrained network reaches about 65 % there; training must add at least 5 points and reach 70 %."""
    from idgen.eval import evaluate_scores, read_pairs
    from idgen.models import to_tensor
    from idgen.recognition import MobileFaceNetRecipe, TrainedRecognizer, train

    train_people = {name: count for name, count in people_of(lfw_dir / "peopleDevTrain.txt").items() if count >= 8}
    pairs = read_pairs(lfw_dir / "pairsDevTest.txt", lfw_dir / "images")
    test_people = set(people_of(lfw_dir / "peopleDevTest.txt")) | {Path(p).parent.name for pair in pairs
                                                                   for p in (pair.first, pair.second)}
    assert len(pairs) == 1000 and not set(train_people) & test_people
    data = tmp_path / "train"
    for name, count in train_people.items():
        (data / name).mkdir(parents=True)
        for k in range(1, min(count, 12) + 1):
            (data / name / f"{name}_{k:04d}.jpg").symlink_to(lfw_dir / "images" / name / f"{name}_{k:04d}.jpg")

    config = MobileFaceNetRecipe(data=str(data), output_dir=str(tmp_path / "model"), align="box", fallback_box=0.5,
                                 cache_dir=None, resolution=32, width=0.5, head="cosface", scale=16.0, margin=0.2,
                                      epochs=8, batch_size=64, learning_rate=0.1, progress=False)
    summary = train(config)
    trained_on = {Path(p).parent.name for p in read_face_set(data).images}
    assert trained_on == set(train_people) and not trained_on & test_people

    files = sorted({str(p) for pair in pairs for p in (pair.first, pair.second)})
    crops = to_tensor(align_images(files, 32, "box", 0.5, progress=False))
    index = {name: k for k, name in enumerate(files)}

    def dev_test(model):
        """LFW 10-fold protocol on the DevTest pairs, cosine of flip-augmented embeddings."""
        with torch.no_grad():
            embeddings = torch.nn.functional.normalize(model.eval()(crops) + model(crops.flip(-1)))
        scores = [float(embeddings[index[str(p.first)]] @ embeddings[index[str(p.second)]]) for p in pairs]
        return evaluate_scores(np.array(scores), np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))

    # random convolutional features already separate some pairs (same photo conditions): the bar is
    # the untrained network, not 50 %
    torch.manual_seed(config.seed)
    untrained = dev_test(MobileFaceNet(128, 0.5, 32))
    trained = dev_test(TrainedRecognizer(tmp_path / "model").model)
    print(f"LFW View 1 DevTest accuracy {trained['accuracy']:.4f} AUC {trained['auc']:.4f}, untrained "
          f"{untrained['accuracy']:.4f} AUC {untrained['auc']:.4f} ({summary})")
    assert summary["final_loss"] < 0.8 * summary["first_loss"]
    assert trained["accuracy"] >= 0.70 and trained["accuracy"] >= untrained["accuracy"] + 0.05


@pytest.mark.slow
def test_two_process_training_splits_the_batches_and_saves_once(synth_folder, tmp_path):
    """`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m idgen.cli recognizer train`
    (two CPU processes over gloo, as docs/guides/recognizers.md says): each process takes half of
    every epoch (5 photos, batch 2: one whole batch each instead of two), one process aligns and
    caches while the other waits, and only the main process writes the model and reports."""
    import re
    import subprocess
    import sys

    pytest.importorskip("dlib")
    out = tmp_path / "model"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "idgen.cli", "recognizer", "train", "--architecture", "mobilefacenet",
               "--data", str(synth_folder[0] / "data"), "--output-dir", str(out),
               "--epochs", "2", "--batch-size", "2", "--width", "0.25", "--resolution", "32",
               "--embedding-size", "16", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    summary, = [json.loads(block) for block in re.findall(r"^\{$.*?^\}$", done.stdout, re.S | re.M)]  # printed once
    assert summary["processes"] == 2 and summary["steps"] == 2   # one process alone: 4
    assert done.stdout.count("saved ") == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    from idgen.recognition import TrainedRecognizer

    model = TrainedRecognizer(out).model
    assert torch.isfinite(torch.cat([p.flatten() for p in model.parameters()])).all()
