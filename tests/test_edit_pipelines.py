"""Arc2Face img2img / inpaint pipelines on tiny random SD 1.5-shaped components: the same
conditioning as the text-to-image pipeline, and diffusers' own img2img / inpaint behaviour."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from PIL import Image
from tiny_sd import IMAGE_SIZE, TEXT_WIDTH, tiny_pipeline

from idgen.identity import random_identities
from idgen.pipelines import Arc2FaceImg2ImgPipeline, Arc2FaceInpaintPipeline

STEPS = 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def text_to_image():
    return tiny_pipeline(seed=3)


def identity(seed=0):
    return 3.0 * random_identities(1, TEXT_WIDTH, generator=torch.Generator().manual_seed(seed))


def photo(width=IMAGE_SIZE, height=IMAGE_SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(width=IMAGE_SIZE, height=IMAGE_SIZE):
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 255
    return Image.fromarray(mask)


def negative_embeds(pipe):
    with torch.no_grad():
        empty = pipe.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
        return pipe.text_encoder(empty)[0]


def variant(cls, pipe):
    edit = cls.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    return edit


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_all_three_pipelines_feed_the_unet_the_same_identity_conditioning(text_to_image):
    seen = {}

    def record(name):
        def hook(_module, args, kwargs):
            seen.setdefault(name, kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None).clone())
        return hook

    ids = identity(1)
    runs = {
        "text_to_image": (text_to_image, {}),
        "img2img": (variant(Arc2FaceImg2ImgPipeline, text_to_image), {"image": photo(), "strength": 0.5}),
        "inpaint": (variant(Arc2FaceInpaintPipeline, text_to_image), {"image": photo(), "mask_image": box_mask()}),
    }
    for name, (pipe, extra) in runs.items():
        handle = pipe.unet.register_forward_pre_hook(record(name), with_kwargs=True)
        try:
            pipe(id_embeds=ids, num_inference_steps=STEPS, height=IMAGE_SIZE, width=IMAGE_SIZE, generator=gen(),
                 output_type="latent", **extra)
        finally:
            handle.remove()
    expected = torch.cat([negative_embeds(text_to_image), text_to_image.encode_identity(ids)])
    assert expected.shape == (2, 77, TEXT_WIDTH)
    for name in runs:
        assert torch.equal(seen[name], expected), name


def test_img2img_is_diffusers_img2img_with_the_identity_embeddings(text_to_image):
    ours_pipe = variant(Arc2FaceImg2ImgPipeline, text_to_image)
    stock = StableDiffusionImg2ImgPipeline(**text_to_image.components)
    stock.set_progress_bar_config(disable=True)
    ids, image = identity(2), photo(seed=2)
    steps_run = []
    ours = ours_pipe(id_embeds=ids, image=image, strength=0.5, num_inference_steps=STEPS, generator=gen(4),
                     output_type="np", callback_on_step_end=lambda p, i, t, k: steps_run.append(i) or k)
    with torch.no_grad():
        reference = stock(prompt_embeds=text_to_image.encode_identity(ids),
                          negative_prompt_embeds=negative_embeds(text_to_image), image=image, strength=0.5,
                          num_inference_steps=STEPS, guidance_scale=3.0, generator=gen(4), output_type="np")
    assert len(steps_run) == STEPS // 2  # strength 0.5 runs the last half of the schedule, as in diffusers
    assert ours.images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.abs(ours.images - reference.images).max() < 1e-5
    stronger = ours_pipe(id_embeds=ids, image=image, strength=1.0, num_inference_steps=STEPS, generator=gen(4),
                         output_type="np").images
    assert np.abs(stronger - ours.images).mean() > 1e-3


def test_inpaint_is_diffusers_inpaint_with_mask_and_padding_mask_crop(text_to_image):
    ours_pipe = variant(Arc2FaceInpaintPipeline, text_to_image)
    stock = StableDiffusionInpaintPipeline(**text_to_image.components)
    stock.set_progress_bar_config(disable=True)
    ids = identity(3)
    image, mask = photo(64, 48, seed=3), box_mask(64, 48)
    settings = dict(image=image, mask_image=mask, padding_mask_crop=4, strength=0.75, num_inference_steps=STEPS,
                    height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="pil")
    ours = ours_pipe(id_embeds=ids, generator=gen(5), **settings).images[0]
    with torch.no_grad():
        reference = stock(prompt_embeds=text_to_image.encode_identity(ids),
                          negative_prompt_embeds=negative_embeds(text_to_image), guidance_scale=3.0,
                          generator=gen(5), **settings).images[0]
    assert ours.size == image.size  # padding_mask_crop pastes the crop back into the full photo
    assert np.array_equal(np.asarray(ours), np.asarray(reference))
    other = ours_pipe(id_embeds=identity(4), generator=gen(5), **settings).images[0]
    assert np.abs(np.asarray(other, dtype=float) - np.asarray(ours, dtype=float)).mean() > 0.1


# ---------------------------------------------------------------------------- InstantID-style (SDXL)
SDXL_KPS = [(18, 20), (46, 20), (32, 34), (20, 50), (44, 50)]  # a frontal face in a 64×64 image


@pytest.fixture(scope="module")
def instantid(tmp_path_factory):
    from tiny_models import instantid_state_dict, tiny_sdxl_components

    from idgen.pipelines import InstantIDPipeline

    pipe = InstantIDPipeline(**tiny_sdxl_components(tmp_path_factory.mktemp("sdxl")))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, TEXT_WIDTH))
    return pipe


def test_instantid_variants_feed_unet_and_identitynet_the_text_to_image_conditioning(instantid):
    from idgen.pipelines import InstantIDImg2ImgPipeline, InstantIDInpaintPipeline

    face = 20 * torch.randn(TEXT_WIDTH, generator=torch.Generator().manual_seed(6))
    seen = {}

    def unet_hook(name):
        def hook(_module, _args, kwargs):
            seen.setdefault((name, "unet"), (kwargs["encoder_hidden_states"].clone(),
                                             kwargs["added_cond_kwargs"]["image_embeds"][0].clone()))
        return hook

    def controlnet_hook(name):  # a forward hook sees the kwargs after InstantID's own pre-hook
        def hook(_module, _args, kwargs, _output):
            seen.setdefault((name, "controlnet"), (kwargs["encoder_hidden_states"].clone(),
                                                   kwargs["controlnet_cond"].clone()))
        return hook

    runs = {
        "text_to_image": (instantid, {}),
        "img2img": (variant(InstantIDImg2ImgPipeline, instantid), {"image": photo(64, 64), "strength": 0.5}),
        "inpaint": (variant(InstantIDInpaintPipeline, instantid),
                    {"image": photo(64, 64), "mask_image": box_mask(64, 64), "strength": 0.99}),
    }
    steps_run = {}
    for name, (pipe, extra) in runs.items():
        handles = [pipe.unet.register_forward_pre_hook(unet_hook(name), with_kwargs=True),
                   pipe.controlnet.register_forward_hook(controlnet_hook(name), with_kwargs=True)]
        steps_run[name] = []
        try:
            pipe("a portrait", id_embeds=face, keypoints=SDXL_KPS, num_inference_steps=STEPS, height=64,
                 width=64, generator=gen(), output_type="latent",
                 callback_on_step_end=lambda p, i, t, k, name=name: steps_run[name].append(i) or k, **extra)
        finally:
            for handle in handles:
                handle.remove()
    assert steps_run["text_to_image"] == list(range(STEPS)) and len(steps_run["img2img"]) == STEPS // 2
    for part in ("unet", "controlnet"):
        reference = seen[("text_to_image", part)]
        for name in ("img2img", "inpaint"):
            for got, expected in zip(seen[(name, part)], reference):
                assert torch.equal(got, expected), (name, part)
    # the IdentityNet saw face tokens, not the text the UNet saw
    assert seen[("text_to_image", "controlnet")][0].shape[1] == 4 != seen[("text_to_image", "unet")][0].shape[1]


def test_instantid_inpaint_with_padding_mask_crop_returns_the_full_photo(instantid):
    from idgen.pipelines import InstantIDInpaintPipeline

    pipe = variant(InstantIDInpaintPipeline, instantid)
    face = 20 * torch.randn(TEXT_WIDTH, generator=torch.Generator().manual_seed(7))
    image = photo(96, 80, seed=8)
    out = pipe("a portrait", id_embeds=face, keypoints=SDXL_KPS, image=image, mask_image=box_mask(96, 80),
               padding_mask_crop=4, num_inference_steps=STEPS, height=64, width=64, generator=gen(),
               output_type="pil").images[0]
    assert out.size == image.size
