"""InstantIDPipeline on tiny random SDXL parts: the original checkpoint layout is read correctly
(checked against an independent computation), face tokens reach the UNet and the IdentityNet, and the
diffusers features (scales, unload, LoRA, multi-ControlNet, offload) keep working."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from diffusers import LCMScheduler, StableDiffusionXLControlNetPipeline

from idgen.errors import DataError, IdgenError, NoFaceError
from idgen.pipelines import InstantIDPipeline
from idgen.pipelines.keypoints import draw_keypoints
from idgen.pipelines.pipeline_instantid import convert_instantid_adapter
from tiny_models import RESAMPLER, instantid_state_dict, tiny_controlnet, tiny_sdxl_components

EMBED_DIM = 128  # the tiny adapter takes 128-d embeddings, so dlib's real embeddings fit it
KPS = [(18, 20), (46, 20), (32, 34), (20, 50), (44, 50)]  # a frontal face in a 64×64 image
ARGS = dict(num_inference_steps=2, guidance_scale=5.0, height=64, width=64, output_type="np")


pytestmark = pytest.mark.usefixtures("one_thread")


class NotATensor:
    """Anything but a tensor: ``weights_only`` loading must refuse to unpickle it."""


@pytest.fixture
def make_pipe(tmp_path):
    def make(adapter=True, controlnet=None):
        pipe = InstantIDPipeline(**tiny_sdxl_components(tmp_path, controlnet))
        pipe.set_progress_bar_config(disable=True)
        if adapter:
            pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, EMBED_DIM))
        return pipe
    return make


def faces(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [20 * torch.randn(EMBED_DIM, generator=g) for _ in range(n)]  # raw, un-normalised scale


def run(pipe, embedding, seed=0, **kwargs):
    args = {**ARGS, "keypoints": KPS, **kwargs}
    return pipe("a portrait", id_embeds=embedding, generator=torch.Generator().manual_seed(seed), **args).images


# ---------------------------------------------------------------------------- reference maths
def reference_resampler(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """InstantID's Resampler written from its published definition, on original-layout keys.
    ``x``: N × 1 × D embeddings → N × queries × output_dim tokens."""
    def linear(t, key):
        return t @ sd[key + ".weight"].T + (sd[key + ".bias"] if key + ".bias" in sd else 0)

    def norm(t, key):
        return F.layer_norm(t, t.shape[-1:], sd[key + ".weight"], sd[key + ".bias"])

    heads, dim_head = RESAMPLER["heads"], RESAMPLER["dim_head"]

    def split(t):  # N × L × (h·d) → N × h × L × d
        return t.reshape(t.shape[0], t.shape[1], heads, dim_head).transpose(1, 2)

    x = linear(x, "proj_in")
    latents = sd["latents"].expand(x.shape[0], -1, -1)
    for i in range(RESAMPLER["depth"]):
        p = f"layers.{i}."
        xs, ls = norm(x, p + "0.norm1"), norm(latents, p + "0.norm2")
        q = split(linear(ls, p + "0.to_q"))
        k, v = (split(t) for t in linear(torch.cat([xs, ls], dim=1), p + "0.to_kv").chunk(2, dim=-1))
        scale = dim_head ** -0.25
        weights = torch.softmax((q * scale) @ (k * scale).transpose(-1, -2), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(x.shape[0], -1, heads * dim_head)
        latents = latents + linear(attended, p + "0.to_out")
        hidden = F.gelu(linear(norm(latents, p + "1.0"), p + "1.1"))
        latents = latents + linear(hidden, p + "1.3")
    return norm(linear(latents, "proj_out"), "norm_out")


def reference_attention(q, k, v, heads):
    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return (weights @ v).transpose(1, 2).reshape(q.shape[0], -1, q.shape[1] * q.shape[-1])


# ---------------------------------------------------------------------------- keypoint image
def test_keypoint_image_pixels():
    kps = [(30, 30), (98, 30), (64, 64), (36, 100), (92, 100)]
    image = np.asarray(draw_keypoints(kps, (128, 128)))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    for (x, y), colour in zip(kps, colours):
        assert tuple(image[y, x]) == colour  # dot centre: full colour
        assert tuple(image[y, x + 9]) == colour  # inside the radius-10 disc
    dim = lambda c: tuple(int(v * 0.6) for v in c)  # limbs: 60 % brightness, truncated
    assert tuple(image[47, 47]) == dim(colours[0])  # midway left eye → nose, outside both discs
    assert tuple(image[47, 81]) == dim(colours[1])  # right eye → nose
    assert tuple(image[82, 50]) == dim(colours[3])  # left mouth corner → nose
    assert tuple(image[82, 78]) == dim(colours[4])  # right mouth corner → nose
    assert tuple(image[47 - 3, 47 + 3]) == dim(colours[0])  # 4.2 px across the limb axis: inside (half-width 4 ends)
    assert tuple(image[47 - 6, 47 + 6]) == (0, 0, 0)  # 8.5 px across: outside
    assert tuple(image[30, 42]) == (0, 0, 0)  # 12 px right of the left eye, off the limb
    assert tuple(image[5, 5]) == tuple(image[120, 64]) == (0, 0, 0)
    assert set(map(tuple, image.reshape(-1, 3))) == {(0, 0, 0), *colours, *map(dim, colours[:2] + colours[3:])}


def test_float32_keypoints_take_float32_midpoints():
    """insightface gives float32 keypoints and InstantID's drawing takes the limb midpoints in float32;
    here the float32 mean of the left eye's and the nose's x is 624.0 where the float64 mean truncates
    to 623, so the limb ellipse sits 1 px further right than a float64 drawing puts it."""
    import cv2

    kps = np.array([(722.9678, 500), (1200, 700), (525.03217, 700), (500, 1100), (700, 1100)], dtype=np.float32)
    x_eye, x_nose = kps[0, 0], kps[2, 0]
    assert int(np.mean(kps[[0, 2], 0])) == 624 and int((float(x_eye) + float(x_nose)) / 2) == 623
    size = (1280, 1280)
    drawn = np.asarray(draw_keypoints(kps, size))
    assert not np.array_equal(drawn, np.asarray(draw_keypoints(kps.astype(np.float64), size)))
    # the left-eye limb, drawn independently around the float32 centre, matches pixel for pixel
    dx, dy = kps[0] - kps[2]
    length = int(np.sqrt(dx * dx + dy * dy) / 2)
    angle = int(np.degrees(np.arctan2(dy, dx)))
    limb = np.zeros((1280, 1280, 3))
    cv2.fillConvexPoly(limb, cv2.ellipse2Poly((624, 600), (length, 4), angle, 0, 360, 1), (255, 0, 0))
    window = np.s_[540:660, 560:690]   # between the eye's and the nose's discs; no other limb passes here
    np.testing.assert_array_equal(drawn[window], (limb * 0.6).astype(np.uint8)[window])


def test_photo_keypoints_keep_their_float32_midpoints(make_pipe):
    """A face found in a photo at the output size draws exactly as its float32 keypoints do."""
    from idgen.faces import Face

    kps = np.array([(722.9678, 500), (1200, 700), (525.03217, 700), (500, 1100), (700, 1100)], dtype=np.float32)
    face = Face(bbox=np.array([400, 400, 1250, 1150], np.float32), det_score=0.9, landmarks=kps)
    photo = np.zeros((1280, 1280, 3), np.uint8)
    image, width, height = make_pipe(adapter=False)._keypoint_image(face, photo, None, None, 1280, 1280)
    assert (width, height) == (1280, 1280)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(draw_keypoints(kps, (1280, 1280))))
    halved, *_ = make_pipe(adapter=False)._keypoint_image(face, photo, None, None, 640, 640)
    np.testing.assert_array_equal(np.asarray(halved), np.asarray(draw_keypoints(kps * np.float32(0.5), (640, 640))))


# ---------------------------------------------------------------------------- checkpoint layout
def test_resampler_loaded_from_original_layout_matches_reference(make_pipe):
    pipe = make_pipe()
    sd = instantid_state_dict(pipe.unet, EMBED_DIM)["image_proj"]
    x = torch.stack(faces(3))[:, None, :]
    with torch.no_grad():
        ours = pipe.unet.encoder_hid_proj.image_projection_layers[0](x)
    expected = reference_resampler(sd, x)
    assert ours.shape == (3, RESAMPLER["queries"], 64)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_ip_attention_loaded_from_original_layout_matches_reference(make_pipe):
    pipe = make_pipe()
    ip = instantid_state_dict(pipe.unet, EMBED_DIM)["ip_adapter"]
    scale = 0.7
    pipe.set_ip_adapter_scale(scale)
    g = torch.Generator().manual_seed(1)
    checked = 0
    for index, name in enumerate(pipe.unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        attn = pipe.unet.get_submodule(name[: -len(".processor")])
        width = attn.to_q.in_features
        hidden, text = torch.randn(2, 6, width, generator=g), torch.randn(2, 5, 64, generator=g)
        face = torch.randn(2, RESAMPLER["queries"], 64, generator=g)
        with torch.no_grad():
            ours = attn(hidden, encoder_hidden_states=(text, [face[:, None]]))
            text_part = reference_attention(attn.to_q(hidden), attn.to_k(text), attn.to_v(text), attn.heads)
            face_part = reference_attention(attn.to_q(hidden), face @ ip[f"{index}.to_k_ip.weight"].T,
                                            face @ ip[f"{index}.to_v_ip.weight"].T, attn.heads)
            expected = attn.to_out[0](text_part + scale * face_part)
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
        checked += 1
    assert checked == len(ip) // 2 == 12  # every cross-attention layer of the tiny UNet


def test_identitynet_gets_face_tokens_not_text(make_pipe):
    pipe = make_pipe()
    seen = []  # a forward hook sees the kwargs forward() actually got
    pipe.controlnet.register_forward_hook(
        lambda m, a, kw, out: seen.append(kw["encoder_hidden_states"].clone()), with_kwargs=True)
    face = faces(1)[0]
    run(pipe, face)
    sd = instantid_state_dict(pipe.unet, EMBED_DIM)["image_proj"]
    expected = reference_resampler(sd, torch.stack([torch.zeros_like(face), face])[:, None, :])
    assert len(seen) == ARGS["num_inference_steps"]
    for states in seen:
        torch.testing.assert_close(states, expected, rtol=1e-4, atol=1e-5)
    # without classifier-free guidance, or in guess mode, only the face half goes in
    for only_faces in (dict(guidance_scale=1.0), dict(guess_mode=True)):
        seen.clear()
        run(pipe, face, **only_faces)
        torch.testing.assert_close(seen[0], expected[1:], rtol=1e-4, atol=1e-5)
    assert not pipe.controlnet._forward_pre_hooks  # the swap lasts one call


# ---------------------------------------------------------------------------- behaviour
def test_face_changes_output_and_zero_ip_scale_removes_it(make_pipe, tmp_path):
    pipe = make_pipe()
    a, b = faces(2)
    no_cn = dict(controlnet_conditioning_scale=0.0)
    assert np.abs(run(pipe, a, **no_cn) - run(pipe, b, **no_cn)).max() > 1e-3
    off_a, off_b = run(pipe, a, ip_adapter_scale=0.0, **no_cn), run(pipe, b, ip_adapter_scale=0.0, **no_cn)
    np.testing.assert_array_equal(off_a, off_b)
    # the call argument did not stick
    assert all(p.scale == [0.8] for p in pipe.unet.attn_processors.values() if hasattr(p, "to_k_ip"))
    # the same as the plain SDXL ControlNet pipeline with no IP-Adapter at all
    plain = StableDiffusionXLControlNetPipeline(**tiny_sdxl_components(tmp_path))
    plain.set_progress_bar_config(disable=True)
    expected = plain("a portrait", image=draw_keypoints(KPS, (64, 64)), generator=torch.Generator().manual_seed(0),
                     **ARGS, **no_cn).images
    np.testing.assert_allclose(off_a, expected, atol=1e-5)
    # with ip scale 0 the face still reaches the image through the IdentityNet
    assert np.abs(run(pipe, a, ip_adapter_scale=0.0) - run(pipe, b, ip_adapter_scale=0.0)).max() > 1e-3


def test_prompt_and_image_batches(make_pipe):
    pipe = make_pipe()
    seen = []
    pipe.controlnet.register_forward_hook(
        lambda m, a, kw, out: seen.append(kw["encoder_hidden_states"].shape), with_kwargs=True)
    a, b = faces(2)
    two_prompts = dict(prompt=["a portrait", "a painting"], keypoints=KPS, **ARGS)
    images = pipe(id_embeds=a, num_images_per_prompt=2, **two_prompts).images
    assert images.shape == (4, 64, 64, 3) and seen[-1] == (8, RESAMPLER["queries"], 64)
    assert pipe(id_embeds=torch.stack([a, b]), **two_prompts).images.shape == (2, 64, 64, 3)
    with pytest.raises(ValueError, match="3 identities for 2 prompts"):
        pipe(id_embeds=torch.stack([a, b, a]), **two_prompts)
    with pytest.raises(ValueError, match="exactly one of face_images"):
        pipe(**two_prompts)
    with pytest.raises(ValueError, match="no prompt: pass prompt .* or prompt_embeds"):
        pipe(id_embeds=a, keypoints=KPS, **ARGS)


def test_each_image_of_a_batch_gets_its_prompts_identity(make_pipe):
    """Two prompts with one identity each, one and two images per prompt: every image equals the
    one-prompt call with its identity and seed. (diffusers repeats given IP-Adapter embeddings for
    every image, which gave each image the face tokens of the whole batch.)"""
    pipe = make_pipe()
    a, b = faces(2)
    args = dict(prompt=["a portrait"] * 2, id_embeds=[a, b], keypoints=KPS, **ARGS)
    for per_prompt, identities in ((1, [a, b]), (2, [a, a, b, b])):
        seeds = range(len(identities))
        batch = pipe(num_images_per_prompt=per_prompt, generator=[torch.Generator().manual_seed(s) for s in seeds],
                     **args).images
        assert batch.shape == (len(identities), 64, 64, 3)
        for image, face, seed in zip(batch, identities, seeds):
            np.testing.assert_allclose(image, run(pipe, face, seed=seed)[0], atol=1e-4)


def test_deterministic_with_seed(make_pipe):
    pipe = make_pipe()
    face = faces(1)[0]
    first, again, other = run(pipe, face, seed=3), run(pipe, face, seed=3), run(pipe, face, seed=4)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    assert first.shape == (1, 64, 64, 3)


def test_save_pretrained_keeps_the_face_adapter_and_its_scale(make_pipe, tmp_path):
    pipe = make_pipe()
    pipe.set_ip_adapter_scale(0.6)
    expected = run(pipe, faces(1)[0])
    pipe.save_pretrained(tmp_path / "saved")
    # once, in InstantID's own layout, beside the components (not inside the UNet's weights as well)
    assert (tmp_path / "saved" / "face_adapter" / "ip-adapter.safetensors").is_file()
    from safetensors import safe_open
    with safe_open(tmp_path / "saved" / "unet" / "diffusion_pytorch_model.safetensors", "pt") as unet_file:
        assert not any("_ip" in key or "encoder_hid_proj" in key for key in unet_file.keys())
    assert isinstance(pipe.unet.encoder_hid_proj, torch.nn.Module)   # the pipeline saved is as it was

    loaded = InstantIDPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert all(p.scale == [0.6] for p in loaded.unet.attn_processors.values() if hasattr(p, "to_k_ip"))
    np.testing.assert_allclose(run(loaded, faces(1)[0]), expected, atol=1e-5)
    published = instantid_state_dict(pipe.unet, EMBED_DIM)
    state = loaded.face_adapter_state_dict()
    for part in ("image_proj", "ip_adapter"):
        assert state[part].keys() == published[part].keys()
        assert all(torch.equal(state[part][key], published[part][key]) for key in published[part])

    pipe.unload_ip_adapter()
    pipe.save_pretrained(tmp_path / "plain")
    with pytest.raises(IdgenError, match="no face adapter loaded"):
        run(InstantIDPipeline.from_pretrained(tmp_path / "plain"), faces(1)[0])


def test_layerwise_casting_computes_the_face_tokens_in_the_compute_dtype(make_pipe):
    pipe = make_pipe()
    pipe.to(dtype=torch.bfloat16)
    pipe.unet.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
    negative, positive = pipe._face_tokens(torch.stack(faces(1)))
    assert negative.dtype == positive.dtype == torch.bfloat16
    images = run(pipe, faces(1)[0])
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_attention_slicing_and_fused_projections_keep_the_face_adapter(make_pipe):
    pipe = make_pipe()
    face = faces(1)[0]
    expected = run(pipe, face)
    adapter = {name: p for name, p in pipe.unet.attn_processors.items() if hasattr(p, "to_k_ip")}
    for enable, disable in (("enable_attention_slicing", "disable_attention_slicing"),
                            ("fuse_qkv_projections", "unfuse_qkv_projections")):
        getattr(pipe, enable)()
        kept = {name: p for name, p in pipe.unet.attn_processors.items() if hasattr(p, "to_k_ip")}
        assert kept.keys() == adapter.keys() and all(kept[name] is adapter[name] for name in adapter)
        assert any(type(p).__name__ in ("SlicedAttnProcessor", "FusedAttnProcessor2_0")
                   for p in pipe.unet.attn_processors.values())
        np.testing.assert_allclose(run(pipe, face), expected, atol=1e-4)
        getattr(pipe, disable)()
        np.testing.assert_allclose(run(pipe, face), expected, atol=1e-5)


def test_replaced_attention_processors_are_refused_until_the_adapter_is_loaded_again(make_pipe):
    pipe = make_pipe()
    expected = run(pipe, faces(1)[0])
    pipe.unet.set_default_attn_processor()
    with pytest.raises(IdgenError, match="12 cross-attention layers .* lost the face adapter.*load_instantid_adapter"):
        run(pipe, faces(1)[0])
    pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, EMBED_DIM))
    np.testing.assert_allclose(run(pipe, faces(1)[0]), expected, atol=1e-5)


def test_from_pipe_never_loads_the_adapter_into_a_shared_unet(make_pipe, tmp_path):
    plain = StableDiffusionXLControlNetPipeline(**tiny_sdxl_components(tmp_path))
    plain.set_progress_bar_config(disable=True)
    pose = dict(image=draw_keypoints(KPS, (64, 64)), generator=torch.Generator().manual_seed(0), **ARGS)
    before = plain("a portrait", **pose).images
    pipe = InstantIDPipeline.from_pipe(plain)
    assert pipe.unet is plain.unet
    with pytest.raises(IdgenError, match="shares its UNet with the StableDiffusionXLControlNetPipeline"):
        pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, EMBED_DIM))
    assert plain.unet.encoder_hid_proj is None
    assert not any(hasattr(p, "to_k_ip") for p in plain.unet.attn_processors.values())
    pose["generator"] = torch.Generator().manual_seed(0)
    np.testing.assert_array_equal(plain("a portrait", **pose).images, before)
    # with a UNet of its own it loads, and the source keeps its plain UNet
    import copy
    own = InstantIDPipeline.from_pipe(plain, unet=copy.deepcopy(plain.unet))
    own.load_instantid_adapter(instantid_state_dict(own.unet, EMBED_DIM))
    assert own.unet.encoder_hid_proj is not None and plain.unet.encoder_hid_proj is None


def test_converted_safetensors_round_trip_and_weights_only(make_pipe, tmp_path):
    pipe = make_pipe(adapter=False)
    torch.save(instantid_state_dict(pipe.unet, EMBED_DIM), tmp_path / "ip-adapter.bin")
    pipe.load_instantid_adapter(tmp_path)
    from_bin = run(pipe, faces(1)[0])
    convert_instantid_adapter(tmp_path / "ip-adapter.bin", tmp_path / "ip-adapter.safetensors")
    other = make_pipe(adapter=False)
    other.load_instantid_adapter(tmp_path, weight_name="ip-adapter.safetensors")
    np.testing.assert_array_equal(run(other, faces(1)[0]), from_bin)

    torch.save({"image_proj": {}, "ip_adapter": {}, "payload": NotATensor()}, tmp_path / "evil.bin")
    with pytest.raises(DataError, match=r"evil.bin: cannot be read .*the pickle asks for test_instantid.NotATensor"):
        convert_instantid_adapter(tmp_path / "evil.bin", tmp_path / "evil.safetensors")
    assert not (tmp_path / "evil.safetensors").exists()


def test_unload_and_missing_adapter_errors(make_pipe, tmp_path):
    pipe = make_pipe()
    pipe.unload_ip_adapter()
    assert not any(hasattr(p, "to_k_ip") for p in pipe.unet.attn_processors.values())
    with pytest.raises(IdgenError, match="load_instantid_adapter"):
        run(pipe, faces(1)[0])
    with pytest.raises(IdgenError, match="ip-adapter.bin"):
        pipe.load_instantid_adapter(tmp_path / "nowhere")
    pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, EMBED_DIM))
    with pytest.raises(ValueError, match="expects 128"):
        run(pipe, torch.zeros(512))


def test_face_photo_end_to_end_and_no_face_error(make_pipe, dlib_analyzer, faces_dir):
    pipe = make_pipe()
    pipe.set_face_analyzer(dlib_analyzer)
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    image = pipe("a portrait", face_images=photo, generator=torch.Generator().manual_seed(0),
                 num_inference_steps=2, output_type="np").images
    assert image.shape == (1, 64, 64, 3)  # 250×250 photo → the tiny base's native 64×64
    face = dlib_analyzer.get_face(photo)
    same = run(pipe, face.embedding, keypoints=face.landmarks * 64 / 250)
    np.testing.assert_allclose(image, same, atol=1e-6)
    blank = np.full((128, 128, 3), 127, np.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        pipe("a portrait", face_images=blank, **ARGS)
    with pytest.raises(NoFaceError, match="no face found"):
        pipe("a portrait", face_images=photo, pose_image=blank, **ARGS)


def test_multi_controlnet_identitynet_first(make_pipe):
    pipe = make_pipe(controlnet=[tiny_controlnet(1), tiny_controlnet(2)])
    seen = {}
    for i, net in enumerate(pipe.controlnet.nets):
        net.register_forward_hook(
            lambda m, a, kw, out, i=i: seen.__setitem__(i, kw["encoder_hidden_states"].shape), with_kwargs=True)
    extra = np.zeros((64, 64, 3), np.uint8)
    extra[16:48, 16:48] = 255
    out = run(pipe, faces(1)[0], image=Image.fromarray(extra), controlnet_conditioning_scale=[0.8, 0.5])
    assert out.shape == (1, 64, 64, 3)
    assert seen[0] == (2, RESAMPLER["queries"], 64)  # IdentityNet: face tokens
    assert seen[1] == (2, 77, 64)  # the extra ControlNet: the text


def test_lora_and_lcm_preset(make_pipe, tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    donor = make_pipe(adapter=False).unet
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                 target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    lora_dir = tmp_path / "lora"
    InstantIDPipeline.save_lora_weights(
        lora_dir, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(donor)))

    pipe = make_pipe()
    face = faces(1)[0]
    before = run(pipe, face)
    pipe.load_lora_weights(lora_dir, adapter_name="style")
    with_lora = run(pipe, face)
    assert np.abs(before - with_lora).max() > 1e-3
    pipe.set_adapters(["style"], adapter_weights=[0.0])
    np.testing.assert_allclose(run(pipe, face), before, atol=1e-5)

    preset = pipe.enable_lcm_lora(lora_dir, adapter_name="lcm")
    assert isinstance(pipe.scheduler, LCMScheduler) and preset == {"num_inference_steps": 5, "guidance_scale": 1.5}
    fast = run(pipe, face, **{**preset, "num_inference_steps": 2})
    assert fast.shape == (1, 64, 64, 3) and np.isfinite(fast).all()


def test_model_cpu_offload_and_vae_tiling(make_pipe):
    pipe = make_pipe()
    face = faces(1)[0]
    reference = run(pipe, face)
    pipe.enable_model_cpu_offload(device="cpu")  # exercises accelerate's hooks; no GPU here
    np.testing.assert_allclose(run(pipe, face), reference, atol=1e-5)
    pipe.vae.enable_tiling()  # the tiny VAE tiles 32 px (16 latent px), so a 64 px image is split
    tiles = []
    decode_tile = pipe.vae.decoder.forward
    pipe.vae.decoder.forward = lambda z, *a, **kw: tiles.append(z.shape) or decode_tile(z, *a, **kw)
    tiled = run(pipe, face)
    assert len(tiles) > 1 and all(shape[-1] <= 16 and shape[-2] <= 16 for shape in tiles)  # overlapping tiles
    assert tiled.shape == reference.shape and np.abs(tiled - reference).mean() < 0.1


def test_an_empty_list_of_photos_says_to_pass_one(make_pipe, dlib_analyzer):
    pipe = make_pipe()
    pipe.set_face_analyzer(dlib_analyzer)
    with pytest.raises(DataError, match="face_images is empty: pass at least one face photo"):
        pipe("a portrait", face_images=[], **ARGS)
