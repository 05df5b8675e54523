"""InfiniteYou on tiny random Flux parts: the published projection layout loads and computes what the
reference Resampler computes, the identity reaches InfuseNet and nothing else, and diffusers' own
features (scale 0, seeds, batches, save/load, LoRA, offload) keep working."""

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import FluxControlNetModel, FluxControlNetPipeline, FluxPipeline
from diffusers.models.controlnets.controlnet_flux import FluxMultiControlNetModel
from hostile_files import pickle_running_code

from idgen.errors import ConfigError, DataError, IdgenError, ModelFilesMissingError, NoFaceError
from idgen.pipelines import (InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline, InfiniteYouPipeline,
                             InfiniteYouProjection, convert_infiniteyou_projection, load_infiniteyou_pipeline)
from idgen.pipelines.keypoints import draw_keypoints
from idgen.pipelines.pipeline_infiniteyou import letterbox_keypoints, letterbox_size
from idgen.testing.tiny_infiniteyou import (FLUX_BLOCKS, IMAGE_SIZE, PROJECTION, infiniteyou_projection_state_dict,
                                            tiny_flux_components, tiny_infiniteyou)

STEPS = 2


def run(pipe, embedding=None, seed=0, **kwargs):
    kwargs.setdefault("id_embeds", embedding)
    return pipe("a photo of a person", height=IMAGE_SIZE, width=IMAGE_SIZE, num_inference_steps=STEPS,
                generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


def identity(seed=0, n=1):
    return torch.randn(n, 512, generator=torch.Generator().manual_seed(seed)) * 20  # raw, not unit length


@pytest.fixture(scope="module")
def pipe():
    return tiny_infiniteyou()


def reference_resampler(state, x, heads):
    """The original Resampler, written from its definition: perceiver attention over
    [inputs; latents] with the scale split between q and k, then a LayerNorm-GELU MLP, residuals."""
    def layer_norm(t, prefix):
        return F.layer_norm(t, t.shape[-1:], state[prefix + ".weight"], state[prefix + ".bias"])

    x = x[:, None] @ state["proj_in.weight"].T + state["proj_in.bias"]
    latents = state["latents"].repeat(len(x), 1, 1)
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    for i in range(depth):
        p = f"layers.{i}."
        xs, ls = layer_norm(x, p + "0.norm1"), layer_norm(latents, p + "0.norm2")
        q = ls @ state[p + "0.to_q.weight"].T
        k, v = (torch.cat([xs, ls], 1) @ state[p + "0.to_kv.weight"].T).chunk(2, -1)
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
        attention = torch.softmax((q * scale) @ (k * scale).transpose(-2, -1), -1) @ v
        latents = attention.transpose(1, 2).reshape(latents.shape[0], latents.shape[1], -1) @ state[p + "0.to_out.weight"].T + latents
        hidden = F.gelu(layer_norm(latents, p + "1.0") @ state[p + "1.1.weight"].T)
        latents = hidden @ state[p + "1.3.weight"].T + latents
    latents = latents @ state["proj_out.weight"].T + state["proj_out.bias"]
    return layer_norm(latents, "norm_out")


def test_projection_from_published_layout_matches_reference_resampler():
    state = infiniteyou_projection_state_dict(seed=3)["image_proj"]
    projection = InfiniteYouProjection.from_original_state_dict(state)
    assert dict(projection.config).items() >= {"hidden_dim": PROJECTION["dim"], "num_tokens": 8, "depth": PROJECTION["depth"],
                                               "embedding_dim": 512, "output_dim": FLUX_BLOCKS["joint_attention_dim"]}.items()
    x = F.normalize(torch.randn(3, 512), dim=-1)
    expected = reference_resampler(state, x, heads=PROJECTION["heads"])
    torch.testing.assert_close(projection(x), expected, atol=1e-5, rtol=1e-5)


def test_published_projection_size():
    """The published architecture holds 84,595,968 parameters: the 338 MB float32 image_proj_model.bin."""
    width, inner, mlp = 1280, 20 * 64, 4 * 1280
    per_layer = 4 * width + width * inner * 4 + 2 * width + 2 * width * mlp   # norms, q/kv/out, ff norm + MLP
    expected = 8 * width + 512 * width + width + 4 * per_layer + width * 4096 + 4096 + 2 * 4096
    with torch.device("meta"):
        projection = InfiniteYouProjection()
    assert sum(p.numel() for p in projection.parameters()) == expected == 84_595_968


def write_published_layout(root, seed=0):
    for offset, variant in enumerate(("aes_stage2", "sim_stage1")):
        folder = root / "infu_flux_v1.0" / variant
        folder.mkdir(parents=True)
        torch.save(infiniteyou_projection_state_dict(seed + offset), folder / "image_proj_model.bin")


def test_both_variants_load_from_a_folder_and_convert_to_safetensors(tmp_path):
    write_published_layout(tmp_path)
    x = F.normalize(torch.randn(2, 512), dim=-1)
    aes = InfiniteYouProjection.from_infiniteyou(tmp_path)
    sim = InfiniteYouProjection.from_infiniteyou(tmp_path, variant="sim_stage1")
    torch.testing.assert_close(aes(x), InfiniteYouProjection.from_original_state_dict(
        infiniteyou_projection_state_dict(0)["image_proj"])(x))
    assert (aes(x) - sim(x)).abs().max() > 1e-2

    convert_infiniteyou_projection(tmp_path / "infu_flux_v1.0/sim_stage1/image_proj_model.bin", tmp_path / "converted")
    assert (tmp_path / "converted" / "diffusion_pytorch_model.safetensors").is_file()
    torch.testing.assert_close(InfiniteYouProjection.from_pretrained(tmp_path / "converted")(x), sim(x))


def test_loading_refuses_pickled_code_missing_files_and_other_layouts(tmp_path):
    write_published_layout(tmp_path)
    with pytest.raises(ConfigError, match="unknown InfiniteYou variant"):
        InfiniteYouProjection.from_infiniteyou(tmp_path, variant="stage3")
    with pytest.raises(ModelFilesMissingError, match="image_proj_model.bin"):
        InfiniteYouProjection.from_infiniteyou(tmp_path / "infu_flux_v1.0")

    hostile = pickle_running_code(tmp_path / "infu_flux_v1.0" / "aes_stage2" / "image_proj_model.bin",
                                  tmp_path / "ran")
    with pytest.raises(DataError, match=r"image_proj_model.bin: cannot be read .* \(the pickle asks for (posix|os).system"):
        InfiniteYouProjection.from_infiniteyou(tmp_path)
    assert not (tmp_path / "ran").exists()

    torch.save({"image_proj": {"proj_in.weight": torch.zeros(4, 4)}}, hostile)
    with pytest.raises(ConfigError, match="not an InfiniteYou image projection"):
        InfiniteYouProjection.from_infiniteyou(tmp_path)


def test_identity_tokens_reach_only_infusenet_with_zero_ids_and_unit_guidance():
    components = tiny_flux_components()
    components["controlnet"] = FluxControlNetModel(**FLUX_BLOCKS, guidance_embeds=True).eval()
    reference = tiny_infiniteyou()
    pipe = InfiniteYouPipeline(**components, identity_projection=reference.identity_projection)
    pipe.set_progress_bar_config(disable=True)
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, kwargs)
        return hook

    pipe.controlnet.register_forward_pre_hook(record("controlnet"), with_kwargs=True)
    pipe.transformer.register_forward_pre_hook(record("transformer"), with_kwargs=True)
    raw = identity(1)
    run(pipe, raw, guidance_scale=3.5)

    expected_tokens = pipe.identity_projection(F.normalize(raw, dim=-1))
    torch.testing.assert_close(seen["controlnet"]["encoder_hidden_states"], expected_tokens)
    assert seen["controlnet"]["txt_ids"].shape == (8, 3) and not seen["controlnet"]["txt_ids"].any()
    assert torch.equal(seen["controlnet"]["guidance"], torch.ones(1))
    with torch.no_grad():
        text, _, text_ids = pipe.encode_prompt("a photo of a person", None, max_sequence_length=512)
    torch.testing.assert_close(seen["transformer"]["encoder_hidden_states"], text)
    torch.testing.assert_close(seen["transformer"]["txt_ids"], text_ids)
    assert len(pipe.controlnet._forward_pre_hooks) == 1  # after the call only the test's own hook is left


