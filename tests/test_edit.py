"""idgen.edit on real LFW photos (dlib analyser) with tiny random Arc2Face and InstantID pipelines: the mask
follows the face, pixels outside it are kept exactly, only the chosen face changes, strength 0 is
the identity, faceless photos fail clearly, similarities are what the recogniser measures; CLI."""

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_sd import tiny_pipeline

from idgen.cli import main
from idgen.edit import EditResult, face_mask, replace_identity, restyle
from idgen.errors import MultipleFacesError, NoFaceError
from idgen.faces import cosine_similarity, load_image
from idgen.pipelines import Arc2FaceInpaintPipeline

FAST = dict(num_inference_steps=2)
PHOTO, TARGET, OTHER = "Aaron_Peirsol_0001.jpg", "Angelina_Jolie_0001.jpg", "Abdullah_Gul_0001.jpg"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipe(dlib_analyzer):
    pipe = tiny_pipeline(seed=7)
    pipe.set_face_analyzer(dlib_analyzer)
    return pipe


@pytest.fixture(scope="module")
def inpaint(pipe):
    edit = Arc2FaceInpaintPipeline.from_pipe(pipe)
    edit.set_face_analyzer(pipe.face_analyzer)
    edit.set_progress_bar_config(disable=True)
    return edit


@pytest.fixture(scope="module")
def two_faces(faces_dir):
    """Two LFW photos side by side: Aaron Peirsol on the left, Abdullah Gul on the right."""
    return np.concatenate([load_image(faces_dir / PHOTO), load_image(faces_dir / OTHER)], axis=1)


def cosine(a, b):
    return float(cosine_similarity(np.asarray(a)[None], np.asarray(b)[None]).ravel()[0])


def blank_photo(path):
    ramp = np.linspace(0, 255, 200 * 200 * 3).reshape(200, 200, 3).astype(np.uint8)
    Image.fromarray(ramp).save(path)
    return path


def measured_embedding(analyzer, image, where):
    """The test's own measurement of the edited face: the re-detected face over the original box,
    else the recogniser's crop at the original landmarks."""
    for face in analyzer.analyze(image):
        x1, y1, x2, y2 = face.bbox
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        if where.bbox[0] < cx < where.bbox[2] and where.bbox[1] < cy < where.bbox[3]:
            return face.embedding
    crop = analyzer.recognizer.crop(image, where.landmarks, where.bbox)
    return analyzer.recognizer.embed(crop[None])[0]


def test_mask_follows_the_detected_face_on_a_real_photo(dlib_analyzer, faces_dir):
    rgb = load_image(faces_dir / PHOTO)
    face = dlib_analyzer.get_face(rgb)
    mask = face_mask(rgb.shape, face)
    assert mask.shape == rgb.shape[:2] and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() == 1.0
    for x, y in face.landmarks:  # eyes, nose, mouth corners are fully inside
        assert mask[int(round(y)), int(round(x))] == 1.0
    assert mask[0, 0] == mask[0, -1] == mask[-1, 0] == mask[-1, -1] == 0.0
    ys, xs = np.nonzero(mask)
    x1, y1, x2, y2 = face.bbox
    assert x1 < np.average(xs, weights=mask[ys, xs]) < x2 and y1 < np.average(ys, weights=mask[ys, xs]) < y2
    # Move the person 40 px right and 24 px down: the detector's face and the mask move with them.
    shifted = np.zeros((rgb.shape[0] + 24, rgb.shape[1] + 40, 3), dtype=np.uint8)
    shifted[24:, 40:] = rgb
    # (dlib's HOG boxes snap to 8-px cells, so the box may move by 40 ± 8 px.)
    moved_face = dlib_analyzer.get_face(shifted)
    moved = face_mask(shifted.shape, moved_face)
    for x, y in moved_face.landmarks:
        assert moved[int(round(y)), int(round(x))] == 1.0
    assert moved[:24].max() == 0.0 and moved[:, :40].max() == 0.0  # the black border stays outside
    ys2, xs2 = np.nonzero(moved)
    assert abs(np.average(xs2, weights=moved[ys2, xs2]) - np.average(xs, weights=mask[ys, xs]) - 40) <= 8
    assert abs(np.average(ys2, weights=moved[ys2, xs2]) - np.average(ys, weights=mask[ys, xs]) - 24) <= 8


