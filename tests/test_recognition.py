"""Face Transformer recogniser: margin heads vs independent formulas, the face-folder split, and the
``idgen recognizer train --architecture face-transformer`` command on a tiny synthetic folder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.cli import main
from idgen.errors import ConfigError
from idgen.recognition import FaceDataConfig, FaceRecognizer, FaceSet, MarginHead, load_face_folder, model_config


def test_cosface_and_arcface_margins_match_formulas():
    torch.manual_seed(0)
    emb, labels = torch.randn(3, 4), torch.tensor([0, 2, 1])
    for kind in ("cosface", "arcface"):
        head = MarginHead(4, 3, kind, scale=10.0, margin=0.3)
        cos = (torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).T).detach()
        logits = head(emb, labels).detach()
        for i, y in enumerate(labels.tolist()):
            c = float(cos[i, y])
            expected = c - 0.3 if kind == "cosface" else math.cos(math.acos(c) + 0.3)
            assert float(logits[i, y]) == pytest.approx(10 * expected, abs=1e-4)
            others = [j for j in range(3) if j != y]
            assert torch.allclose(logits[i, others], 10 * cos[i, others], atol=1e-5)
        assert torch.allclose(head(emb), 10 * cos, atol=1e-5)   # test time: no margin


def test_presets_and_bad_sizes():
    assert model_config("paper").dim == 512 and model_config("paper").depth == 6
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        model_config("cpu-tiny", resolution=30)
    with pytest.raises(ConfigError, match="unknown model preset"):
        model_config("huge")


def _write_folder(root, people=3, per_person=5):
    rng = np.random.default_rng(0)
    for p in range(people):
        (root / f"p{p}").mkdir(parents=True)
        for i in range(per_person):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / f"p{p}" / f"{i}.png")


def test_face_folder_split_is_fixed_per_identity(tmp_path):
    _write_folder(tmp_path / "faces")
    config = FaceDataConfig(root=str(tmp_path / "faces"), align="resize", resolution=16, test_fraction=0.4,
                            max_train=2, cache_dir=str(tmp_path / "cache"))
    train, test = load_face_folder(config)
    assert train.images.shape == (6, 3, 16, 16) and test.images.shape == (6, 3, 16, 16)
    assert test.files[:2] == ["p0/3.png", "p0/4.png"] and train.files[:2] == ["p0/0.png", "p0/1.png"]
    again, _ = load_face_folder(config)                      # from the cache: identical
    assert torch.equal(again.images, train.images) and len(list((tmp_path / "cache").iterdir())) == 1


def test_an_edited_photo_is_read_again_not_served_from_the_crop_cache(tmp_path):
    _write_folder(tmp_path / "faces")
    config = FaceDataConfig(root=str(tmp_path / "faces"), align="resize", resolution=16, test_fraction=0.4,
                            cache_dir=str(tmp_path / "cache"))
    before, _ = load_face_folder(config)
    edited = np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(edited).save(tmp_path / "faces" / "p0" / "0.png")  # same path, new bytes
    after, _ = load_face_folder(config)
    assert after.files[0] == "p0/0.png"
    expected = np.asarray(Image.fromarray(edited).resize((16, 16), Image.BILINEAR))
    assert np.array_equal(after.images[0].permute(1, 2, 0).numpy(), expected)
    assert not torch.equal(after.images[0], before.images[0]) and torch.equal(after.images[1:], before.images[1:])


def test_recognizer_train_command(tmp_path, capsys):
    _write_folder(tmp_path / "faces")
    code = main(["recognizer", "train", "--architecture", "face-transformer", "--data", str(tmp_path / "faces"),
                 "--output-dir", str(tmp_path / "model"), "--preset", "cpu-tiny", "--resolution", "16", "--align", "resize", "--epochs", "1",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    model = FaceRecognizer.from_pretrained(tmp_path / "model")
    assert model.config.num_classes == 3 and model.class_names == ["p0", "p1", "p2"]


def _toy_set(num_classes=4, per_class=8, seed=0, label_offset=0):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(num_classes, 3, 16, 16, generator=g) * 255
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    images = (patterns[labels] + torch.randn(len(labels), 3, 16, 16, generator=g) * 40).clamp(0, 255).to(torch.uint8)
    return FaceSet(images, labels + label_offset, [f"id{i}" for i in range(num_classes)])


def test_distillation_pulls_embeddings_to_the_teacher():
    """With teacher embeddings attached, training makes the student's embeddings match them (also on
    the unlabelled extra images); without, they stay unrelated."""
    from idgen.recognition import FaceTransformerRecipe, embed, fit

    train = _toy_set()
    extra = _toy_set(seed=1, label_offset=-100)
    extra.labels[:] = -1
    g = torch.Generator().manual_seed(5)   # the teacher: one direction per person, plus a little noise
    people = torch.randn(8, 16, generator=g)
    train.teacher = torch.nn.functional.normalize(people[train.labels] + 0.1 * torch.randn(len(train), 16, generator=g), dim=-1)
    extra.teacher = torch.nn.functional.normalize(people[4 + torch.arange(4).repeat_interleave(8)], dim=-1)

    def cos_to_teacher(model, data):
        return float(torch.nn.functional.cosine_similarity(embed(model, data), data.teacher).mean())

    results = {}
    for distill in (True, False):
        torch.manual_seed(0)
        model = FaceRecognizer(model_config(None, resolution=16, patch_size=8, dim=32, depth=2, heads=4, mlp_dim=64,
                                            embedding_dim=16, num_classes=4))
        data = train if distill else FaceSet(train.images, train.labels, train.class_names)
        config = FaceTransformerRecipe(epochs=20, batch_size=16, learning_rate=3e-3, warmup_epochs=1, augment=False,
                             distill_weight=10.0, distill_batch_size=16)
        fit(model, data, config, progress=False, extra=extra if distill else None)
        results[distill] = cos_to_teacher(model, train), cos_to_teacher(model, extra)
    # measured: 0.65 / 0.79 with distillation, −0.12 / 0.11 without
    assert results[True][0] > 0.5 and results[True][1] > 0.5
    assert abs(results[False][0]) < 0.3 and abs(results[False][1]) < 0.3


def test_extra_distillation_photos_skip_the_recognisers_classes(tmp_path):
    from idgen.recognition.distill import extra_face_files

    _write_folder(tmp_path / "faces", people=4, per_person=3)       # p0 … p3
    files = extra_face_files(str(tmp_path / "faces"), {"p0", "p2"}, max_images=100)
    assert sorted({f.parent.name for f in files}) == ["p1", "p3"] and len(files) == 6
    assert len(extra_face_files(str(tmp_path / "faces"), {"p0"}, max_images=4, seed=1)) == 4
    with pytest.raises(ConfigError, match="no photos"):
        extra_face_files(str(tmp_path / "faces"), {"p0", "p1", "p2", "p3"}, max_images=4)


def test_recognizer_train_command_distils_mobilefacenet(tmp_path, capsys, mobilefacenet_path):
    from idgen.recognition.distill import teacher_embeddings

    _write_folder(tmp_path / "faces", people=3, per_person=4)
    _write_folder(tmp_path / "others", people=5, per_person=2)     # p0–p2 are classes: skipped
    code = main(["recognizer", "train", "--architecture", "face-transformer", "--data", str(tmp_path / "faces"),
                 "--output-dir", str(tmp_path / "model"), "--preset", "cpu-tiny", "--resolution", "16", "--align", "resize", "--epochs", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--distill-from", f"mobilefacenet:{mobilefacenet_path}",
                 "--distill-images", str(tmp_path / "others"), "--distill-max-images", "3"])
    assert code == 0 and "test accuracy" in capsys.readouterr().out
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("teacher-"))
    assert len(cached) == 2          # the training photos and the 3 extra photos (p3, p4 only)
    # the cached teacher embeddings are MobileFaceNet's own (flip-summed, normalised) embeddings
    from idgen.faces import FaceAnalyzer
    from idgen.recognition.data import FaceDataConfig, load_aligned

    data = FaceDataConfig(root=str(tmp_path / "faces"), align="resize", resolution=16, cache_dir=str(tmp_path / "cache"))
    files = sorted((tmp_path / "faces" / "p1").glob("*.png"))[:2]
    got = teacher_embeddings(files, data, f"mobilefacenet:{mobilefacenet_path}")
    crops = load_aligned(files, FaceDataConfig(root=data.root, align="resize", resolution=112))
    rec = FaceAnalyzer.from_backend("dlib", f"mobilefacenet:{mobilefacenet_path}").recognizer
    expected = torch.from_numpy(rec.embed(crops) + rec.embed(np.ascontiguousarray(crops[:, :, ::-1])))
    assert torch.allclose(got, torch.nn.functional.normalize(expected, dim=-1), atol=1e-5)


def test_the_face_transformer_trains_through_the_shared_trainer_and_reloads_with_equal_embeddings(
        tmp_path, monkeypatch, capsys):
    """`--architecture face-transformer` runs the one trainer (the same `_fit` loop and folder format as the
    other architectures): its folder records architecture face-transformer, the options and a summary, and
    loads back, as `FaceRecognizer` and as an `idgen.faces` recogniser, with the embeddings the network
    had at the end of training."""
    import json

    import idgen.recognition.trainer as trainer
    from idgen.faces import FaceAnalyzer
    from idgen.models import to_tensor
    from idgen.recognition import TrainedRecognizer

    calls = {}
    fit = trainer._fit

    def spy_fit(config, network, *args, **kwargs):
        calls["fit"], calls["network"] = config.architecture, network
        return fit(config, network, *args, **kwargs)

    monkeypatch.setattr(trainer, "_fit", spy_fit)
    _write_folder(tmp_path / "faces")
    out = tmp_path / "model"
    assert main(["recognizer", "train", "--architecture", "face-transformer", "--data", str(tmp_path / "faces"), "--output-dir",
                 str(out), "--preset", "cpu-tiny", "--resolution", "16", "--align", "resize", "--epochs", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out and calls["fit"] == "face-transformer"
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "face-transformer" and config["class_names"] == ["p0", "p1", "p2"]
    assert config["model"]["resolution"] == 16 and config["train"]["preset"] == "cpu-tiny"
    assert config["summary"]["identities"] == 3 and config["summary"]["steps"] == 2

    crops = np.random.default_rng(1).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = calls["network"].eval().embed(to_tensor(crops)).numpy()
    reloaded = FaceRecognizer.from_pretrained(out)
    assert reloaded.class_names == ["p0", "p1", "p2"]
    with torch.no_grad():
        assert np.allclose(reloaded.embed(to_tensor(crops)).numpy(), expected, atol=1e-6)
    recognizer = TrainedRecognizer(out)
    assert recognizer.architecture == "face-transformer" and recognizer.resolution == 16
    assert recognizer.embedding_size == 64 and np.allclose(recognizer.embed(crops), expected, atol=1e-6)
    assert isinstance(FaceAnalyzer.from_backend("dlib", str(out)).recognizer, TrainedRecognizer)


def test_a_folder_that_does_not_record_its_architecture_is_refused(tmp_path):
    """Every recogniser folder records its ``architecture``; one without is refused, by both loaders,
    with a message saying how to make a usable one."""
    import json

    from idgen.errors import ModelFilesMissingError
    from idgen.io import save_module_weights
    from idgen.recognition import TrainedRecognizer

    model = FaceRecognizer(model_config("cpu-tiny", num_classes=3))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text(json.dumps(
        {**__import__("dataclasses").asdict(model.config), "class_names": ["a", "b", "c"]}))
    save_module_weights(model, tmp_path / "bare" / "model.safetensors")
    with pytest.raises(ModelFilesMissingError, match="holds a None recogniser, not a Face Transformer .*--architecture"):
        FaceRecognizer.from_pretrained(tmp_path / "bare")
    with pytest.raises(ModelFilesMissingError, match="config.json: unknown architecture None"):
        TrainedRecognizer(tmp_path / "bare")


def test_each_architecture_has_its_own_recipe_with_its_own_defaults():
    """One config per architecture on a shared base: each holds only its own options, with its
    recipe's defaults, and records which architecture it trains."""
    from dataclasses import fields

    from idgen.recognition import (RECIPES, FaceTransformerRecipe, IResNetRecipe, MobileFaceNetRecipe,
                                   RecognizerTrainConfig)

    assert RECIPES == {"mobilefacenet": MobileFaceNetRecipe, "iresnet": IResNetRecipe,
                       "face-transformer": FaceTransformerRecipe}
    assert all(issubclass(recipe, RecognizerTrainConfig) for recipe in RECIPES.values())
    transformer = FaceTransformerRecipe(epochs=3, learning_rate=3e-3)
    assert (transformer.architecture, transformer.weight_decay, transformer.warmup_epochs, transformer.augment,
            transformer.resolution) == ("face-transformer", 0.05, 2, True, 40)   # cpu-small's crop side
    mobile = MobileFaceNetRecipe(data="d", output_dir="o")
    assert (mobile.architecture, mobile.learning_rate, mobile.epochs, mobile.head, mobile.resolution) == (
        "mobilefacenet", 0.1, 10, "arcface", 112)
    assert {f.name for f in fields(MobileFaceNetRecipe)}.isdisjoint({"preset", "warmup_epochs", "distill_from"})
    assert {f.name for f in fields(FaceTransformerRecipe)}.isdisjoint({"head", "margin", "fallback_box", "depth"})