def test_identity_changes_the_image_and_scale_zero_is_plain_flux(pipe):
    # Reruns are bit-identical, so any difference is the identity's. In this random model it is small
    # (about 1e-5): the identity tokens are 8 of InfuseNet's 72 keys and AdaLN-Zero's random gates are
    # near 0.05; the tokens' exact values are checked in the routing test above.
    first, second = run(pipe, identity(0)), run(pipe, identity(1))
    assert np.array_equal(first, run(pipe, identity(0)))
    assert np.abs(first - second).max() > 1e-6
    components = {k: v for k, v in pipe.components.items() if k in FluxPipeline._get_signature_keys(FluxPipeline)[0]}
    plain = FluxPipeline(**components)
    plain.set_progress_bar_config(disable=True)
    # the same starting noise for both: diffusers' ControlNet pipeline draws the condition image's VAE
    # sample from the generator before the noise, so equal seeds alone would not give equal latents
    noise = torch.randn(1, (IMAGE_SIZE // 4) ** 2, FLUX_BLOCKS["in_channels"], generator=torch.Generator().manual_seed(5))
    flux = plain("a photo of a person", height=IMAGE_SIZE, width=IMAGE_SIZE, num_inference_steps=STEPS,
                 latents=noise, output_type="np", guidance_scale=3.5).images
    np.testing.assert_allclose(run(pipe, identity(0), latents=noise, infusenet_conditioning_scale=0.0), flux, atol=1e-6)
    np.testing.assert_allclose(run(pipe, identity(1), latents=noise, infusenet_guidance_end=0.0), flux, atol=1e-6)
    assert np.abs(run(pipe, identity(0), latents=noise) - flux).max() > 1e-2  # at scale 1 InfuseNet acts


def test_seeds_batches_and_returned_identities(pipe):
    ids = identity(0, n=2)
    assert np.array_equal(run(pipe, ids[:1]), run(pipe, ids[:1]))
    output = pipe(["a photo of a person"] * 2, id_embeds=ids, height=IMAGE_SIZE, width=IMAGE_SIZE,
                  num_inference_steps=STEPS, output_type="np",
                  generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)])
    np.testing.assert_allclose(output.images[0], run(pipe, ids[:1])[0], atol=1e-4)
    np.testing.assert_allclose(output.images[1], run(pipe, ids[1:])[0], atol=1e-4)
    torch.testing.assert_close(output.id_embeds, F.normalize(ids, dim=-1))

    several = pipe("a photo of a person", id_embeds=ids[:1], num_images_per_prompt=3, height=IMAGE_SIZE,
                   width=IMAGE_SIZE, num_inference_steps=STEPS, output_type="np",
                   generator=[torch.Generator().manual_seed(s) for s in (0, 1, 0)])
    assert several.images.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 3) and several.id_embeds.shape == (3, 512)
    np.testing.assert_allclose(several.images[0], several.images[2], atol=1e-4)
    assert np.abs(several.images[0] - several.images[1]).max() > 1e-3
    images, used = pipe("a photo", id_embeds=ids[:1], height=IMAGE_SIZE, width=IMAGE_SIZE,
                        num_inference_steps=STEPS, output_type="np", return_dict=False)
    assert images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and used.shape == (1, 512)


