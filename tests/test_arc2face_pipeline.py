"""Arc2FacePipeline on tiny random SD 1.5-shaped components: conditioning parity with the recipe,
parity with stock diffusers, seeds, batching, saving/loading, LoRA, photos in."""

import inspect
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import LCMScheduler, PNDMScheduler, StableDiffusionPipeline
from PIL import Image
from tiny_sd import IMAGE_SIZE, TEXT_WIDTH, tiny_clip_tokenizer, tiny_components, tiny_pipeline

from idgen.errors import NoFaceError
from idgen.identity import random_identities
from idgen.pipelines import Arc2FacePipeline
from idgen.testing.sd15_architecture import SD15_SCHEDULER_CONFIG

STEPS = 2
RUN = dict(num_inference_steps=STEPS, height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="np")


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny matrices run fastest on one thread


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def identities(n, dim=TEXT_WIDTH, seed=0):
    # Not unit length on purpose: the pipeline must normalise.
    return 5.0 * random_identities(n, dim, generator=torch.Generator().manual_seed(seed))


def recipe_prompt_embeds(text_encoder, tokenizer, id_embeds):
    """Arc2Face's conditioning written out by hand from the text encoder's weights: swap the
    ``id`` token's input embedding for the padded unit identity, add positions, run the CLIP
    layers with a causal mask, final layer norm."""
    model = getattr(text_encoder, "text_model", text_encoder)  # transformers 4.x nests it
    cfg = text_encoder.config
    n, dim = id_embeds.shape
    width, heads, length = cfg.hidden_size, cfg.num_attention_heads, 77
    tokens = tokenizer(["photo of a id person"] * n, padding="max_length", max_length=length,
                       return_tensors="pt").input_ids
    id_token = tokenizer.convert_tokens_to_ids("id</w>")
    x = model.embeddings.token_embedding.weight[tokens].clone()
    for b in range(n):
        position = int((tokens[b] == id_token).nonzero()[0, 0])
        x[b, position] = 0.0
        x[b, position, :dim] = id_embeds[b] / id_embeds[b].norm()
    x = x + model.embeddings.position_embedding.weight[:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    head = width // heads
    for layer in model.encoder.layers:
        att = layer.self_attn
        h = F.layer_norm(x, (width,), layer.layer_norm1.weight, layer.layer_norm1.bias, cfg.layer_norm_eps)
        q, k, v = (F.linear(h, p.weight, p.bias).view(n, length, heads, head).transpose(1, 2)
                   for p in (att.q_proj, att.k_proj, att.v_proj))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head) + causal, dim=-1)
        h = (weights @ v).transpose(1, 2).reshape(n, length, width)
        x = x + F.linear(h, att.out_proj.weight, att.out_proj.bias)
        h = F.layer_norm(x, (width,), layer.layer_norm2.weight, layer.layer_norm2.bias, cfg.layer_norm_eps)
        h = F.linear(h, layer.mlp.fc1.weight, layer.mlp.fc1.bias)
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + F.linear(h, layer.mlp.fc2.weight, layer.mlp.fc2.bias)
    final = model.final_layer_norm
    return F.layer_norm(x, (width,), final.weight, final.bias, cfg.layer_norm_eps)


# ---------------------------------------------------------------- conditioning
def test_real_clip_tokenizer_puts_identity_at_token_1014(clip_tokenizer_dir):
    from transformers import CLIPTokenizer

    pipe = Arc2FacePipeline(**{**tiny_components(), "tokenizer": CLIPTokenizer.from_pretrained(clip_tokenizer_dir)})
    assert pipe.identity_token_id == 1014
    tokens = pipe.tokenizer("photo of a id person", padding="max_length", max_length=77).input_ids
    assert tokens[:7] == [49406, 1125, 539, 320, 1014, 2533, 49407] and len(tokens) == 77