@pytest.mark.parametrize("recipe, options, error, message", [
    ("face-transformer", {"head": "adaface"}, TypeError, "unexpected keyword argument 'head'"),
    ("mobilefacenet", {"preset": "cpu-tiny"}, TypeError, "unexpected keyword argument 'preset'"),
    ("iresnet", {"align": "resize"}, ConfigError, "align 'resize': architecture 'iresnet' aligns with dlib or box"),
    ("face-transformer", {"preset": "huge"}, ConfigError, "unknown preset 'huge'"),
])
def test_a_recipe_refuses_options_of_another_architecture(recipe, options, error, message):
    from idgen.recognition import RECIPES

    with pytest.raises(error, match=message):
        RECIPES[recipe](data="d", output_dir="o", **options)


def test_fit_trains_only_a_face_transformer_in_memory():
    from idgen.recognition import MobileFaceNetRecipe, fit

    with pytest.raises(ConfigError, match="fit trains a Face Transformer"):
        fit(FaceRecognizer(model_config("cpu-tiny", num_classes=4)), _toy_set(), MobileFaceNetRecipe())


def _recogniser_folder(folder, architecture: str):
    """A small recogniser folder as ``idgen recognizer train`` writes it."""
    from idgen.models import MobileFaceNet, save_recognizer

    if architecture == "face-transformer":
        FaceRecognizer(model_config("cpu-tiny", num_classes=3)).save_pretrained(folder, ["a", "b", "c"])
    else:
        network = MobileFaceNet(16, 0.25, 32)
        save_recognizer(folder, architecture, network, network.config)
    return folder