def test_replace_keeps_every_pixel_outside_the_mask_and_reports_measured_similarity(pipe, dlib_analyzer, faces_dir):
    result = replace_identity(faces_dir / PHOTO, faces_dir / TARGET, pipe=pipe, generator=torch.Generator().manual_seed(0),
                              **FAST)
    assert isinstance(result, EditResult) and result.faces == [0]
    original = load_image(faces_dir / PHOTO)
    edited = np.asarray(result.image)
    assert edited.shape == original.shape
    outside = result.mask == 0
    assert 0.3 < outside.mean() < 0.95
    assert np.array_equal(edited[outside], original[outside])
    inside = result.mask == 1
    assert np.abs(edited[inside].astype(float) - original[inside]).mean() > 5  # the face was re-drawn
    target = dlib_analyzer.get_face(faces_dir / TARGET).embedding
    person = dlib_analyzer.get_face(original)
    embedding = measured_embedding(dlib_analyzer, edited, person)
    assert result.similarity_to_target[0] == pytest.approx(cosine(embedding, target), abs=1e-5)
    assert result.similarity_to_original[0] == pytest.approx(cosine(embedding, person.embedding), abs=1e-5)


def test_several_faces_need_a_choice_and_only_the_chosen_one_changes(inpaint, dlib_analyzer, two_faces):
    faces = dlib_analyzer.analyze(two_faces)
    assert len(faces) == 2
    with pytest.raises(MultipleFacesError, match="face=INDEX"):
        replace_identity(two_faces, faces[0].embedding, pipe=inpaint, **FAST)
    right = max(range(2), key=lambda i: faces[i].bbox[0])
    left = 1 - right
    result = replace_identity(two_faces, faces[left].embedding, pipe=inpaint, face=right,
                              generator=torch.Generator().manual_seed(1), **FAST)
    assert result.faces == [right]
    changed = np.any(np.asarray(result.image) != two_faces, axis=-1)
    assert changed.sum() > 500
    assert not changed[result.mask == 0].any()
    assert not changed[:, : two_faces.shape[1] // 2].any()  # the left person is untouched
    x1, y1, x2, y2 = np.round(faces[left].bbox).astype(int)
    assert result.mask[y1:y2, x1:x2].max() == 0.0
    both = replace_identity(two_faces, faces[left].embedding, pipe=inpaint, face="all", **FAST)
    assert both.faces == [0, 1] and len(both.similarity_to_target) == 2
    assert np.any(np.asarray(both.image) != two_faces, axis=-1)[:, : two_faces.shape[1] // 2].any()


def test_strength_zero_returns_the_input(pipe, dlib_analyzer, faces_dir):
    original = load_image(faces_dir / PHOTO)
    replaced = replace_identity(original, faces_dir / TARGET, pipe=pipe, strength=0.0)
    assert np.array_equal(np.asarray(replaced.image), original)
    person = dlib_analyzer.get_face(original).embedding
    target = dlib_analyzer.get_face(faces_dir / TARGET).embedding
    assert replaced.similarity_to_original[0] == pytest.approx(1.0, abs=1e-5)
    assert replaced.similarity_to_target[0] == pytest.approx(cosine(person, target), abs=1e-5)
    restyled = restyle(original, pipe=pipe, strength=0.0)
    assert np.array_equal(np.asarray(restyled.image), original)
    assert restyled.similarity_to_target[0] == pytest.approx(1.0, abs=1e-5)


def test_photo_without_a_face_raises_no_face_error(pipe, tmp_path, faces_dir):
    wall = blank_photo(tmp_path / "wall.png")
    with pytest.raises(NoFaceError, match="wall.png"):
        replace_identity(wall, faces_dir / TARGET, pipe=pipe, **FAST)
    with pytest.raises(NoFaceError, match="wall.png"):
        restyle(wall, pipe=pipe, **FAST)


def test_restyle_rerenders_the_photo_at_full_size_keeping_its_identity(pipe, dlib_analyzer, faces_dir):
    original = load_image(faces_dir / PHOTO)
    result = restyle(faces_dir / PHOTO, pipe=pipe, strength=0.5, generator=torch.Generator().manual_seed(2), **FAST)
    edited = np.asarray(result.image)
    assert edited.shape == original.shape and result.mask is None and result.similarity_to_original is None
    assert np.abs(edited.astype(float) - original).mean() > 1
    person = dlib_analyzer.get_face(original)
    embedding = measured_embedding(dlib_analyzer, edited, person)
    assert result.similarity_to_target[0] == pytest.approx(cosine(embedding, person.embedding), abs=1e-5)
    with pytest.raises(ValueError, match="no text prompt"):
        restyle(faces_dir / PHOTO, "an oil painting", pipe=pipe, **FAST)


def test_cli_replace_and_restyle(pipe, faces_dir, tmp_path, capsys):
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    out = tmp_path / "replaced.png"
    common = ["--model", str(model), "--steps", "2", "--seed", "3", "--detector", "dlib", "--recognizer", "dlib"]
    assert main(["edit", "replace", "--photo", str(faces_dir / PHOTO), "--identity", str(faces_dir / TARGET),
                 "--face-index", "0", "--output-file", str(out), *common]) == 0
    printed = capsys.readouterr().out
    assert "face 0: similarity to target" in printed and "to original person" in printed
    replaced = np.asarray(Image.open(out))
    original = load_image(faces_dir / PHOTO)
    assert replaced.shape == original.shape and not np.array_equal(replaced, original)
    assert np.array_equal(replaced[:10], original[:10])  # the top rows are far outside the face mask
    restyled = tmp_path / "restyled.jpg"
    assert main(["edit", "restyle", "--photo", str(faces_dir / PHOTO), "--output-file", str(restyled),
                 "--strength", "0.5", *common]) == 0
    assert Image.open(restyled).size == (original.shape[1], original.shape[0])
    assert main(["edit", "replace", "--photo", str(blank_photo(tmp_path / "wall.png")), "--identity",
                 str(faces_dir / TARGET), "--output-file", str(tmp_path / "x.png"), *common]) == 1
    assert "no face found in" in capsys.readouterr().err


# ---------------------------------------------------------------------------- InstantID-style (SDXL)
def replace_watching_the_controlnet(pipe, faces_dir, hook):
    """Replace the person in PHOTO by TARGET with a prompt, ``hook`` (a forward hook with kwargs)
    watching the ControlNet; checks that only the masked pixels changed, and changed visibly.
    Returns the result and the original photo."""
    handle = pipe.controlnet.register_forward_hook(hook, with_kwargs=True)
    try:
        result = replace_identity(faces_dir / PHOTO, faces_dir / TARGET, pipe=pipe, prompt="a portrait",
                                  generator=torch.Generator().manual_seed(0), **FAST)
    finally:
        handle.remove()
    original = load_image(faces_dir / PHOTO)
    edited = np.asarray(result.image)
    outside = result.mask == 0
    assert edited.shape == original.shape and np.array_equal(edited[outside], original[outside])
    assert np.abs(edited[result.mask == 1].astype(float) - original[result.mask == 1]).mean() > 5
    return result, original


@pytest.fixture(scope="module")
def instantid(dlib_analyzer, tmp_path_factory):
    from tiny_models import instantid_state_dict, tiny_sdxl_components

    from idgen.pipelines import InstantIDPipeline

    pipe = InstantIDPipeline(**tiny_sdxl_components(tmp_path_factory.mktemp("sdxl")))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_instantid_adapter(instantid_state_dict(pipe.unet, 128))  # dlib's 128-d embeddings fit
    pipe.set_face_analyzer(dlib_analyzer)
    return pipe


def test_instantid_replace_inpaints_at_the_original_pose_and_keeps_the_rest(instantid, dlib_analyzer, faces_dir):
    from idgen.edit.region import crop_box
    from idgen.pipelines.keypoints import draw_keypoints

    conditions = []
    result, original = replace_watching_the_controlnet(
        instantid, faces_dir, lambda m, a, kw, out: conditions.append(kw["controlnet_cond"][0].clone()))
    edited = np.asarray(result.image)
    # The IdentityNet saw the replaced face's own keypoints, mapped into the 64-px crop.
    face = dlib_analyzer.get_face(original)
    x0, y0, side = crop_box(face, original.shape)
    expected = np.asarray(draw_keypoints((face.landmarks - [x0, y0]) * 64 / side, (64, 64)), dtype=np.float32)
    seen = conditions[0].permute(1, 2, 0).numpy() * 255
    assert len(conditions) == 2 and np.abs(seen - expected).max() < 1.0
    target = dlib_analyzer.get_face(faces_dir / TARGET).embedding
    assert result.similarity_to_target[0] == pytest.approx(
        cosine(measured_embedding(dlib_analyzer, edited, face), target), abs=1e-5)


@pytest.mark.parametrize("family", ["instantid", "infiniteyou"])
def test_restyle_with_a_prompt_follows_it_and_keeps_the_size(family, request, dlib_analyzer, faces_dir):
    pipe = request.getfixturevalue(family)
    original = load_image(faces_dir / PHOTO)
    runs = [restyle(original, prompt, pipe=pipe, strength=0.75, generator=torch.Generator().manual_seed(4), **FAST)
            for prompt in ("an oil painting", "a pencil sketch")]
    a, b = (np.asarray(r.image).astype(float) for r in runs)
    assert a.shape == original.shape and np.abs(a - original).mean() > 1
    assert np.abs(a - b).mean() > 0.1  # the prompt matters
    person = dlib_analyzer.get_face(original)
    assert runs[0].similarity_to_target[0] == pytest.approx(
        cosine(measured_embedding(dlib_analyzer, a.astype(np.uint8), person), person.embedding), abs=1e-5)


def test_cli_replace_with_an_instantid_checkpoint_folder(faces_dir, tmp_path, capsys):
    from tiny_models import instantid_state_dict, tiny_controlnet, tiny_sdxl_components

    from idgen.pipelines import InstantIDPipeline

    base, checkpoint = tmp_path / "sdxl", tmp_path / "instantid"
    parts = tiny_sdxl_components(tmp_path / "parts")
    InstantIDPipeline(**parts).save_pretrained(base)
    tiny_controlnet(seed=2).save_pretrained(checkpoint / "ControlNetModel")
    torch.save(instantid_state_dict(parts["unet"], 128), checkpoint / "ip-adapter.bin")  # the published layout
    out = tmp_path / "replaced.png"
    assert main(["edit", "replace", "--photo", str(faces_dir / PHOTO), "--identity", str(faces_dir / TARGET),
                 "--instantid", str(checkpoint), "--instantid-base", str(base), "--prompt", "a portrait", "--steps", "2",
                 "--detector", "dlib", "--recognizer", "dlib", "--output-file", str(out)]) == 0
    assert "face 0: similarity to target" in capsys.readouterr().out
    replaced, original = np.asarray(Image.open(out)), load_image(faces_dir / PHOTO)
    assert replaced.shape == original.shape and not np.array_equal(replaced, original)
    assert main(["edit", "replace", "--photo", str(faces_dir / PHOTO), "--identity", str(faces_dir / TARGET),
                 "--instantid", str(tmp_path / "missing"), "--instantid-base", str(base), "--detector", "dlib",
                 "--recognizer", "dlib", "--output-file", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("idgen: error: cannot load the instantid model") and "\n" not in error


# ---------------------------------------------------------------------------- InfiniteYou-style (FLUX)
@pytest.fixture(scope="module")
def infiniteyou(dlib_analyzer):
    from idgen.testing.tiny_infiniteyou import tiny_infiniteyou

    pipe = tiny_infiniteyou(embedding_dim=128)   # dlib's 128-d embeddings fit
    pipe.set_face_analyzer(dlib_analyzer)
    return pipe


def test_infiniteyou_replace_inpaints_at_the_original_pose_and_keeps_the_rest(infiniteyou, dlib_analyzer, faces_dir,
                                                                             monkeypatch):
    from idgen.edit.region import crop_box
    from idgen.pipelines import InfiniteYouMixin

    poses, states = [], []
    pose_image = InfiniteYouMixin._pose_image

    def record_pose(self, pose_photo, keypoints, width, height):
        poses.append((np.asarray(keypoints), width, height))
        return pose_image(self, pose_photo, keypoints, width, height)

    monkeypatch.setattr(InfiniteYouMixin, "_pose_image", record_pose)
    result, original = replace_watching_the_controlnet(
        infiniteyou, faces_dir, lambda m, a, kw, out: states.append(kw["encoder_hidden_states"].clone()))
    edited = np.asarray(result.image)
    # InfuseNet drew the replaced face's own landmarks, mapped into the 32-px crop, and read the target's
    # identity tokens at every step
    face = dlib_analyzer.get_face(original)
    x0, y0, side = crop_box(face, original.shape)
    [(keypoints, width, height)] = poses
    assert (width, height) == (32, 32)
    np.testing.assert_allclose(keypoints, (face.landmarks - [x0, y0]) * 32 / side)
    target = dlib_analyzer.get_face(faces_dir / TARGET).embedding
    tokens = infiniteyou.identity_tokens(torch.nn.functional.normalize(torch.from_numpy(target)[None], dim=-1))
    assert len(states) == FAST["num_inference_steps"]
    for seen in states:
        torch.testing.assert_close(seen, tokens)
    assert result.similarity_to_target[0] == pytest.approx(
        cosine(measured_embedding(dlib_analyzer, edited, face), target), abs=1e-5)


def test_cli_edit_with_infiniteyou_downloads_tiny_and_unconfigured(faces_dir, tmp_path, capsys, monkeypatch):
    from diffusers import FluxPipeline

    from idgen.testing.tiny_infiniteyou import infiniteyou_projection_state_dict, tiny_infiniteyou

    monkeypatch.delenv("IDGEN_INFINITEYOU", raising=False)
    pipe = tiny_infiniteyou(embedding_dim=128)
    base, checkpoint = tmp_path / "FLUX.1-dev", tmp_path / "InfiniteYou"
    FluxPipeline(**{k: v for k, v in pipe.components.items()
                    if k in FluxPipeline._get_signature_keys(FluxPipeline)[0]}).save_pretrained(base)
    variant = checkpoint / "infu_flux_v1.0" / "aes_stage2"
    pipe.controlnet.save_pretrained(variant / "InfuseNetModel")
    torch.save(infiniteyou_projection_state_dict(0, embedding_dim=128), variant / "image_proj_model.bin")
    faces = ["--detector", "dlib", "--recognizer", "dlib", "--steps", "2"]
    out = tmp_path / "replaced.png"
    assert main(["edit", "replace", "--photo", str(faces_dir / PHOTO), "--identity", str(faces_dir / TARGET),
                 "--infiniteyou", str(checkpoint), "--infiniteyou-base", str(base), "--prompt", "a portrait",
                 "--size", "32", "--output-file", str(out), *faces]) == 0   # --infiniteyou alone picks the style
    printed = capsys.readouterr().out
    assert "idgen: infiniteyou: InfiniteYou" in printed and "face 0: similarity to target" in printed
    replaced, original = np.asarray(Image.open(out)), load_image(faces_dir / PHOTO)
    assert replaced.shape == original.shape and not np.array_equal(replaced, original)
    assert np.array_equal(replaced[:10], original[:10])  # the top rows are far outside the face mask

    restyled = tmp_path / "restyled.png"
    assert main(["edit", "restyle", "--photo", str(faces_dir / PHOTO), "--style", "infiniteyou", "--tiny",
                 "--prompt", "an oil painting", "--strength", "0.5", "--output-file", str(restyled), *faces]) == 0
    assert Image.open(restyled).size == (original.shape[1], original.shape[0])

    failures = [(["--style", "infiniteyou"], "InfiniteYou is not configured: download ByteDance/InfiniteYou"),
                (["--infiniteyou", str(checkpoint), "--infiniteyou-base", str(base), "--infiniteyou-variant",
                  "sim_stage1"], "sim_stage1/InfuseNetModel"),
                (["--infiniteyou", str(checkpoint), "--infiniteyou-base", str(tmp_path / "missing")],
                 "cannot load the infiniteyou model")]
    for flags, reason in failures:
        assert main(["edit", "restyle", "--photo", str(faces_dir / PHOTO), "--output-file", str(restyled), *flags, *faces]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("idgen: error:")]
        assert len(errors) == 1 and reason in errors[0], (flags, errors)


def test_cli_replace_refuses_an_identity_npy_of_objects_naming_it(tmp_path, faces_dir, capsys):
    from hostile_files import object_array_npy

    identity = object_array_npy(tmp_path / "target.npy")
    assert main(["edit", "replace", "--photo", str(faces_dir / PHOTO), "--identity", str(identity),
                 "--output-file", str(tmp_path / "x.png"), "--model", str(tmp_path / "no-model")]) == 1
    assert f"{identity}: it holds Python objects (dtype object)" in capsys.readouterr().err