@pytest.mark.parametrize("dim", [TEXT_WIDTH, 64])
def test_encode_identity_matches_the_recipe(pipe, dim):
    ids = identities(3, dim)
    with torch.no_grad():
        ours = pipe.encode_identity(ids)
        expected = recipe_prompt_embeds(pipe.text_encoder, pipe.tokenizer, ids)
    assert ours.shape == (3, 77, TEXT_WIDTH)
    assert (ours - expected).abs().max() < 1e-5
    # The identity matters: different identities, different conditioning, same scale-free result.
    assert (ours[0] - ours[1]).abs().max() > 1e-2
    assert torch.allclose(pipe.encode_identity(ids[:1] * 0.01), ours[:1], atol=1e-5)


def test_encode_identity_rejects_vectors_wider_than_the_text_encoder(pipe):
    with pytest.raises(ValueError, match="only 128 wide"):
        pipe.encode_identity(torch.randn(1, 512))


# ---------------------------------------------------------------- generation
def test_call_equals_stock_stable_diffusion_with_the_same_embeddings(pipe):
    ids = identities(2)
    ours = pipe(id_embeds=ids, num_images_per_prompt=2, generator=gens(1, 2, 3, 4), guidance_scale=3.0, **RUN)
    stock = StableDiffusionPipeline(**pipe.components)
    stock.set_progress_bar_config(disable=True)
    with torch.no_grad():
        empty = pipe.tokenizer([""] * 2, padding="max_length", max_length=77, return_tensors="pt").input_ids
        negative = pipe.text_encoder(empty)[0]
        reference = stock(prompt_embeds=recipe_prompt_embeds(pipe.text_encoder, pipe.tokenizer, ids),
                          negative_prompt_embeds=negative, num_images_per_prompt=2, generator=gens(1, 2, 3, 4),
                          guidance_scale=3.0, **RUN)
    assert ours.images.shape == (4, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.abs(ours.images - reference.images).max() < 1e-4
    unit = ids / ids.norm(dim=1, keepdim=True)
    assert torch.allclose(ours.id_embeds, unit.repeat_interleave(2, dim=0), atol=1e-6)


def test_defaults_are_arc2face_sampling(pipe):
    signature = inspect.signature(Arc2FacePipeline.__call__)
    assert signature.parameters["num_inference_steps"].default == 25
    assert signature.parameters["guidance_scale"].default == 3.0
    seen = []

    def record(p, step, timestep, tensors):
        seen.append((step, p.guidance_scale, p.do_classifier_free_guidance))
        return tensors

    pipe(id_embeds=identities(1), output_type="latent", callback_on_step_end=record, height=IMAGE_SIZE, width=IMAGE_SIZE)
    assert len(seen) == 25 and seen[-1] == (24, 3.0, True)


def test_seeds_determine_images_and_identities_change_them(pipe):
    ids = identities(2)
    a = pipe(id_embeds=ids[:1], generator=gens(7), **RUN).images
    b = pipe(id_embeds=ids[:1], generator=gens(7), **RUN).images
    c = pipe(id_embeds=ids[:1], generator=gens(8), **RUN).images
    d = pipe(id_embeds=ids[1:], generator=gens(7), **RUN).images
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3
    assert np.abs(a - d).mean() > 1e-3


def test_image_k_is_the_same_alone_or_in_a_batch(pipe):
    ids = identities(3, seed=1)
    seeds = [10, 11, 12, 13, 14, 15]
    batch = pipe(id_embeds=ids, num_images_per_prompt=2, generator=gens(*seeds), **RUN)
    assert batch.images.shape[0] == 6
    for k, seed in enumerate(seeds):
        alone = pipe(id_embeds=ids[k // 2], generator=gens(seed), **RUN).images[0]
        assert np.abs(batch.images[k] - alone).max() < 1e-4, f"image {k} differs"


def test_identities_as_a_list_of_vectors_equal_the_stacked_tensor(pipe):
    """The identity inputs every idgen pipeline takes: a list of tensors, of arrays, or of lists."""
    ids = identities(2, seed=4)
    expected = pipe(id_embeds=ids, generator=gens(1, 2), **RUN).images
    for as_list in (list(ids), [row.numpy() for row in ids], ids.tolist()):
        np.testing.assert_array_equal(pipe(id_embeds=as_list, generator=gens(1, 2), **RUN).images, expected)


def test_return_dict_false_and_text_arguments_rejected(pipe):
    images, nsfw, used = pipe(identities(1), generator=gens(0), return_dict=False, **RUN)
    assert images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3) and nsfw is None and used.shape == (1, TEXT_WIDTH)
    with pytest.raises(TypeError, match="prompt is fixed"):
        pipe(identities(1), prompt="a person", **RUN)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(**RUN)


# ---------------------------------------------------------------- saving and loading
def test_save_pretrained_round_trip_and_arc2face_layout(pipe, tmp_path):
    ids = identities(2, seed=3)
    expected = pipe(id_embeds=ids, generator=gens(5, 6), **RUN).images

    pipe.save_pretrained(tmp_path / "saved")
    reloaded = Arc2FacePipeline.from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    # Equal up to float round-off (a loaded text encoder may pick another attention kernel).
    assert np.abs(reloaded(id_embeds=ids, generator=gens(5, 6), **RUN).images - expected).max() < 1e-5

    # The published layout: an SD 1.5 base (with its own UNet/text encoder and PNDM scheduler) plus an
    # Arc2Face folder holding only arc2face/ (UNet) and encoder/ (text encoder).
    other = tiny_components(seed=1)
    base = Arc2FacePipeline(**{**pipe.components, "unet": other["unet"], "text_encoder": other["text_encoder"],
                               "scheduler": PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)})
    base.save_pretrained(tmp_path / "sd15")
    # save_pretrained spells out PNDM's defaults (timestep_spacing "leading"); the published file does
    # not, so DPM-Solver built from it keeps its own "linspace". Write the file as published.
    published = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", **SD15_SCHEDULER_CONFIG}
    (tmp_path / "sd15" / "scheduler" / "scheduler_config.json").write_text(json.dumps(published))
    index = json.loads((tmp_path / "sd15" / "model_index.json").read_text())
    (tmp_path / "sd15" / "model_index.json").write_text(json.dumps({**index, "_class_name": "StableDiffusionPipeline"}))
    pipe.unet.save_pretrained(tmp_path / "Arc2Face" / "arc2face")
    pipe.text_encoder.save_pretrained(tmp_path / "Arc2Face" / "encoder")
    # Arc2Face's encoder/config.json names the reference's own wrapper class.
    encoder_config = tmp_path / "Arc2Face" / "encoder" / "config.json"
    encoder_config.write_text(json.dumps({**json.loads(encoder_config.read_text()),
                                          "architectures": ["CLIPTextModelWrapper"]}))
    assembled = Arc2FacePipeline.from_arc2face(tmp_path / "sd15", tmp_path / "Arc2Face")
    assembled.set_progress_bar_config(disable=True)
    assert type(assembled.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert assembled.scheduler.config.algorithm_type == "dpmsolver++"
    assert assembled.safety_checker is None
    assert np.abs(assembled(id_embeds=ids, generator=gens(5, 6), **RUN).images - expected).max() < 1e-5
    base.set_progress_bar_config(disable=True)
    assert np.abs(base(id_embeds=ids, generator=gens(5, 6), **RUN).images - expected).mean() > 1e-3


# ---------------------------------------------------------------- LoRA
def random_lora(model, prefix, targets, rank=4, seed=0):
    """A LoRA in diffusers' peft format (what ``save_lora_weights`` writes) with non-zero B."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in targets:
            state[f"{prefix}.{name}.lora_A.weight"] = 0.3 * torch.randn(rank, module.in_features, generator=g)
            state[f"{prefix}.{name}.lora_B.weight"] = 0.3 * torch.randn(module.out_features, rank, generator=g)
    assert state
    return state


def test_lora_load_changes_images_and_unload_restores_them():
    pipe = tiny_pipeline(seed=2)
    ids = identities(1, seed=4)
    before = pipe(id_embeds=ids, generator=gens(3), **RUN).images
    before_cond = pipe.encode_identity(ids)
    lora = {**random_lora(pipe.unet, "unet", {"to_q", "to_k", "to_v"}),
            **random_lora(pipe.text_encoder, "text_encoder", {"q_proj", "v_proj"})}
    pipe.load_lora_weights(lora, adapter_name="test")
    assert (pipe.encode_identity(ids) - before_cond).abs().max() > 1e-3  # text-encoder LoRA is used
    with_lora = pipe(id_embeds=ids, generator=gens(3), **RUN).images
    assert np.abs(with_lora - before).mean() > 1e-3
    half = pipe(id_embeds=ids, generator=gens(3), cross_attention_kwargs={"scale": 0.5}, **RUN).images
    assert np.abs(half - before).mean() > 1e-4 and np.abs(half - with_lora).mean() > 1e-4
    pipe.unload_lora_weights()
    assert np.abs(pipe(id_embeds=ids, generator=gens(3), **RUN).images - before).max() < 1e-5


def test_lcm_preset_swaps_scheduler_and_lora_and_restores_both(tmp_path):
    pipe = tiny_pipeline(seed=3)
    ids = identities(1, seed=5)
    before = pipe(id_embeds=ids, generator=gens(4), **RUN).images
    scheduler = pipe.scheduler
    # An LCM-LoRA file as published (pytorch_lora_weights.safetensors), here with random weights.
    Arc2FacePipeline.save_lora_weights(tmp_path, unet_lora_layers={
        k[len("unet."):]: v for k, v in random_lora(pipe.unet, "unet", {"to_k", "to_v"}).items()})
    preset = pipe.enable_lcm_lora(tmp_path)
    assert preset == {"num_inference_steps": 4, "guidance_scale": 1.0}
    assert isinstance(pipe.scheduler, LCMScheduler)
    fast = pipe(id_embeds=ids, generator=gens(4), height=IMAGE_SIZE, width=IMAGE_SIZE, output_type="np", **preset)
    assert fast.images.shape == before.shape and np.abs(fast.images - before).mean() > 1e-3
    pipe.disable_lcm_lora()
    assert pipe.scheduler is scheduler
    assert np.abs(pipe(id_embeds=ids, generator=gens(4), **RUN).images - before).max() < 1e-5


# ---------------------------------------------------------------- speed options
@pytest.mark.slow
def test_compiled_unet_gives_the_same_images():
    pipe = tiny_pipeline(seed=4)
    ids = identities(1, seed=6)
    before = pipe(id_embeds=ids, generator=gens(2), **RUN).images
    pipe.compile_unet(backend="eager")  # traces with dynamo; inductor would need minutes on CPU
    after = pipe(id_embeds=ids, generator=gens(2), **RUN).images
    assert np.abs(after - before).max() < 1e-4


def test_bfloat16_pipeline_runs_and_tracks_float32(pipe):
    ids = identities(1, seed=7)
    full = pipe(id_embeds=ids, generator=gens(1), **RUN).images
    half = Arc2FacePipeline(**pipe.components).to(dtype=torch.bfloat16)
    half.set_progress_bar_config(disable=True)
    assert half.encode_identity(ids).dtype == torch.bfloat16
    low = half(id_embeds=ids, generator=gens(1), **RUN).images
    assert np.abs(low - full).mean() < 0.05
    pipe.to(dtype=torch.float32)


# ---------------------------------------------------------------- photos in
@pytest.fixture(scope="module")
def face_pipe(dlib_analyzer):
    pipe = tiny_pipeline(seed=5)
    pipe.set_face_analyzer(dlib_analyzer)
    return pipe


def test_photos_in_equal_their_embeddings_in(face_pipe, dlib_analyzer, faces_dir):
    photos = [faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Angelina_Jolie_0001.jpg"]
    embeddings = torch.tensor(np.stack([dlib_analyzer.get_face(p).embedding for p in photos]))
    assert embeddings.shape == (2, 128)
    from_photos = face_pipe(face_images=photos, generator=gens(1, 2), **RUN)
    from_vectors = face_pipe(id_embeds=embeddings, generator=gens(1, 2), **RUN)
    assert np.array_equal(from_photos.images, from_vectors.images)
    assert torch.allclose(from_photos.id_embeds, F.normalize(embeddings.float(), dim=1), atol=1e-6)
    single = face_pipe(face_images=Image.open(photos[1]), generator=gens(2), **RUN)
    assert np.abs(single.images[0] - from_photos.images[1]).max() < 1e-4


def test_photo_without_a_face_raises_a_clear_error(face_pipe, tmp_path):
    blank = tmp_path / "wall.png"
    ramp = np.linspace(0, 255, 200 * 200 * 3).reshape(200, 200, 3).astype(np.uint8)
    Image.fromarray(ramp).save(blank)
    with pytest.raises(NoFaceError, match="wall.png"):
        face_pipe(face_images=[blank], **RUN)


def test_photos_need_an_analyser():
    pipe = Arc2FacePipeline(**{**tiny_components(), "tokenizer": tiny_clip_tokenizer()})
    with pytest.raises(Exception, match="set_face_analyzer"):
        pipe(face_images=["x.jpg"], **RUN)


def test_a_damaged_or_hostile_lora_on_disk_is_refused_naming_its_file(tmp_path):
    """enable_lcm_lora with a folder whose LoRA is cut short, a pickle that would run code, made for
    another model, or missing: an IdgenError naming the file (diffusers said "no file named
    pytorch_lora_weights.bin" or gave a bare size-mismatch RuntimeError); the pipeline still works."""
    import re

    from hostile_files import cut_short, pickle_running_code
    from safetensors.torch import load_file, save_file

    from idgen.errors import DataError, ModelFilesMissingError

    pipe = tiny_pipeline(seed=3)

    def lora(name: str):
        folder = tmp_path / name
        Arc2FacePipeline.save_lora_weights(folder, unet_lora_layers={
            k[len("unet."):]: v for k, v in random_lora(pipe.unet, "unet", {"to_k", "to_v"}).items()})
        return folder / "pytorch_lora_weights.safetensors"

    def other_model(path):
        state = load_file(str(path))
        state[next(iter(state))] = torch.zeros(3, 7)
        save_file(state, str(path))

    def pickled(path):
        path.unlink()
        pickle_running_code(path.with_suffix(".bin"), tmp_path / "ran")

    cases = {"cut": (cut_short, "not a complete safetensors file"),
             "other-model": (other_model, r"does not fit this Arc2FacePipeline \(size mismatch"),
             "pickled": (pickled, r"cannot be read .*\(the pickle asks for (posix|os).system")}
    files = {name: lora(name) for name in (*cases, "good")}
    ids = identities(1, seed=5)
    before = pipe(id_embeds=ids, generator=gens(4), **RUN).images
    for name, (damage, message) in cases.items():
        damage(files[name])
        named = files[name].with_suffix(".bin") if name == "pickled" else files[name]
        with pytest.raises(DataError, match=rf"{re.escape(str(named))}: {message}.*pass an LCM-LoRA"):
            pipe.enable_lcm_lora(files[name].parent)
    assert not (tmp_path / "ran").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFilesMissingError, match=r"empty: no pytorch_lora_weights.safetensors in this folder"):
        pipe.enable_lcm_lora(tmp_path / "empty")
    assert np.abs(pipe(id_embeds=ids, generator=gens(4), **RUN).images - before).max() < 1e-5   # left as it was
    assert pipe.enable_lcm_lora(files["good"].parent)["num_inference_steps"] == 4


def test_an_empty_list_of_photos_says_to_pass_one(face_pipe):
    from idgen.errors import DataError

    for empty in ([], ()):
        with pytest.raises(DataError, match="face_images is empty: pass at least one face photo"):
            face_pipe(face_images=empty, **RUN)


# ---------------------------------------------------------------- the published extensions
@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A tiny Arc2Face folder with controlnet/, exp_adapter/ and ref_adapter/ as published."""
    from idgen.testing.tiny_arc2face import write_arc2face_extensions

    return write_arc2face_extensions(tmp_path_factory.mktemp("Arc2Face"), tiny_pipeline(seed=0).unet)


def reference_photo(seed=0):
    return Image.fromarray((np.random.RandomState(seed).rand(IMAGE_SIZE, IMAGE_SIZE, 3) * 255).astype(np.uint8))


def test_each_adapter_off_or_at_scale_0_equals_the_plain_pipeline_bit_for_bit(family):
    pipe = tiny_pipeline(seed=0)
    ids, batch = identities(2, seed=7), dict(num_images_per_prompt=2, **RUN)
    plain = pipe(id_embeds=ids, generator=gens(1, 2, 3, 4), **batch).images
    pipe.load_expression_adapter(family)
    pipe.load_reference_adapter(family)
    assert pipe.has_expression_adapter and pipe.has_reference_adapter
    expression = torch.randn(55, generator=torch.Generator().manual_seed(0))
    for off in ({}, {"expression": expression, "expression_scale": 0.0},
                {"reference_image": reference_photo(), "reference_scale": 0.0}):
        assert np.array_equal(pipe(id_embeds=ids, generator=gens(1, 2, 3, 4), **off, **batch).images, plain), off
    for on in ({"expression": expression}, {"reference_image": reference_photo()}):
        assert np.abs(pipe(id_embeds=ids, generator=gens(1, 2, 3, 4), **on, **batch).images - plain).mean() > 1e-3, on
    # a call with an adapter leaves nothing behind (IP-Adapter scale, LoRA scale, attention processors)
    assert np.array_equal(pipe(id_embeds=ids, generator=gens(1, 2, 3, 4), **batch).images, plain)


def test_expressions_pair_with_their_identities_in_any_batch(family):
    pipe = tiny_pipeline(seed=0)
    pipe.load_expression_adapter(family)
    ids = identities(2, seed=8)
    expressions = torch.randn(2, 55, generator=torch.Generator().manual_seed(1))
    both = pipe(id_embeds=ids, expression=expressions, num_images_per_prompt=2, generator=gens(1, 2, 3, 4), **RUN).images
    for k in range(2):   # identity k with expression k, alone, gives the same images
        alone = pipe(id_embeds=ids[k], expression=expressions[k], num_images_per_prompt=2,
                     generator=gens(1 + 2 * k, 2 + 2 * k), **RUN).images
        assert np.abs(alone - both[2 * k:2 * k + 2]).max() < 1e-5
    per_image = pipe(id_embeds=ids, expression=expressions.repeat_interleave(2, dim=0), num_images_per_prompt=2,
                     generator=gens(1, 2, 3, 4), **RUN).images
    assert np.abs(per_image - both).max() < 1e-6
    with pytest.raises(ValueError, match="give 1, one per identity"):
        pipe(id_embeds=ids, expression=torch.zeros(3, 55), **RUN)
    with pytest.raises(ValueError, match="55 FLAME parameters"):
        pipe(id_embeds=ids, expression=torch.zeros(50), **RUN)


def test_adapters_need_loading_first(pipe):
    with pytest.raises(ValueError, match="load_expression_adapter"):
        pipe(id_embeds=identities(1), expression=torch.zeros(55), **RUN)
    with pytest.raises(ValueError, match="load_reference_adapter"):
        pipe(id_embeds=identities(1), reference_image=reference_photo(), **RUN)


def test_reference_attention_lets_the_guided_half_attend_to_the_recorded_states():
    """The read step by hand: queries from the sample, keys and values from it and the recorded states."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from idgen.pipelines.arc2face_adapters import _ReferenceAttention

    torch.manual_seed(0)
    attn = Attention(16, heads=2, dim_head=8)
    x, recorded = torch.randn(2, 5, 16), torch.randn(1, 7, 16)
    read = _ReferenceAttention(AttnProcessor2_0(), {"a": recorded}, "a", write=False)
    out = read(attn, x)

    def by_hand(h, context):
        q, k, v = (p(t).view(1, -1, 2, 8).transpose(1, 2) for p, t in ((attn.to_q, h), (attn.to_k, context), (attn.to_v, context)))
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
        return attn.to_out[0]((w @ v).transpose(1, 2).reshape(1, -1, 16))

    assert torch.allclose(out[:1], by_hand(x[:1], x[:1]), atol=1e-5)                          # unconditional: plain
    assert torch.allclose(out[1:], by_hand(x[1:], torch.cat([x[1:], recorded], 1)), atol=1e-5)  # guided: + reference


def test_the_reference_pass_runs_the_unet_as_published(family):
    """The photo's states are recorded by the UNet without the Reference LoRA or the Expression
    Adapter (the reference runs a separate, plain copy of the Arc2Face UNet)."""
    pipe = tiny_pipeline(seed=0)
    embeds = pipe.encode_identity(identities(1))
    plain = pipe._record_reference(reference_photo(), embeds, 2)
    pipe.load_expression_adapter(family)
    pipe.load_reference_adapter(family)
    loaded = pipe._record_reference(reference_photo(), embeds, 2)
    self_attention = [name for name in pipe.unet.attn_processors if name.endswith("attn1.processor")]
    assert sorted(plain) == sorted(loaded) == sorted(self_attention)
    for name in plain:
        assert plain[name].shape[0] == 2 and torch.equal(plain[name], loaded[name])


def test_controlnet_loads_from_the_published_layout_and_follows_its_condition(family, tmp_path):
    from idgen.pipelines import Arc2FaceControlNetPipeline

    base = tiny_pipeline(seed=0)
    base.save_pretrained(tmp_path / "sd15")
    base.unet.save_pretrained(family / "arc2face")
    base.text_encoder.save_pretrained(family / "encoder")
    pipe = Arc2FaceControlNetPipeline.from_arc2face(tmp_path / "sd15", family)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_expression_adapter(family)
    pipe.load_reference_adapter(family)
    assert type(pipe.controlnet).__name__ == "ControlNetModel"
    ids = identities(1, seed=2)
    one, other = (pipe(id_embeds=ids, image=reference_photo(seed), generator=gens(3), **RUN).images for seed in (1, 2))
    assert np.abs(one - other).mean() > 1e-3
    # all three together
    combined = pipe(id_embeds=ids, image=reference_photo(1), expression=torch.ones(55), reference_image=reference_photo(3),
                    generator=gens(3), **RUN).images
    assert np.abs(combined - one).mean() > 1e-3


def test_the_reference_adapter_combines_with_other_loras(family):
    """Loading it keeps the active LoRAs active at their weights; off, the images are those of the
    other LoRAs alone; a reference image brings it in even when set_adapters (or a LoRA loaded
    later, such as the LCM-LoRA) left it out, and the active set is as it was afterwards."""
    pipe = tiny_pipeline(seed=0)
    ids = identities(1, seed=9)
    pipe.load_lora_weights(random_lora(pipe.unet, "unet", {"to_q", "to_v"}, seed=5), adapter_name="style")
    pipe.set_adapters(["style"], [0.5])
    styled = pipe(id_embeds=ids, generator=gens(1), **RUN).images
    pipe.load_reference_adapter(family)
    assert sorted(pipe.get_active_adapters()) == ["reference", "style"]
    assert np.array_equal(pipe(id_embeds=ids, generator=gens(1), **RUN).images, styled)
    kept = pipe(id_embeds=ids, reference_image=reference_photo(), generator=gens(1), **RUN).images
    assert np.abs(kept - styled).mean() > 1e-3
    pipe.set_adapters(["style"], [0.5])
    again = pipe(id_embeds=ids, reference_image=reference_photo(), generator=gens(1), **RUN).images
    assert np.abs(again - kept).max() < 1e-5 and pipe.get_active_adapters() == ["style"]
