"""diffusers' own generic pipeline tests, run against every idgen pipeline (opt-in).

``PipelineTesterMixin`` (save/load, signatures, batches, callbacks, dtypes, offload, slicing …), the
IP-Adapter, from_pipe and SD-function mixins live in diffusers' source repository
(``tests/pipelines/test_pipelines_common.py``), not in its wheel. Point ``IDGEN_DIFFUSERS_TESTS`` at a
diffusers checkout (of the release installed here or newer) with its test requirements importable
(``parameterized``, ``requests-mock``) to run them here on the tiny components of :mod:`idgen.testing`;
without it this module skips. ``tests/test_diffusers_conventions.py`` checks the same conventions with
no checkout, always.

Each skip below says why the test does not apply: it needs an accelerator (diffusers skips those on a
CPU by itself), or it exercises something the pipeline by design does not take.
"""

from __future__ import annotations

import os
import sys
import unittest

import numpy as np
import pytest
import torch
from PIL import Image

CHECKOUT = os.environ.get("IDGEN_DIFFUSERS_TESTS")
if not CHECKOUT:
    pytest.skip("set IDGEN_DIFFUSERS_TESTS to a diffusers source checkout to run diffusers' own pipeline tests",
                allow_module_level=True)
if not os.path.isfile(os.path.join(CHECKOUT, "tests", "pipelines", "test_pipelines_common.py")):
    pytest.fail(f"IDGEN_DIFFUSERS_TESTS={CHECKOUT} holds no tests/pipelines/test_pipelines_common.py; "
                "point it at the root of a diffusers git checkout", pytrace=False)
sys.path.insert(0, CHECKOUT)

from diffusers import StableDiffusionXLPipeline  # noqa: E402
from tests.pipelines.pipeline_params import (TEXT_TO_IMAGE_BATCH_PARAMS, TEXT_TO_IMAGE_CALLBACK_CFG_PARAMS,  # noqa: E402
                                             TEXT_TO_IMAGE_PARAMS)
from tests.pipelines.test_pipelines_common import (FluxIPAdapterTesterMixin, IPAdapterTesterMixin,  # noqa: E402
                                                   PipelineFromPipeTesterMixin, PipelineTesterMixin,
                                                   SDFunctionTesterMixin)

from idgen.pipelines import (Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline, Arc2FacePipeline,  # noqa: E402
                             InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline, InfiniteYouPipeline,
                             InstantIDImg2ImgPipeline, InstantIDInpaintPipeline, InstantIDPipeline)
from idgen.testing import tiny_arc2face, tiny_infiniteyou, tiny_instantid  # noqa: E402
from idgen.testing.tiny_arc2face import IMAGE_SIZE as ARC2FACE_SIZE, TEXT_WIDTH  # noqa: E402
from idgen.testing.tiny_infiniteyou import IMAGE_SIZE as INFINITEYOU_SIZE  # noqa: E402

INSTANTID_SIZE = 64
INSTANTID_EMBEDDING = 128
KEYPOINTS = [(18, 20), (46, 20), (32, 34), (20, 50), (44, 50)]  # a frontal face in a 64×64 image

pytestmark = pytest.mark.usefixtures("one_thread")


def identity(dim: int, seed: int) -> torch.Tensor:
    """One raw identity vector; batched by the mixins as a list of such vectors."""
    return 5.0 * torch.randn(dim, generator=torch.Generator().manual_seed(seed))


