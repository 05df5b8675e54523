"""Drift test of the dependency stack: the seams where a new transformers / diffusers / peft release
can break idgen (e.g. a transformers release that refuses the installed peft), each run on tiny random
models built in code, in seconds.

Every failure names the installed versions, e.g. ``LoRA on the CLIP text encoder broke with
transformers 5.24.0, peft 0.21.2, diffusers 0.42.1, ...: ValueError: The version of PEFT ...``, so a
red run says which combination to bound in ``pyproject.toml`` (and ``constraints/ci.txt`` holds the
set CI tested).
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny matrices run fastest on one thread

ROOT = Path(__file__).resolve().parents[1]
#: The packages whose versions a failure names (the ones that meet at the seams below).
STACK = ("transformers", "peft", "diffusers", "accelerate", "huggingface_hub", "torch")


def stack_versions(*more: str) -> str:
    """``transformers 5.23.0, peft 0.21.2, ...`` for the installed :data:`STACK` (and ``more``)."""
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return ", ".join(f"{name} {version(name)}" for name in (*STACK, *more))


@contextmanager
def seam(what: str, *more: str):
    """Re-raise any failure inside as one that names ``what`` and the installed versions of
    :data:`STACK` and of ``more``."""
    try:
        yield
    except Exception as error:  # AssertionError included: a wrong result is a broken seam too
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        pytest.fail(f"{what} broke with {stack_versions(*more)}: {type(error).__name__}: {message}")


# ---------------------------------------------------------------- declared bounds
def _declared_requirements():
    """``pyproject.toml``'s requirements as ``(Requirement, optional)``, without idgen's own extras."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = [(Requirement(text), False) for text in project["dependencies"]]
    for texts in project.get("optional-dependencies", {}).values():
        out += [(Requirement(text), True) for text in texts]
    return [(req, optional) for req, optional in out if req.name != "idgen"]


def test_installed_versions_are_within_the_declared_bounds():
    """What is installed satisfies pyproject.toml (an optional package only when it is installed)."""
    outside = []
    for req, optional in _declared_requirements():
        try:
            installed = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            if not optional:
                outside.append(f"{req.name} is not installed (needs {req.specifier})")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            outside.append(f"{req.name} {installed} is outside {req.specifier}")
    assert not outside, f"with {stack_versions()}: " + "; ".join(outside)


def test_transformers_accepts_the_installed_peft():
    """transformers checks peft against its own ``MIN_PEFT_VERSION`` (not in its metadata, so pip does
    not see it): 5.24 raised it to 0.22 while the newest peft on PyPI was 0.21.2."""
    from packaging.version import Version
    from transformers.integrations import peft as transformers_peft

    needed = getattr(transformers_peft, "MIN_PEFT_VERSION", "0")
    installed = importlib.metadata.version("peft")
    assert Version(installed) >= Version(needed), (
        f"transformers {importlib.metadata.version('transformers')} needs peft >= {needed}, peft {installed} "
        f"is installed ({stack_versions()}): bound transformers in pyproject.toml")


@pytest.mark.parametrize("module", [
    "torch", "transformers", "diffusers", "peft", "accelerate", "safetensors", "numpy", "onnxruntime",
    "insightface.model_zoo", "gradio", "idgen.pipelines", "idgen.training.lora", "idgen.unlearn.lora",
    "idgen.unlearn.generator", "idgen.demo",
])
def test_the_stack_imports(module):
    distribution = {"insightface.model_zoo": "insightface", "gradio": "gradio", "numpy": "numpy",
                    "onnxruntime": "onnxruntime", "safetensors": "safetensors"}.get(module)
    with seam(f"import {module}", *([distribution] if distribution else [])):
        importlib.import_module(module)


# ---------------------------------------------------------------- tiny models
def _pipe():
    from tiny_sd import tiny_pipeline

    return tiny_pipeline(seed=0)


def _identities(pipe, n=2, seed=0):
    from idgen.identity import random_identities

    return 3.0 * random_identities(n, pipe.text_encoder.config.hidden_size, generator=torch.Generator().manual_seed(seed))