def test_argument_mistakes_raise_value_errors(pipe):
    with pytest.raises(ValueError, match="exactly one"):
        run(pipe, None)
    with pytest.raises(ValueError, match="projection expects 512"):
        run(pipe, torch.randn(1, 128))
    with pytest.raises(ValueError, match="3 identities for 1 prompts"):
        run(pipe, identity(0, n=3))
    with pytest.raises(ValueError, match="not control_image"):
        run(pipe, identity(0), control_image=draw_keypoints(np.full((5, 2), 16.0), (IMAGE_SIZE, IMAGE_SIZE)))


def test_keypoints_are_the_pose_and_letterboxing_follows_the_reference(pipe):
    kps = np.asarray([[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]], dtype=np.float64)
    seen = []
    handle = pipe.controlnet.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["controlnet_cond"]), with_kwargs=True)
    try:
        posed, black = run(pipe, identity(0), keypoints=kps), run(pipe, identity(0))
    finally:
        handle.remove()
    assert np.abs(posed - black).max() > 1e-4 and not torch.equal(seen[0], seen[-1])

    # a 200×100 landscape photo on a 64×128 portrait canvas: resized to width 64 (height 32), centred
    moved = letterbox_keypoints([[100, 50], [0, 0]], (200, 100), (64, 128))
    np.testing.assert_allclose(moved, [[32, 64], [0, 48]])
    # on a landscape canvas the height is filled instead
    np.testing.assert_allclose(letterbox_keypoints([[50, 50]], (100, 100), (128, 64)), [[64, 32]])


