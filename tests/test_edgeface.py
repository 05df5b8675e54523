"""EdgeFace: sizes against the paper, the published checkpoints' tensor names, loading one (and refusing
what is not one) as ``edgeface:PATH``, training it through ``idgen recognizer train``, and GS-LoRA on
its transformer-style blocks through ``idgen forget``. Checkpoints are written here in the published
layout from the network itself (the published files are not downloaded in tests)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from idgen.errors import ConfigError, DataError
from idgen.models import EdgeFace, EdgeFaceClassifier, EdgeFaceClassifierConfig, MobileFaceNet, load_edgeface
from idgen.models.edgeface import LoRaLin

pytestmark = pytest.mark.usefixtures("one_thread")


def _flops(model: torch.nn.Module, side: int = 112) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, side, side))
    return counter.get_total_flops()


def test_parameters_and_flops_of_the_published_variants_match_the_paper():
    """EdgeFace paper, Table: XS(γ=0.6) 1.77 M parameters and 154.00 MFLOPs, S(γ=0.5) 3.65 M and 306.11
    MFLOPs. Parameters are given to 0.01 M, so the count must round to them (±0.005 M). torch's FLOP
    counter counts the convolutions and matrix products only (not norms, GELU, softmax), so FLOPs may
    fall short of the paper's by a little: within 0.5 %."""
    for variant, millions, mflops in (("xs_gamma_06", 1.77, 154.00), ("s_gamma_05", 3.65, 306.11)):
        model = EdgeFace(variant).eval()
        parameters = sum(p.numel() for p in model.parameters())
        assert abs(parameters / 1e6 - millions) <= 0.005, (variant, parameters)
        assert _flops(model) / 1e6 == pytest.approx(mflops, rel=5e-3), variant


def test_the_tensors_are_named_and_shaped_as_the_published_checkpoints():
    """Names from otroshi/edgeface (timm's EdgeNeXt inside ``TimmFRWrapperV2.model``, every linear layer
    but none else replaced by ``LoRaLin``, the embedding layer included); ranks ``int(γ·min(in, out))``."""
    state = EdgeFace("xs_gamma_06").state_dict()
    expected = {
        "model.stem.0.weight": (32, 3, 4, 4),
        "model.stem.1.weight": (32,),
        "model.stages.0.blocks.0.conv_dw.weight": (32, 1, 3, 3),
        "model.stages.0.blocks.0.gamma": (32,),
        "model.stages.0.blocks.0.mlp.fc1.linear1.weight": (19, 32),     # int(0.6 · 32)
        "model.stages.0.blocks.0.mlp.fc1.linear2.weight": (128, 19),
        "model.stages.0.blocks.0.mlp.fc1.linear2.bias": (128,),
        "model.stages.1.downsample.0.weight": (32,),
        "model.stages.1.downsample.1.weight": (64, 32, 2, 2),
        "model.stages.1.blocks.2.convs.0.weight": (32, 1, 3, 3),
        "model.stages.1.blocks.2.pos_embd.token_projection.weight": (64, 64, 1, 1),
        "model.stages.1.blocks.2.gamma_xca": (64,),
        "model.stages.1.blocks.2.xca.temperature": (4, 1, 1),
        "model.stages.1.blocks.2.xca.qkv.linear1.weight": (38, 64),
        "model.stages.1.blocks.2.xca.qkv.linear2.weight": (192, 38),
        "model.stages.1.blocks.2.xca.proj.linear2.bias": (64,),
        "model.stages.2.blocks.8.convs.1.weight": (34, 1, 3, 3),          # ⌈100 / 3⌉ channels per group
        "model.stages.3.blocks.0.conv_dw.weight": (192, 1, 9, 9),
        "model.head.norm.weight": (192,),
        "model.head.fc.linear1.weight": (115, 192),
        "model.head.fc.linear2.weight": (512, 115),
        "model.head.fc.linear2.bias": (512,),
    }
    assert {name: tuple(state[name].shape) for name in expected} == expected
    assert not any(k.endswith(("linear1.bias", "xca.qkv.weight", "mlp.fc1.weight")) for k in state)
    assert not any(".pos_embd." in k for k in state if not k.startswith("model.stages.1.blocks.2."))
    plain = EdgeFace("xxs").state_dict()   # no γ: plain linear layers
    assert tuple(plain["model.head.fc.weight"].shape) == (512, 168) and "model.head.fc.linear1.weight" not in plain
    assert isinstance(EdgeFace("s_gamma_05").model.stages[2].blocks[0].mlp.fc2, LoRaLin)