def _randomize_lora_b(model, seed=0):
    """peft starts B at zero (the adapter changes nothing); give it weights so the LoRA shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))


def _tokens(pipe):
    from idgen.pipelines.pipeline_arc2face import ARC2FACE_PROMPT

    return pipe.tokenizer([ARC2FACE_PROMPT], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                          return_tensors="pt").input_ids


# ---------------------------------------------------------------- seams
def test_text_encoder_lora_from_add_adapter_round_trips_through_load_lora_weights(tmp_path):
    """A LoRA added with transformers' peft integration (``add_adapter``, as idgen.training and the
    generator-forgetting code do), written by idgen's diffusers-format writer and read back with the
    pipeline's ``load_lora_weights``, gives the adapted text encoder's outputs."""
    from peft import LoraConfig

    from idgen.training.lora import save_lora_weights

    pipe = _pipe()
    tokens = _tokens(pipe)
    with torch.no_grad():
        base_text = pipe.text_encoder(tokens)[0]
    with seam("LoRA on the CLIP text encoder (transformers' add_adapter)"):
        text_encoder, unet = copy.deepcopy(pipe.text_encoder), copy.deepcopy(pipe.unet)
        text_encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"]))
        _randomize_lora_b(text_encoder, seed=1)
        _randomize_lora_b(unet, seed=2)
        with torch.no_grad():
            adapted_text = text_encoder(tokens)[0]
        assert (adapted_text - base_text).abs().max() > 1e-3, "the adapter does not change the text encoder"
    with seam("saving a text-encoder LoRA (idgen.training.lora.save_lora_weights)"):
        path = save_lora_weights(tmp_path / "lora", unet, text_encoder)
        assert path.is_file()
    with seam("LoRA on the CLIP text encoder (pipe.load_lora_weights of a saved adapter)"):
        pipe.load_lora_weights(tmp_path / "lora", adapter_name="drift")
        assert "drift" in getattr(pipe.text_encoder, "peft_config", {}), "no adapter on the text encoder"
        with torch.no_grad():
            torch.testing.assert_close(pipe.text_encoder(tokens)[0], adapted_text, rtol=1e-4, atol=1e-5)


def test_load_lora_weights_puts_a_lora_file_on_the_text_encoder(tmp_path):
    """A text-encoder LoRA file in diffusers' format (random A, B on ``q_proj`` / ``v_proj``, no
    transformers involved in writing it) loaded with ``pipe.load_lora_weights``: the text encoder
    becomes ``W + B·A`` on those layers, :meth:`encode_identity` uses it, ``lora_scale`` scales it for
    one call only, and ``unload_lora_weights`` restores the base."""
    from diffusers import StableDiffusionPipeline

    pipe = _pipe()
    ids, tokens = _identities(pipe), _tokens(pipe)
    with torch.no_grad():
        base_cond = pipe.encode_identity(ids)
    g = torch.Generator().manual_seed(3)
    layers, merged = {}, copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        for name, module in merged.named_modules():
            if name.rsplit(".", 1)[-1] in ("q_proj", "v_proj"):
                a = 0.3 * torch.randn(4, module.in_features, generator=g)
                b = 0.3 * torch.randn(module.out_features, 4, generator=g)
                layers[f"{name}.lora_A.weight"], layers[f"{name}.lora_B.weight"] = a, b
                module.weight += b @ a  # no alpha in the file: alpha = rank, scale 1
        expected_text = merged(tokens)[0]
    StableDiffusionPipeline.save_lora_weights(tmp_path, text_encoder_lora_layers=layers, safe_serialization=True)
    with seam("LoRA on the CLIP text encoder (pipe.load_lora_weights of a LoRA file)"):
        pipe.load_lora_weights(tmp_path, adapter_name="file")
        with torch.no_grad():
            torch.testing.assert_close(pipe.text_encoder(tokens)[0], expected_text, rtol=1e-4, atol=1e-5)
            with_lora = pipe.encode_identity(ids)
            half = pipe.encode_identity(ids, lora_scale=0.5)
            again = pipe.encode_identity(ids)
        assert (with_lora - base_cond).abs().max() > 1e-3, "encode_identity ignores the text-encoder LoRA"
        assert (half - with_lora).abs().max() > 1e-4 and (half - base_cond).abs().max() > 1e-4, "lora_scale is ignored"
        torch.testing.assert_close(again, with_lora)  # the scale was for that one call
    with seam("unloading a text-encoder LoRA (pipe.unload_lora_weights)"):
        pipe.unload_lora_weights()
        with torch.no_grad():
            torch.testing.assert_close(pipe.encode_identity(ids), base_cond)


def test_peft_target_parameters_puts_a_lora_on_a_named_weight():
    """peft's ``LoraConfig(target_parameters=...)`` (GS-LoRA's ``forget.lora.target_parameters``): the
    named weight gets a LoRA, and merged it is exactly ``W + B·A`` (``lora_alpha == r``)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("body", nn.Linear(8, 8))
    model.add_module("head", nn.Linear(8, 3))
    base_head = model.head.weight.detach().clone()
    x = torch.randn(4, 8)
    with seam("peft LoraConfig(target_parameters=...)"):
        config = LoraConfig(r=2, lora_alpha=2, lora_dropout=0.0, target_modules=["body"],
                            target_parameters=["head.weight"])
        peft_model = get_peft_model(model, config, adapter_name="t0")
        named = dict(peft_model.named_parameters())
        [a_name] = [n for n in named if "head" in n and "lora_A" in n]
        [b_name] = [n for n in named if "head" in n and "lora_B" in n]
        a, b = named[a_name], named[b_name]
        assert a.shape == (2, 8) and b.shape == (3, 2), (a.shape, b.shape)
        with torch.no_grad():
            b.copy_(torch.randn_like(b))
            expected = base_head + b @ a
            with_lora = peft_model(x)
        merged = peft_model.merge_and_unload()
        torch.testing.assert_close(merged.head.weight.detach(), expected, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(merged(x), with_lora, rtol=1e-4, atol=1e-5)


def test_load_ip_adapter_reads_a_faceid_checkpoint(tmp_path):
    """diffusers' ``load_ip_adapter`` on an IP-Adapter FaceID payload in its published key layout
    (idgen.pipelines.faceid): the projection and the LoRA it carries go in, and the embedding steers
    the image."""
    from diffusers import StableDiffusionPipeline
    from tiny_models import faceid_state_dict, tiny_sd15_components

    dim = 128
    pipe = StableDiffusionPipeline(**tiny_sd15_components(tmp_path))
    pipe.set_progress_bar_config(disable=True)
    with seam("load_ip_adapter (IP-Adapter FaceID)"):
        pipe.load_ip_adapter(faceid_state_dict(pipe.unet, dim), subfolder=None,
                             weight_name="ip-adapter-faceid_sd15.bin", image_encoder_folder=None)
        assert "faceid_0" in pipe.unet.peft_config, "the checkpoint's LoRA was not loaded"

        def generate(seed):
            face = F.normalize(torch.randn(1, 1, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
            embeds = torch.cat([torch.zeros_like(face), face])  # negative first, as faceid_embeds lays it out
            return pipe("a photo of a person", ip_adapter_image_embeds=[embeds], num_inference_steps=1,
                        generator=torch.Generator().manual_seed(0), output_type="np").images

        first, second = generate(1), generate(2)
        assert first.shape == (1, 64, 64, 3)
        assert abs(first - second).max() > 1e-3, "the FaceID embedding does not change the image"


def test_encode_identity_hook_swaps_the_id_token_embedding():
    """:meth:`Arc2FacePipeline.encode_identity` puts the identity in place of the ``id`` token's input
    embedding through a forward hook on ``get_input_embeddings()``: the same as running the text
    encoder with that embedding row overwritten; the hook is gone afterwards."""
    pipe = _pipe()
    [identity] = _identities(pipe, n=1)
    tokens = _tokens(pipe)
    with seam("the text-encoder hook of Arc2FacePipeline.encode_identity"):
        with torch.no_grad():
            got = pipe.encode_identity(identity[None])
            reference = copy.deepcopy(pipe.text_encoder)
            width = reference.config.hidden_size
            row = F.pad(identity / identity.norm(), (0, width - identity.shape[-1]))
            reference.get_input_embeddings().weight[pipe.identity_token_id] = row
            expected = reference(tokens)[0]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        assert not pipe.text_encoder.get_input_embeddings()._forward_hooks, "the hook was left on"
        with torch.no_grad():
            plain = pipe.text_encoder(tokens)[0]
        assert (plain - got).abs().max() > 1e-3, "the identity did not reach the text encoder"