#: The reference's default output size, (width, height).
REFERENCE_SIZE = (864, 1152)
#: float32 keypoint sets (found by search at REFERENCE_SIZE) whose float32 and float64 limb midpoints
#: truncate to different pixels: the nose-mouth limb of the first, the eye-nose limb of the second.
FLOAT32_ONLY_MIDPOINTS = np.array([
    [[266.81439208984375, 1018.6389770507812], [552.989501953125, 297.974853515625],
     [583.4676513671875, 463.26141357421875], [92.53231811523438, 395.4578857421875],
     [339.2527770996094, 589.914306640625]],
    [[133.4586944580078, 83.0400161743164], [261.6506042480469, 344.3333740234375],
     [93.08291625976562, 586.9599609375], [212.9563751220703, 203.64353942871094],
     [342.08837890625, 352.16693115234375]]], dtype=np.float32)


def reference_pose_image(kps, size):
    """The reference's keypoint drawing, written from its formula: each outer point joined to the nose
    by a filled ellipse (centre: the mean of the two points, truncated; half-axes: half their distance
    and 4; angle truncated to degrees) at 60 %, then a disc of radius 10 per point, all in the
    keypoints' own dtype."""
    import cv2

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    kps = np.array(kps)
    limbs = np.zeros((size[1], size[0], 3))
    for a, b in ([0, 2], [1, 2], [3, 2], [4, 2]):
        x, y = kps[[a, b], 0], kps[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        ellipse = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), 4), int(angle), 0, 360, 1)
        limbs = cv2.fillConvexPoly(limbs, ellipse, colours[a])
    image = (limbs * 0.6).astype(np.uint8)
    for (x, y), colour in zip(kps, colours):
        image = cv2.circle(image, (int(x), int(y)), 10, colour, -1)
    return image


def test_float32_keypoints_are_drawn_in_float32_as_the_reference_draws_them(pipe):
    """Keypoints given as float32 (insightface's dtype) are drawn with float32 arithmetic, pixel for
    pixel as the reference draws them, for sets where float64 arithmetic moves a limb and random ones."""
    for kps in FLOAT32_ONLY_MIDPOINTS:
        moved = reference_pose_image(kps.astype(np.float64), REFERENCE_SIZE) != reference_pose_image(kps, REFERENCE_SIZE)
        assert moved.any(axis=-1).sum() > 50   # float64 arithmetic draws a limb 1 px off
    random = (np.random.default_rng(0).random((30, 5, 2)) * REFERENCE_SIZE).astype(np.float32)
    poses = np.concatenate([FLOAT32_ONLY_MIDPOINTS, random])
    drawn = pipe._pose_image(None, poses, *REFERENCE_SIZE)
    assert len(drawn) == len(poses)
    for image, kps in zip(drawn, poses):
        np.testing.assert_array_equal(np.asarray(image), reference_pose_image(kps, REFERENCE_SIZE))
    single = pipe._pose_image(None, FLOAT32_ONLY_MIDPOINTS[1], *REFERENCE_SIZE)
    np.testing.assert_array_equal(np.asarray(single), reference_pose_image(FLOAT32_ONLY_MIDPOINTS[1], REFERENCE_SIZE))