def photo(size: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def mask(size: int) -> Image.Image:
    pixels = np.zeros((size, size), np.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return Image.fromarray(pixels)


def generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def components_of(cls, pipe) -> dict:
    """The components of a tiny ``pipe`` that ``cls`` takes (FLUX's img2img / inpaint have no image encoder)."""
    modules, _ = cls._get_signature_keys(cls)
    return {name: component for name, component in pipe.components.items() if name in modules}


ENCODE_PROMPT_ALONE = ("diffusers finds the source of encode_prompt through diffusers.pipelines.<class name>, "
                       "where a pipeline from another package is not; idgen's prompt embeddings are checked "
                       "against diffusers' own in tests/test_edit_pipelines.py")
DEFAULT_ATTENTION = ("the test calls unet.set_default_attn_processor(), which replaces the face adapter's IP-Adapter "
                     "processors and drops their weights; InstantID refuses the next call with a clear error "
                     "(tests/test_diffusers_conventions.py checks the refusal)")


# ---------------------------------------------------------------------------- Arc2Face (SD 1.5)
class Arc2FaceSuite(SDFunctionTesterMixin, IPAdapterTesterMixin, PipelineFromPipeTesterMixin, PipelineTesterMixin,
                    unittest.TestCase):
    pipeline_class = Arc2FacePipeline
    # by design: the prompt is fixed and the identity is the only condition, so no prompt / prompt_embeds
    params = TEXT_TO_IMAGE_PARAMS - {"prompt", "prompt_embeds"}
    batch_params = frozenset({"id_embeds", "negative_prompt"})
    callback_cfg_params = TEXT_TO_IMAGE_CALLBACK_CFG_PARAMS

    def get_dummy_components(self):
        return {**components_of(self.pipeline_class, tiny_arc2face()), "requires_safety_checker": False}

    def get_dummy_inputs(self, device, seed=0):
        return {"id_embeds": identity(TEXT_WIDTH, seed), "generator": generator(seed), "num_inference_steps": 2,
                "guidance_scale": 3.0, "height": ARC2FACE_SIZE, "width": ARC2FACE_SIZE, "output_type": "np"}

    @unittest.skip(ENCODE_PROMPT_ALONE)
    def test_encode_prompt_works_in_isolation(self):
        pass

    @unittest.skip("by design: the test passes a prompt, which Arc2Face does not take (its prompt is fixed)")
    def test_vae_slicing(self):
        pass

    @unittest.skip("needs the hub (hf-internal-testing/tiny-stable-diffusion-torch)")
    def test_from_pipe_consistent_config(self):
        pass

    @unittest.skip("by design: the test calls the StableDiffusionPipeline it converts from with Arc2Face's "
                   "arguments, and those hold no prompt; tests/test_diffusers_conventions.py checks from_pipe")
    def test_from_pipe_consistent_forward_pass(self):
        pass


class Arc2FaceImg2ImgSuite(Arc2FaceSuite):
    pipeline_class = Arc2FaceImg2ImgPipeline
    params = Arc2FaceSuite.params - {"height", "width"} | {"image"}
    required_optional_params = PipelineTesterMixin.required_optional_params - {"latents"}  # as diffusers' img2img

    def get_dummy_inputs(self, device, seed=0):
        inputs = super().get_dummy_inputs(device, seed)
        return {**inputs, "image": photo(ARC2FACE_SIZE, seed), "strength": 0.8, "num_inference_steps": 3}


class Arc2FaceInpaintSuite(Arc2FaceImg2ImgSuite):
    pipeline_class = Arc2FaceInpaintPipeline
    params = Arc2FaceImg2ImgSuite.params | {"mask_image"}
    required_optional_params = PipelineTesterMixin.required_optional_params

    def get_dummy_inputs(self, device, seed=0):
        return {**super().get_dummy_inputs(device, seed), "mask_image": mask(ARC2FACE_SIZE)}


# ---------------------------------------------------------------------------- InstantID (SDXL)
class InstantIDSuite(SDFunctionTesterMixin, PipelineFromPipeTesterMixin, PipelineTesterMixin, unittest.TestCase):
    pipeline_class = InstantIDPipeline
    params = TEXT_TO_IMAGE_PARAMS
    batch_params = TEXT_TO_IMAGE_BATCH_PARAMS | {"id_embeds"}
    callback_cfg_params = TEXT_TO_IMAGE_CALLBACK_CFG_PARAMS | {"add_text_embeds", "add_time_ids"}
    original_pipeline_class = StableDiffusionXLPipeline  # the mixin guesses from "xl" in the class name

    def get_dummy_components(self):
        return components_of(self.pipeline_class, tiny_instantid(embedding_dim=INSTANTID_EMBEDDING))

    def get_dummy_inputs(self, device, seed=0):
        return {"prompt": "a portrait", "id_embeds": identity(INSTANTID_EMBEDDING, seed), "keypoints": KEYPOINTS,
                "generator": generator(seed), "num_inference_steps": 2, "guidance_scale": 5.0,
                "height": INSTANTID_SIZE, "width": INSTANTID_SIZE, "output_type": "np"}

    @unittest.skip("needs the hub (hf-internal-testing/tiny-stable-diffusion-xl-pipe)")
    def test_from_pipe_consistent_config(self):
        pass

    @unittest.skip("by design: the face adapter lives in the UNet (diffusers' IP-Adapter layers), and a plain "
                   "StableDiffusionXLPipeline on that UNet needs ip_adapter_image_embeds, which the test does not "
                   "pass; tests/test_diffusers_conventions.py checks from_pipe")
    def test_from_pipe_consistent_forward_pass(self):
        pass

    @unittest.skip(ENCODE_PROMPT_ALONE)
    def test_encode_prompt_works_in_isolation(self):
        pass

    @unittest.skip(DEFAULT_ATTENTION)
    def test_save_load_local(self):
        pass

    @unittest.skip(DEFAULT_ATTENTION)
    def test_inference_batch_single_identical(self):
        pass

    @unittest.skip(DEFAULT_ATTENTION)
    def test_dict_tuple_outputs_equivalent(self):
        pass

    @unittest.skip(DEFAULT_ATTENTION)
    def test_save_load_optional_components(self):
        pass

    @unittest.skip(DEFAULT_ATTENTION)
    def test_attention_slicing_forward_pass(self):
        pass

    @unittest.skip(DEFAULT_ATTENTION)
    def test_pipeline_with_accelerator_device_map(self):
        pass

    @unittest.skip("by design: fuse_qkv_projections leaves the face adapter's cross-attention layers on their "
                   "IP-Adapter processors (diffusers has no fused one), and the test wants every processor fused; "
                   "tests/test_diffusers_conventions.py checks that the images stay the same")
    def test_fused_qkv_projections(self):
        pass


class InstantIDImg2ImgSuite(InstantIDSuite):
    pipeline_class = InstantIDImg2ImgPipeline
    params = InstantIDSuite.params - {"height", "width"} | {"image"}
    required_optional_params = PipelineTesterMixin.required_optional_params - {"latents"}  # as diffusers' img2img

    def get_dummy_inputs(self, device, seed=0):
        inputs = super().get_dummy_inputs(device, seed)
        return {**inputs, "image": photo(INSTANTID_SIZE, seed), "strength": 0.8, "num_inference_steps": 3}


class InstantIDInpaintSuite(InstantIDImg2ImgSuite):
    pipeline_class = InstantIDInpaintPipeline
    params = InstantIDImg2ImgSuite.params | {"mask_image"}
    required_optional_params = PipelineTesterMixin.required_optional_params

    def get_dummy_inputs(self, device, seed=0):
        return {**super().get_dummy_inputs(device, seed), "mask_image": mask(INSTANTID_SIZE)}

    @unittest.skip("diffusers' own: StableDiffusionXLControlNetInpaintPipeline alone, on the same tiny components "
                   "and inputs, also ends 0.55 > 0.5 off with the tiny VAE's 32 px tiles (diffusers does not run "
                   "this mixin on that pipeline); idgen does not touch the VAE")
    def test_vae_tiling(self):
        pass


# ---------------------------------------------------------------------------- InfiniteYou (FLUX)
class InfiniteYouSuite(FluxIPAdapterTesterMixin, PipelineTesterMixin, unittest.TestCase):
    pipeline_class = InfiniteYouPipeline
    # as diffusers' own FluxControlNetPipeline tests
    params = frozenset({"prompt", "height", "width", "guidance_scale", "prompt_embeds", "pooled_prompt_embeds"})
    batch_params = frozenset({"prompt", "id_embeds"})
    test_layerwise_casting = True

    def get_dummy_components(self):
        return components_of(self.pipeline_class, tiny_infiniteyou())

    @unittest.skip(ENCODE_PROMPT_ALONE)
    def test_encode_prompt_works_in_isolation(self):
        pass

    def get_dummy_inputs(self, device, seed=0):
        return {"prompt": "a portrait", "id_embeds": identity(512, seed), "generator": generator(seed),
                "num_inference_steps": 2, "guidance_scale": 3.5, "height": INFINITEYOU_SIZE,
                "width": INFINITEYOU_SIZE, "output_type": "np"}


class InfiniteYouImg2ImgSuite(PipelineTesterMixin, unittest.TestCase):
    pipeline_class = InfiniteYouImg2ImgPipeline
    params = frozenset({"prompt", "image", "height", "width", "guidance_scale", "prompt_embeds",
                        "pooled_prompt_embeds", "strength"})
    batch_params = frozenset({"prompt", "id_embeds", "image"})
    required_optional_params = PipelineTesterMixin.required_optional_params - {"latents"}  # as diffusers' img2img
    test_layerwise_casting = True

    def get_dummy_components(self):
        return components_of(self.pipeline_class, tiny_infiniteyou())

    @unittest.skip(ENCODE_PROMPT_ALONE)
    def test_encode_prompt_works_in_isolation(self):
        pass

    def get_dummy_inputs(self, device, seed=0):
        return {"prompt": "a portrait", "id_embeds": identity(512, seed), "image": photo(INFINITEYOU_SIZE, seed),
                "strength": 0.8, "generator": generator(seed), "num_inference_steps": 3, "guidance_scale": 3.5,
                "height": INFINITEYOU_SIZE, "width": INFINITEYOU_SIZE, "output_type": "np"}


class InfiniteYouInpaintSuite(InfiniteYouImg2ImgSuite):
    pipeline_class = InfiniteYouInpaintPipeline
    params = InfiniteYouImg2ImgSuite.params | {"mask_image"}
    batch_params = InfiniteYouImg2ImgSuite.batch_params | {"mask_image"}
    required_optional_params = PipelineTesterMixin.required_optional_params

    def get_dummy_inputs(self, device, seed=0):
        return {**super().get_dummy_inputs(device, seed), "mask_image": mask(INFINITEYOU_SIZE)}