@pytest.mark.parametrize("architecture", ["mobilefacenet", "face-transformer"])
def test_a_recogniser_folder_with_unusable_weights_is_refused_naming_the_file(tmp_path, architecture):
    """Cut short, a pickle under the safetensors name, weights of another size, or a NaN in them: each is
    a DataError naming model.safetensors and saying to retrain, never a traceback or NaN embeddings."""
    import re

    from hostile_files import cut_short, pickled_instead, safetensors_with_nan

    from idgen.errors import DataError
    from idgen.faces import FaceAnalyzer
    from idgen.io import save_module_weights
    from idgen.models import MobileFaceNet
    from idgen.recognition import TrainedRecognizer

    def other_size(path):
        other = (MobileFaceNet(8, 0.25, 32) if architecture == "mobilefacenet"
                 else FaceRecognizer(model_config("cpu-tiny", num_classes=5)))
        save_module_weights(other, path)

    cases = {"cut-short": (cut_short, "not a complete safetensors file"),
             "pickle": (pickled_instead, r"a pickle \(torch.save\) file, not safetensors"),
             "other-size": (other_size, "not the .* config.json describes: wrong shape"),
             "nan": (safetensors_with_nan, "NaN or infinite values in")}
    for name, (damage, message) in cases.items():
        weights = _recogniser_folder(tmp_path / name, architecture) / "model.safetensors"
        damage(weights)
        pattern = rf"{re.escape(str(weights))}: {message}.*`idgen recognizer train"
        with pytest.raises(DataError, match=pattern):
            TrainedRecognizer(weights.parent)
        if architecture == "face-transformer":   # what `idgen forget` loads from model.path
            with pytest.raises(DataError, match=pattern):
                FaceRecognizer.from_pretrained(weights.parent)
    with pytest.raises(DataError, match=r"nan/model.safetensors: NaN or infinite values"):
        FaceAnalyzer.from_backend("dlib", str(tmp_path / "nan"))
    good = TrainedRecognizer(_recogniser_folder(tmp_path / "good", architecture))
    assert np.isfinite(good.embed(np.zeros((1, good.resolution, good.resolution, 3), np.uint8))).all()
