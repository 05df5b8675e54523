"""The conventions diffusers' generic pipeline tests check, on all ten idgen pipelines (Arc2Face,
InstantID, InfiniteYou × text-to-image, img2img, inpaint; Arc2Face with its ControlNet) with the tiny components of
:mod:`idgen.testing`: the call signature lists the standard arguments, callbacks see and change the
denoising tensors, ``num_images_per_prompt`` and the three output types, save/load, ``from_pipe``,
attention settings, dtypes, layerwise casting on the CPU, dict vs tuple output, seeds.

``tests/test_diffusers_suite.py`` runs diffusers' own tests (from a diffusers checkout, opt-in); this
module needs no checkout. Left out, as there: float16, offload to an accelerator and xformers (they need
a GPU; model offload on the CPU is tested per pipeline).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from idgen.errors import IdgenError
from idgen.pipelines import (Arc2FaceControlNetPipeline, Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline, Arc2FacePipeline,
                             InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline, InfiniteYouPipeline,
                             InstantIDImg2ImgPipeline, InstantIDInpaintPipeline, InstantIDPipeline)
from idgen.testing import tiny_arc2face, tiny_infiniteyou, tiny_instantid
from idgen.testing.tiny_arc2face import TEXT_WIDTH, tiny_arc2face_controlnet

pytestmark = pytest.mark.usefixtures("one_thread")

KEYPOINTS = [(18, 20), (46, 20), (32, 34), (20, 50), (44, 50)]  # a frontal face in a 64×64 image
#: Arguments every diffusers pipeline takes, with defaults (diffusers' "required optional" ones and the callbacks).
STANDARD = frozenset({"num_inference_steps", "num_images_per_prompt", "generator", "output_type", "return_dict",
                      "guidance_scale", "callback_on_step_end", "callback_on_step_end_tensor_inputs"})


@dataclass(frozen=True)
class Case:
    """One pipeline class with its tiny components and the call arguments for ``n`` identities."""

    pipeline_class: type
    components: Callable[[], dict]
    size: int
    identity_dim: int
    prompt: bool            # takes a text prompt (Arc2Face's is fixed)
    extra: Callable[[int], dict]   # the pipeline's own arguments besides the identity (pose, photo, mask …)

    def pipe(self):
        names = set(inspect.signature(self.pipeline_class.__init__).parameters)  # FLUX's img2img has no image encoder
        pipe = self.pipeline_class(**{k: v for k, v in self.components().items() if k in names})
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def inputs(self, seed: int = 0, n: int = 1, **overrides) -> dict:
        ids = [5.0 * torch.randn(self.identity_dim, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)]
        inputs = {"id_embeds": ids[0] if n == 1 else ids, "num_inference_steps": 2, "output_type": "np",
                  "generator": torch.Generator().manual_seed(seed), **self.extra(self.size)}
        if self.prompt:
            inputs["prompt"] = "a portrait" if n == 1 else ["a portrait"] * n
        return {**inputs, **overrides}


def photo(size):
    return PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))


def mask(size):
    pixels = np.zeros((size, size), np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return PIL.Image.fromarray(pixels)


def sized(size):
    return {"height": size, "width": size}


def edited(size):
    return {"image": photo(size), "strength": 0.8, "num_inference_steps": 3}


def inpainted(size):
    return {**edited(size), "mask_image": mask(size), **sized(size)}


def arc2face_components():
    return {**tiny_arc2face().components, "requires_safety_checker": False}


def arc2face_controlnet_components():
    components = arc2face_components()
    return {**components, "controlnet": tiny_arc2face_controlnet(components["unet"])}


def instantid_components():
    return tiny_instantid(embedding_dim=TEXT_WIDTH).components


def infiniteyou_components():
    return tiny_infiniteyou().components


def posed(extra):
    return lambda size: {**extra(size), "keypoints": KEYPOINTS}


CASES = {
    "arc2face": Case(Arc2FacePipeline, arc2face_components, 32, TEXT_WIDTH, False, sized),
    "arc2face-img2img": Case(Arc2FaceImg2ImgPipeline, arc2face_components, 32, TEXT_WIDTH, False, edited),
    "arc2face-inpaint": Case(Arc2FaceInpaintPipeline, arc2face_components, 32, TEXT_WIDTH, False, inpainted),
    "arc2face-controlnet": Case(Arc2FaceControlNetPipeline, arc2face_controlnet_components, 32, TEXT_WIDTH, False,
                                lambda size: {**sized(size), "image": photo(size)}),
    "instantid": Case(InstantIDPipeline, instantid_components, 64, TEXT_WIDTH, True, posed(sized)),
    "instantid-img2img": Case(InstantIDImg2ImgPipeline, instantid_components, 64, TEXT_WIDTH, True, posed(edited)),
    "instantid-inpaint": Case(InstantIDInpaintPipeline, instantid_components, 64, TEXT_WIDTH, True, posed(inpainted)),
    # FLUX's img2img / inpaint resize the photo to height × width (1024 by default): always pass them
    "infiniteyou": Case(InfiniteYouPipeline, infiniteyou_components, 32, 512, True, sized),
    "infiniteyou-img2img": Case(InfiniteYouImg2ImgPipeline, infiniteyou_components, 32, 512, True,
                                lambda size: {**edited(size), **sized(size)}),
    "infiniteyou-inpaint": Case(InfiniteYouInpaintPipeline, infiniteyou_components, 32, 512, True, inpainted),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request) -> Case:
    return CASES[request.param]


def parent_call(cls):
    """The diffusers ``__call__`` behind the identity mixin."""
    return next(base.__dict__["__call__"] for base in cls.__mro__[1:]
                if base.__module__.startswith("diffusers") and "__call__" in base.__dict__)


# ---------------------------------------------------------------------------- signature
def test_signature_lists_the_parent_arguments_and_the_pipelines_own(case):
    parameters = inspect.signature(case.pipeline_class.__call__).parameters
    parent = set(inspect.signature(parent_call(case.pipeline_class)).parameters) - {"self", "kwargs"}
    hidden = parent - set(parameters) - case.pipeline_class.parent_arguments_taken
    assert not hidden, f"{case.pipeline_class.__name__}.__call__ hides {sorted(hidden)}"
    assert not any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    assert STANDARD <= set(parameters) and all(parameters[name].default is not inspect.Parameter.empty
                                               for name in STANDARD)
    assert {"id_embeds", "face_images"} <= set(parameters)
    if case.prompt:
        assert {"prompt", "prompt_embeds"} <= set(parameters)
    assert not case.pipeline_class.parent_arguments_taken & set(parameters)   # set by the mixin itself


# ---------------------------------------------------------------------------- callbacks
def test_callback_on_step_end_sees_every_tensor_it_asks_for_and_can_change_them(case):
    pipe = case.pipe()
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append(sorted(tensors))
        if step == pipeline.num_timesteps - 1:
            tensors["latents"] = torch.zeros_like(tensors["latents"])
        return tensors

    names = list(pipe._callback_tensor_inputs)
    latents = pipe(**case.inputs(output_type="latent", callback_on_step_end=callback,
                                 callback_on_step_end_tensor_inputs=names))[0]
    assert seen and all(keys == sorted(names) for keys in seen)
    assert len(seen) == pipe.num_timesteps
    assert latents.abs().sum() == 0


# ---------------------------------------------------------------------------- batches and outputs
def test_num_images_per_prompt_with_one_identity_per_prompt(case):
    pipe = case.pipe()
    images = pipe(**case.inputs(n=2, num_images_per_prompt=2)).images
    assert images.shape == (4, case.size, case.size, 3)
    assert np.abs(images[0] - images[2]).max() > 1e-4   # two identities, two images each


def test_output_types_np_pt_and_pil_hold_the_same_image(case):
    pipe = case.pipe()
    as_np = pipe(**case.inputs()).images
    as_pt = pipe(**case.inputs(output_type="pt")).images
    as_pil = pipe(**case.inputs(output_type="pil")).images
    assert as_np.shape == (1, case.size, case.size, 3) and as_pt.shape == (1, 3, case.size, case.size)
    assert isinstance(as_pil[0], PIL.Image.Image) and as_pil[0].size == (case.size, case.size)
    np.testing.assert_allclose(as_pt.numpy().transpose(0, 2, 3, 1), as_np, atol=1e-6)
    assert np.abs(np.asarray(as_pil[0], np.float32) - (as_np[0] * 255).round()).max() <= 1


def test_dict_and_tuple_outputs_are_equal(case):
    pipe = case.pipe()
    output = pipe(**case.inputs())
    as_tuple = pipe(**case.inputs(), return_dict=False)
    fields = [getattr(output, field.name) for field in dataclasses.fields(output)]
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(fields)
    for from_tuple, from_dict in zip(as_tuple, fields):
        if from_dict is None:
            assert from_tuple is None
        else:
            np.testing.assert_array_equal(np.asarray(from_tuple), np.asarray(from_dict))


def test_a_generator_fixes_the_images(case):
    pipe = case.pipe()
    first, again, other = (pipe(**case.inputs(generator=torch.Generator().manual_seed(seed))).images
                           for seed in (3, 3, 4))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


# ---------------------------------------------------------------------------- saving, from_pipe
def test_save_pretrained_and_from_pretrained_give_back_the_same_pipeline(case, tmp_path):
    pipe = case.pipe()
    expected = pipe(**case.inputs()).images
    pipe.save_pretrained(tmp_path, safe_serialization=True)
    loaded = case.pipeline_class.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            original, reloaded = component.state_dict(), getattr(loaded, name).state_dict()
            assert original.keys() == reloaded.keys(), name
            assert all(torch.equal(original[key], reloaded[key]) for key in original), name
    # bit-identical weights; the images agree to float round-off (a loaded CLIP may run another kernel)
    np.testing.assert_allclose(loaded(**case.inputs()).images, expected, atol=1e-5)


def test_from_pipe_shares_the_components_and_leaves_the_source_as_it_was(case):
    """Each pipeline turns into its siblings (text-to-image, img2img, inpaint of the same family, and for
    Arc2Face the ControlNet one, given its ControlNet)."""
    source = case.pipe()
    before = source(**case.inputs()).images
    family = case.pipeline_class.__mro__[1]   # the identity mixin
    siblings = [other for other in CASES.values() if issubclass(other.pipeline_class, family) and other is not case]
    assert len(siblings) >= 2
    for sibling in siblings:
        names = set(inspect.signature(sibling.pipeline_class.__init__).parameters)
        missing = {k: v for k, v in sibling.components().items() if k in names and k not in source.components}
        other = sibling.pipeline_class.from_pipe(source, **missing)
        other.set_progress_bar_config(disable=True)
        assert all(getattr(other, name) is component for name, component in source.components.items()
                   if isinstance(component, torch.nn.Module) and name in other.components)
        assert np.isfinite(other(**sibling.inputs()).images).all()
    np.testing.assert_array_equal(source(**case.inputs()).images, before)


# ---------------------------------------------------------------------------- attention settings
def test_attention_slicing_and_fused_projections_keep_the_images(case):
    pipe = case.pipe()
    expected = pipe(**case.inputs()).images
    pipe.enable_attention_slicing(slice_size=1)
    np.testing.assert_allclose(pipe(**case.inputs()).images, expected, atol=1e-5)
    pipe.disable_attention_slicing()
    np.testing.assert_allclose(pipe(**case.inputs()).images, expected, atol=1e-5)
    if hasattr(pipe, "fuse_qkv_projections"):   # diffusers' SD / SDXL pipelines; FLUX ControlNet's have none
        pipe.fuse_qkv_projections()
        np.testing.assert_allclose(pipe(**case.inputs()).images, expected, atol=1e-4)
        pipe.unfuse_qkv_projections()
        np.testing.assert_allclose(pipe(**case.inputs()).images, expected, atol=1e-5)


def test_default_attention_processor_works_or_is_refused_clearly(case):
    pipe = case.pipe()
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    if not hasattr(denoiser, "set_default_attn_processor"):
        pytest.skip(f"{type(denoiser).__name__} has no set_default_attn_processor in diffusers")
    expected = pipe(**case.inputs()).images
    denoiser.set_default_attn_processor()
    if hasattr(pipe, "load_instantid_adapter"):
        # it drops the face adapter's IP-Adapter processors (and their weights)
        with pytest.raises(IdgenError, match="lost the face adapter"):
            pipe(**case.inputs())
        return
    assert all(type(p) is AttnProcessor for p in denoiser.attn_processors.values())
    np.testing.assert_allclose(pipe(**case.inputs()).images, expected, atol=1e-5)


# ---------------------------------------------------------------------------- dtypes
def test_to_dtype_reaches_every_component_and_components_are_the_init_arguments(case):
    pipe = case.pipe()
    expected, _ = case.pipeline_class._get_signature_keys(case.pipeline_class)
    assert set(pipe.components) == set(expected)
    pipe.to(dtype=torch.bfloat16)
    modules = {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}
    assert modules and all(c.dtype == torch.bfloat16 for c in modules.values()), \
        {name: c.dtype for name, c in modules.items()}


def test_layerwise_casting_runs_on_the_cpu(case):
    """float8 storage, bfloat16 compute in the denoiser, as diffusers' test does."""
    pipe = case.pipe()
    pipe.to(dtype=torch.bfloat16)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    denoiser.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    images = pipe(**case.inputs()).images
    assert images.shape == (1, case.size, case.size, 3) and np.isfinite(images).all()