def test_a_published_checkpoint_loads_with_its_variant_and_gives_the_same_embeddings(tmp_path):
    images = torch.rand(2, 3, 112, 112) * 2 - 1
    for variant in ("xs_gamma_06", "xxs"):
        torch.manual_seed(0)
        model = EdgeFace(variant).eval()
        with torch.no_grad():
            # layer scale starts at 1e-6: give every block a visible share, as a trained network has
            for name, p in model.named_parameters():
                if name.endswith(("gamma", "gamma_xca")):
                    p.fill_(0.5)
            expected = model(images)
        for name, saved in ((f"edgeface_{variant}.pt", model.state_dict()),
                            (f"ddp_{variant}.pt", {f"module.{k}": v for k, v in model.state_dict().items()})):
            torch.save(saved, tmp_path / name)
            loaded = load_edgeface(tmp_path / name)
            assert loaded.config == {"variant": variant, "embedding_size": 512, "resolution": 112}, name
            assert not loaded.training
            with torch.no_grad():
                assert torch.equal(loaded(images), expected), name


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_file_that_is_not_an_edgeface_checkpoint_is_refused_by_name(tmp_path):
    state = EdgeFace("xs_gamma_06").state_dict()
    qkv = "model.stages.2.blocks.8.xca.qkv.linear1.weight"
    cases = {
        "renamed.pt": ({(k.replace("xca.qkv", "xca.qkv9") if k == qkv else k): v for k, v in state.items()},
                       r"renamed.pt: not an EdgeFace xs_gamma_06 checkpoint: missing model.stages.2.blocks.8.xca.qkv."
                       r"linear1.weight; unexpected model.stages.2.blocks.8.xca.qkv9.linear1.weight; pass a published"),
        "shape.pt": ({**state, qkv: torch.zeros(7, 100)}, r"shape.pt: .*wrong shape model.stages.2.blocks.8.xca.qkv"),
        "nan.pt": ({**state, qkv: torch.full_like(state[qkv], math.nan)}, r"nan.pt: NaN or infinite values in "),
        "stem.pt": ({**state, "model.stem.0.weight": torch.zeros(40, 3, 4, 4)},
                    r"stem.pt: a 40-channel stem with low-rank layers matches no EdgeFace variant"),
        "mobilefacenet.pt": (MobileFaceNet(16, 0.25, 32).state_dict(),
                             r"mobilefacenet.pt: no model.stem.0.weight / model.head.fc tensor: not an EdgeFace"),
        "list.pt": ([1, 2, 3], r"list.pt: not a state dict of tensors"),
    }
    for name, (saved, message) in cases.items():
        torch.save(saved, tmp_path / name)
        with pytest.raises(DataError, match=message):
            load_edgeface(tmp_path / name)
    marker = tmp_path / "ran"
    torch.save({"model.stem.0.weight": torch.zeros(1), "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(DataError, match=r"evil.pt: cannot be read as a PyTorch weights file with weights_only=True"):
        load_edgeface(tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(FileNotFoundError, match="missing.pt: no such file"):
        load_edgeface(tmp_path / "missing.pt")


def test_edgeface_path_is_a_face_analysis_recogniser(tmp_path, faces_dir):
    """``edgeface:PATH`` anywhere a recogniser is named (``FaceAnalyzer.from_backend``: eval, the synth filter,
    a forgetting run's teacher): faces aligned to 112 px, RGB in [-1, 1]."""
    pytest.importorskip("dlib")
    from idgen.faces import FaceAnalyzer, align_face, load_image
    from idgen.models import to_tensor

    torch.manual_seed(0)
    model = EdgeFace("xxs").eval()
    torch.save(model.state_dict(), tmp_path / "edgeface_xxs.pt")
    analyzer = FaceAnalyzer.from_backend("dlib", f"edgeface:{tmp_path / 'edgeface_xxs.pt'}")
    photo = sorted(faces_dir.iterdir())[0]
    face = analyzer.get_face(photo)
    with torch.no_grad():
        expected = model(to_tensor(align_face(load_image(photo), face.landmarks, 112)[None]))[0].numpy()
    assert analyzer.recognizer.embedding_size == 512 and np.allclose(face.embedding, expected, atol=1e-5)


# --- training ---------------------------------------------------------------------------------------

def test_the_edgeface_training_options_are_checked():
    from idgen.cli import build_parser
    from idgen.cli.recognizer import train_config
    from idgen.recognition import RECIPES, EdgeFaceRecipe, IResNetRecipe

    assert RECIPES["edgeface"] is EdgeFaceRecipe
    config = EdgeFaceRecipe(data="d", output_dir="o")
    assert (config.variant, config.embedding_size, config.resolution, config.head) == ("xs_gamma_06", 512, 112, "arcface")
    assert config.embedding_network and config.network_arguments() == {"variant": "xs_gamma_06", "embedding_size": 512,
                                                                       "resolution": 112}
    with pytest.raises(ConfigError, match="EdgeFace variant 'm': use one of") as error:
        EdgeFaceRecipe(data="d", output_dir="o", variant="m")
    assert error.value.key == "variant"
    with pytest.raises(ConfigError, match="resolution 16: EdgeFace takes crops of at least 32 pixels") as error:
        EdgeFaceRecipe(data="d", output_dir="o", resolution=16)
    assert error.value.key == "resolution"
    with pytest.raises(TypeError, match="unexpected keyword argument 'width'"):
        EdgeFaceRecipe(data="d", output_dir="o", width=0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'variant'"):
        IResNetRecipe(data="d", output_dir="o", variant="xxs")

    def parse(*argv):
        return train_config(build_parser().parse_args(["recognizer", "train", "--data", "d", "--output-dir", "o", *argv]))

    assert parse("--architecture", "edgeface", "--variant", "xxs") == EdgeFaceRecipe(data="d", output_dir="o", variant="xxs")
    with pytest.raises(ConfigError, match="--width: not an option of --architecture edgeface"):
        parse("--architecture", "edgeface", "--width", "0.5")
    with pytest.raises(ConfigError, match="--variant: not an option of --architecture iresnet"):
        parse("--architecture", "iresnet", "--variant", "xxs")


# --- GS-LoRA --------------------------------------------------------------------------------------------

def test_gs_lora_puts_one_group_on_the_mlp_of_every_transformer_style_block():
    from idgen.unlearn import add_task_lora, find_ffn_linears, lora_groups

    model = EdgeFaceClassifier(EdgeFaceClassifierConfig("xs_gamma_06", 32, num_classes=3))
    blocks = find_ffn_linears(model)
    assert list(blocks) == ["model.stages.1.blocks.2", "model.stages.2.blocks.8", "model.stages.3.blocks.2"]
    assert blocks["model.stages.2.blocks.8"] == [f"model.stages.2.blocks.8.mlp.{fc}.{part}"
                                                 for fc in ("fc1", "fc2") for part in ("linear1", "linear2")]
    peft_model, blocks = add_task_lora(model, "task0", rank=2)
    groups = lora_groups(model, blocks, "task0")
    assert [g.name for g in groups] == list(blocks) and all(len(g.parameters) == 8 for g in groups)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".mlp.fc" in n and "lora_" in n for n in trainable)


def _toy_folder(tmp_path, people: int = 4, per_person: int = 6):
    generator = np.random.default_rng(0)
    for person in range(people):
        folder = tmp_path / "faces" / f"person{person}"
        folder.mkdir(parents=True)
        base = generator.integers(0, 256, (32, 32, 3))
        for i in range(per_person):
            noisy = np.clip(base + generator.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"{i}.png")
    return tmp_path / "faces"


def test_idgen_forget_edits_an_edgeface_classifier_with_one_group_per_block(tmp_path):
    from idgen.faces.trained import TrainedRecognizer
    from idgen.unlearn import run_forgetting

    config = {
        "data": {"root": str(_toy_folder(tmp_path)), "align": "resize", "resolution": 32, "test_fraction": 0.34},
        "model": {"path": str(tmp_path / "base"), "architecture": "edgeface", "variant": "xxs",
                  "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "warmup_epochs": 1}},
        "forget": {"epochs": 2, "batch_size": 8, "forget_batch_size": 4, "lora": {"rank": 2}},
        "baselines": {"methods": ["retrain"]},
        "output_dir": str(tmp_path / "out"),
    }
    report = run_forgetting(config)
    (task,) = report["methods"]["gs-lora"]
    assert task["num_groups"] == 3 and len(task["group_norms"]) == 3   # xxs: stages 2-4 end in one such block each
    assert set(task["group_norms"]) == {"model.stages.1.blocks.1", "model.stages.2.blocks.5", "model.stages.3.blocks.1"}
    assert report["base"]["model_config"]["variant"] == "xxs"
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["architecture"] == "edgeface" and saved["classifier"]["num_classes"] == 4
    edited = TrainedRecognizer(tmp_path / "out" / "model")   # the edited classifier is a recogniser too
    assert isinstance(edited.model, EdgeFaceClassifier) and edited.embed(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 512)
    assert run_forgetting({**config, "output_dir": str(tmp_path / "again")})["base"]["trained"] is False
    with pytest.raises(ConfigError, match=r"base holds an EdgeFace xxs, not the s_gamma_05 model.variant names"):
        run_forgetting({**config, "model": {**config["model"], "variant": "s_gamma_05"},
                        "output_dir": str(tmp_path / "other")})
    with pytest.raises(FileNotFoundError, match=r"base holds a edgeface recogniser, not a Face Transformer"):
        run_forgetting({**config, "model": {**config["model"], "architecture": "face-transformer", "preset": "cpu-tiny"},
                        "output_dir": str(tmp_path / "ft")})


def test_a_forgetting_config_names_a_wrong_architecture_variant_or_size(tmp_path):
    from idgen.unlearn import RunConfig

    good = {"data": {"root": str(tmp_path), "resolution": 32}, "model": {"path": str(tmp_path / "m"),
            "architecture": "edgeface"}, "output_dir": str(tmp_path / "o")}
    assert RunConfig.from_dict(good).model.variant == "xs_gamma_06"
    with pytest.raises(ConfigError, match="model.architecture: 'iresnet' is not one forgetting edits"):
        RunConfig.from_dict(good, ["model.architecture=iresnet"])
    with pytest.raises(ConfigError, match="model.variant: unknown EdgeFace variant 'tiny'"):
        RunConfig.from_dict(good, ["model.variant=tiny"])
    with pytest.raises(ConfigError, match="data.resolution: resolution 40: EdgeFace takes crops whose side is a multiple"):
        RunConfig.from_dict(good, ["data.resolution=40"])