def test_pose_photo_keypoints_stay_float32(pipe, monkeypatch):
    """A pose photo's float32 landmarks are placed on the canvas in float32 (scale and offset rounded
    to float32, as numpy does for a float32 array) and drawn so: a photo at the output size, or at half
    of it, draws its landmarks exactly as the reference draws float32 keypoints."""
    from idgen.faces import Face

    class OneFace:
        def __init__(self, landmarks):
            self.landmarks = landmarks

        def get_face(self, image, policy):
            return Face(bbox=np.array([0, 0, 10, 10], np.float32), det_score=0.9, landmarks=self.landmarks)

    kps = FLOAT32_ONLY_MIDPOINTS[0]
    width, height = REFERENCE_SIZE
    for scale in (1, 2):
        monkeypatch.setattr(pipe, "face_analyzer", OneFace(kps / np.float32(scale)))
        photo = np.zeros((height // scale, width // scale, 3), np.uint8)
        image = pipe._pose_image(photo, None, width, height)
        np.testing.assert_array_equal(np.asarray(image), reference_pose_image(kps, REFERENCE_SIZE))

    rng = np.random.default_rng(1)
    for _ in range(200):
        source, target = tuple(rng.integers(64, 2048, 2)), tuple(rng.integers(64, 2048, 2))
        landmarks = (rng.random((5, 2)) * source).astype(np.float32)
        placed = letterbox_keypoints(landmarks, source, target)
        new_width, new_height = letterbox_size(source, target)
        x = landmarks[:, 0] * np.float32(new_width / source[0]) + np.float32((target[0] - new_width) // 2)
        y = landmarks[:, 1] * np.float32(new_height / source[1]) + np.float32((target[1] - new_height) // 2)
        assert placed.dtype == np.float32
        np.testing.assert_array_equal(placed, np.stack([x, y], axis=1))


#: (photo size, canvas size, the reference's resized side, what ``side * a / b`` gives instead)
RATIO_FIRST = [((1080, 305), (864, 1152), 243, 244), ((600, 325), (864, 1152), 467, 468),
               ((325, 600), (1152, 864), 467, 468)]


def test_letterbox_size_takes_the_ratio_first_as_the_reference():
    """The resized photo's free side is ``int(side * (a / b))`` as in the reference, not
    ``int(side * a / b)``: equal over random size pairs, and on pairs where the two differ."""
    def reference(source, target):
        (source_width, source_height), (width, height) = source, target
        if width <= height:
            return width, int(width * (source_height / source_width))
        return int(height * (source_width / source_height)), height

    for source, target, side, other_order in RATIO_FIRST:
        fixed = target[0] if target[0] <= target[1] else target[1]
        a, b = (source[1], source[0]) if target[0] <= target[1] else source
        assert int(fixed * (a / b)) == side and int(fixed * a / b) == other_order
        assert side in letterbox_size(source, target) and reference(source, target) == letterbox_size(source, target)
    rng = np.random.default_rng(0)
    for source, target in zip(rng.integers(1, 4096, (100_000, 2)).tolist(), rng.integers(16, 2048, (100_000, 2)).tolist()):
        assert letterbox_size(source, target) == reference(source, target)


def test_multi_controlnet_keeps_infusenet_first(pipe):
    components = dict(pipe.components)
    other = FluxControlNetModel(**FLUX_BLOCKS)
    components["controlnet"] = FluxMultiControlNetModel([pipe.controlnet, other])
    multi = InfiniteYouPipeline(**components)
    multi.set_progress_bar_config(disable=True)
    seen = []

    def record(module, args, kwargs):
        seen.append(kwargs["encoder_hidden_states"])

    other.register_forward_pre_hook(record, with_kwargs=True)
    extra = draw_keypoints(np.full((5, 2), 16.0), (IMAGE_SIZE, IMAGE_SIZE))
    noise = torch.randn(1, (IMAGE_SIZE // 4) ** 2, FLUX_BLOCKS["in_channels"], generator=torch.Generator().manual_seed(5))
    images = run(multi, identity(0), latents=noise, control_image=extra, infusenet_conditioning_scale=[1.0, 0.0])
    np.testing.assert_allclose(images, run(pipe, identity(0), latents=noise), atol=1e-5)  # noise given: see above
    assert seen and all(text.shape[1] != 8 for text in seen)  # the second ControlNet reads the text, not the identity


def test_save_pretrained_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "identity_projection" / "config.json").is_file()
    loaded = InfiniteYouPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.identity_projection, InfiniteYouProjection)
    np.testing.assert_allclose(run(loaded, identity(0)), run(pipe, identity(0)), atol=1e-6)


def test_loader_reads_a_download_of_flux_and_infiniteyou(pipe, tmp_path):
    """load_infiniteyou_pipeline on folders laid out as the two hub repositories are."""
    base = {k: v for k, v in pipe.components.items() if k in FluxPipeline._get_signature_keys(FluxPipeline)[0]}
    FluxPipeline(**base).save_pretrained(tmp_path / "FLUX.1-dev")
    variant = tmp_path / "InfiniteYou" / "infu_flux_v1.0" / "sim_stage1"
    pipe.controlnet.save_pretrained(variant / "InfuseNetModel")
    torch.save(infiniteyou_projection_state_dict(0), variant / "image_proj_model.bin")
    loaded = load_infiniteyou_pipeline(tmp_path / "FLUX.1-dev", tmp_path / "InfiniteYou", variant="sim_stage1",
                                       dtype=torch.float32)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(run(loaded, identity(0)), run(pipe, identity(0)), atol=1e-6)
    with pytest.raises(ModelFilesMissingError, match="aes_stage2/InfuseNetModel"):
        load_infiniteyou_pipeline(tmp_path / "FLUX.1-dev", tmp_path / "InfiniteYou")


def test_lora_loads_into_the_transformer(tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    donor = tiny_infiniteyou().transformer
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_q", "to_k", "to_v"]))
    InfiniteYouPipeline.save_lora_weights(
        tmp_path / "lora", transformer_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(donor)))
    pipe = tiny_infiniteyou()
    before = run(pipe, identity(0))
    pipe.load_lora_weights(tmp_path / "lora", adapter_name="style")
    assert np.abs(run(pipe, identity(0)) - before).max() > 1e-3
    pipe.set_adapters(["style"], adapter_weights=[0.0])
    np.testing.assert_allclose(run(pipe, identity(0)), before, atol=1e-5)


def test_model_cpu_offload_gives_the_same_image():
    pipe = tiny_infiniteyou()
    reference = run(pipe, identity(0))
    pipe.enable_model_cpu_offload(device="cpu")  # exercises accelerate's hooks; no GPU here
    assert hasattr(pipe.transformer, "_hf_hook") and hasattr(pipe.identity_projection, "_hf_hook")
    np.testing.assert_allclose(run(pipe, identity(0)), reference, atol=1e-5)


def test_the_identity_projection_is_a_required_component(pipe):
    for cls in (InfiniteYouPipeline, InfiniteYouImg2ImgPipeline, InfiniteYouInpaintPipeline):
        assert "identity_projection" not in cls._optional_components
        assert inspect.signature(cls.__init__).parameters["identity_projection"].default is inspect.Parameter.empty
    with pytest.raises(TypeError, match="identity_projection"):
        InfiniteYouPipeline(**tiny_flux_components())
    flux = FluxControlNetPipeline(**{k: v for k, v in pipe.components.items() if k != "identity_projection"})
    with pytest.raises(ValueError, match="identity_projection"):
        InfiniteYouPipeline.from_pipe(flux)
    given = InfiniteYouPipeline.from_pipe(flux, identity_projection=pipe.identity_projection)
    assert given.identity_projection is pipe.identity_projection
    given.identity_projection = None   # set by hand: still a clear error at the call
    with pytest.raises(IdgenError, match="no identity projection"):
        run(given, identity(0))


def test_no_prompt_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="no prompt: pass prompt .* or prompt_embeds"):
        pipe(id_embeds=identity(0), height=IMAGE_SIZE, width=IMAGE_SIZE, num_inference_steps=STEPS)


def test_face_photo_end_to_end_and_no_face_error(pipe, dlib_analyzer, faces_dir, tmp_path):
    photo = sorted(faces_dir.glob("*.jpg"))[0]
    projection = InfiniteYouProjection(embedding_dim=128, hidden_dim=32, output_dim=FLUX_BLOCKS["joint_attention_dim"],
                                       depth=1, heads=1, head_dim=64)  # dlib's embeddings are 128-d
    face_pipe = InfiniteYouPipeline(**{**pipe.components, "identity_projection": projection})
    face_pipe.set_progress_bar_config(disable=True)
    face_pipe.set_face_analyzer(dlib_analyzer)
    output = face_pipe("a photo", face_images=photo, pose_image=photo, height=IMAGE_SIZE, width=IMAGE_SIZE,
                       num_inference_steps=STEPS, output_type="np")
    expected = F.normalize(torch.from_numpy(dlib_analyzer.get_face(photo).embedding).float()[None], dim=-1)
    torch.testing.assert_close(output.id_embeds, expected)
    blank = tmp_path / "blank.png"
    from PIL import Image
    Image.new("RGB", (128, 128), (90, 90, 90)).save(blank)
    with pytest.raises(NoFaceError, match="blank.png"):
        face_pipe("a photo", face_images=blank, height=IMAGE_SIZE, width=IMAGE_SIZE, num_inference_steps=STEPS)


def test_one_pose_per_prompt(pipe):
    """N × 5 × 2 keypoints give each prompt its own keypoint image: a batch equals the single calls."""
    kps = np.asarray([[10, 12], [22, 12], [16, 18], [11, 24], [21, 24]], dtype=np.float64)
    poses = np.stack([kps, kps + [4, 2]])
    batch = pipe(["a photo of a person"] * 2, id_embeds=identity(0), keypoints=poses, height=IMAGE_SIZE,
                 width=IMAGE_SIZE, num_inference_steps=STEPS, output_type="np",
                 generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)]).images
    for image, pose in zip(batch, poses):
        np.testing.assert_allclose(image, run(pipe, identity(0), keypoints=pose)[0], atol=1e-4)
    assert np.abs(batch[0] - batch[1]).max() > 1e-4
    with pytest.raises(ValueError, match="one pose per prompt"):
        run(pipe, identity(0), keypoints=poses)


def test_an_empty_list_of_photos_says_to_pass_one(pipe, dlib_analyzer):
    pipe.set_face_analyzer(dlib_analyzer)
    try:
        with pytest.raises(DataError, match="face_images is empty: pass at least one face photo"):
            pipe("a photo", face_images=[], height=IMAGE_SIZE, width=IMAGE_SIZE, num_inference_steps=STEPS)
    finally:
        pipe.set_face_analyzer(None)


def test_default_size_is_the_references_864_by_1152(monkeypatch):
    """With no width/height the pipeline asks diffusers for the reference's portrait 864×1152 (its
    pipeline's, CLI's and demo's default), not FLUX's square 1024, with a black condition image of that size."""
    assert (InfiniteYouPipeline.default_width, InfiniteYouPipeline.default_height) == (864, 1152)
    pipe = tiny_infiniteyou()
    del pipe.default_width, pipe.default_height   # the class defaults, as a published pipeline has them
    seen = {}

    class Stop(Exception):
        pass

    def diffusers_call(self, **kwargs):   # what the mixin hands the diffusers pipeline; rendering 864×1152 is slow
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(FluxControlNetPipeline, "__call__", diffusers_call)
    with pytest.raises(Stop):
        pipe("a photo", id_embeds=identity(0))
    assert (seen["width"], seen["height"]) == (864, 1152) and seen["control_image"].size == (864, 1152)
    with pytest.raises(Stop):
        pipe("a photo", id_embeds=identity(0), width=512, height=768)
    assert (seen["width"], seen["height"]) == (512, 768)


def test_the_trained_recogniser_is_facexlibs_ir_se50_and_others_get_a_warning(dlib_analyzer, tmp_path):
    """InfiniteYou was trained on facexlib's IR-SE50; an analyser with another recogniser is accepted
    with a warning naming it, the same file is accepted silently."""
    import warnings

    from tiny_models import TINY_IR_SE, ir_se_state_dict

    from idgen.faces import FaceAnalyzer

    pipe = tiny_infiniteyou()
    assert pipe.face_backends is None   # random weights: no warning for the tiny model
    pipe.face_backends = InfiniteYouPipeline.face_backends
    assert pipe.face_backends == ("antelopev2", "ir_se50:recognition_arcface_ir_se50.pth")
    with pytest.warns(UserWarning, match="InfiniteYouPipeline was trained on the embeddings of "
                                         "recognition_arcface_ir_se50.pth .*embeds with DlibRecognizer"):
        pipe.set_face_analyzer(dlib_analyzer)
    path = tmp_path / "recognition_arcface_ir_se50.pth"
    torch.save(ir_se_state_dict(**TINY_IR_SE), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.set_face_analyzer(FaceAnalyzer.from_backend("dlib", f"ir_se50:{path}"))
