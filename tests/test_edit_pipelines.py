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


# ---------------------------------------------------------------------------- InfiniteYou-style (FLUX)
FLUX_KPS = [(10, 12), (22, 12), (16, 18), (11, 24), (21, 24)]  # a frontal face in a 32×32 image


@pytest.fixture(scope="module")
def infiniteyou():
    from idgen.testing.tiny_infiniteyou import tiny_infiniteyou

    return tiny_infiniteyou()


def flux_identity(seed=0):
    return 20 * torch.randn(1, 512, generator=gen(seed))   # raw: the pipeline normalises it


def flux_run(pipe, seed=0, **kwargs):
    kwargs = {"id_embeds": flux_identity(), "height": 32, "width": 32, "num_inference_steps": STEPS,
              "guidance_scale": 3.5, **kwargs}
    return pipe("a portrait", generator=gen(seed), **kwargs).images


def test_infiniteyou_variants_give_infusenet_alone_the_identity_along_the_text_to_image_schedule(infiniteyou):
    from idgen.pipelines import InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline

    seen = {}

    def transformer_hook(name):
        def hook(_module, _args, kwargs):
            seen.setdefault((name, "transformer"), kwargs["encoder_hidden_states"].clone())
            seen.setdefault((name, "timesteps"), []).append(float(kwargs["timestep"][0]))
        return hook

    def infusenet_hook(name):  # a forward hook sees the kwargs after InfiniteYou's own pre-hook
        def hook(_module, _args, kwargs, _output):
            seen.setdefault((name, "infusenet"), (kwargs["encoder_hidden_states"].clone(),
                                                  kwargs["txt_ids"].clone(), kwargs["controlnet_cond"].clone()))
        return hook

    runs = {
        "text_to_image": (infiniteyou, {}),
        "img2img": (variant(InfiniteYouImg2ImgPipeline, infiniteyou), {"image": photo(32, 32), "strength": 0.5}),
        "inpaint": (variant(InfiniteYouInpaintPipeline, infiniteyou),
                    {"image": photo(32, 32), "mask_image": box_mask(32, 32), "strength": 0.75}),
    }
    for name, (pipe, extra) in runs.items():
        assert pipe.identity_projection is infiniteyou.identity_projection  # from_pipe shares it
        handles = [pipe.transformer.register_forward_pre_hook(transformer_hook(name), with_kwargs=True),
                   pipe.controlnet.register_forward_hook(infusenet_hook(name), with_kwargs=True)]
        try:
            flux_run(pipe, keypoints=FLUX_KPS, output_type="latent", **extra)
        finally:
            for handle in handles:
                handle.remove()
    tokens = infiniteyou.identity_tokens(torch.nn.functional.normalize(flux_identity(), dim=-1))
    with torch.no_grad():
        text = infiniteyou.encode_prompt("a portrait", None, max_sequence_length=512)[0]
    schedule = seen[("text_to_image", "timesteps")]
    assert len(schedule) == STEPS
    # strength s runs the last s·STEPS steps of the text-to-image schedule
    assert seen[("img2img", "timesteps")] == schedule[STEPS // 2:]
    assert seen[("inpaint", "timesteps")] == schedule[STEPS // 4:]
    reference_cond = seen[("text_to_image", "infusenet")][2]
    for name in runs:
        states, ids, cond = seen[(name, "infusenet")]
        torch.testing.assert_close(states, tokens)
        assert not ids.any()
        torch.testing.assert_close(seen[(name, "transformer")], text)   # FLUX itself reads only the text
        assert cond.shape == reference_cond.shape


def test_infiniteyou_variants_at_infusenet_scale_zero_are_diffusers_own(infiniteyou):
    """With InfuseNet's residuals scaled to 0, the variants compute exactly what diffusers' stock
    Flux ControlNet img2img / inpaint pipelines compute from the same components, seed and inputs."""
    from diffusers import FluxControlNetImg2ImgPipeline, FluxControlNetInpaintPipeline
    from PIL import Image as PILImage

    from idgen.pipelines import InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline

    black = PILImage.new("RGB", (32, 32))   # InfiniteYou's condition image without a pose
    cases = [(InfiniteYouImg2ImgPipeline, FluxControlNetImg2ImgPipeline, {"image": photo(32, 32), "strength": 0.5},
              "np"),
             (InfiniteYouInpaintPipeline, FluxControlNetInpaintPipeline,
              {"image": photo(32, 32), "mask_image": box_mask(32, 32), "strength": 0.75}, "latent")]
    for ours_cls, stock_cls, extra, output_type in cases:
        ours = variant(ours_cls, infiniteyou)
        stock = stock_cls(**{k: v for k, v in infiniteyou.components.items()
                             if k in stock_cls._get_signature_keys(stock_cls)[0]})
        stock.set_progress_bar_config(disable=True)
        expected = stock("a portrait", control_image=black, controlnet_conditioning_scale=0.0, height=32, width=32,
                         num_inference_steps=STEPS, guidance_scale=3.5, generator=gen(), output_type=output_type,
                         **extra).images
        got = flux_run(ours, infusenet_conditioning_scale=0.0, output_type=output_type, **extra)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-6)
        acting = flux_run(ours, output_type=output_type, **extra)   # at scale 1 InfuseNet changes the result
        assert np.abs(np.asarray(acting) - np.asarray(expected)).max() > 1e-3, ours_cls.__name__


def test_infiniteyou_inpaint_changes_only_the_masked_latents(infiniteyou):
    from idgen.pipelines import InfiniteYouInpaintPipeline

    pipe = variant(InfiniteYouInpaintPipeline, infiniteyou)
    mask = box_mask(32, 32)
    a, b = (flux_run(pipe, id_embeds=flux_identity(seed), image=photo(32, 32), mask_image=mask, strength=1.0,
                     output_type="latent") for seed in (1, 2))
    # packed latents: 2×2 patches of the 16×16 latent grid (VAE factor 2), in row order
    inside = np.asarray(mask.resize((8, 8), Image.NEAREST)).reshape(-1) > 0
    difference = (a - b).abs()[0].amax(-1).numpy()
    assert difference[~inside].max() == 0 and difference[inside].max() > 1e-5


def test_infiniteyou_img2img_with_a_face_photo_and_one_without(infiniteyou, dlib_analyzer, faces_dir, tmp_path):
    import torch.nn.functional as F

    from idgen.errors import NoFaceError
    from idgen.pipelines import InfiniteYouImg2ImgPipeline
    from idgen.testing.tiny_infiniteyou import tiny_infiniteyou

    pipe = variant(InfiniteYouImg2ImgPipeline, tiny_infiniteyou(embedding_dim=128))   # dlib's 128-d embeddings
    pipe.set_face_analyzer(dlib_analyzer)
    face = faces_dir / "Aaron_Peirsol_0001.jpg"
    output = pipe("a portrait", face_images=face, pose_image=face, image=photo(32, 32), strength=0.5, height=32,
                  width=32, num_inference_steps=STEPS, generator=gen(), output_type="np")
    expected = F.normalize(torch.from_numpy(dlib_analyzer.get_face(face).embedding).float()[None], dim=-1)
    torch.testing.assert_close(output.id_embeds, expected)
    assert output.images.shape == (1, 32, 32, 3)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (128, 128), (90, 90, 90)).save(blank)
    with pytest.raises(NoFaceError, match="blank.png"):
        pipe("a portrait", face_images=blank, image=photo(32, 32), strength=0.5, height=32, width=32,
             num_inference_steps=STEPS)
