"""The Gradio demo in --tiny mode, served on localhost and driven through gradio_client like a visitor.

One server for the module (launching costs seconds); each tab is exercised with good and bad inputs.
Tiny random models make noise, so assertions are about behaviour we can compute independently:
seeds, identity arithmetic, files, counts, and error messages.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
import numpy as np
import pytest

from idgen.config import SEED
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from idgen.demo import ModelHub, ModelSettings, build_demo, launch  # noqa: E402
from idgen.application import actions  # noqa: E402
from idgen.identity import slerp  # noqa: E402
from hostile_files import png_claiming  # noqa: E402


@pytest.fixture(scope="module")
def served(one_thread):
    hub = ModelHub(ModelSettings(tiny=True))
    demo = build_demo(hub)
    launch(demo, prevent_thread_lock=True, quiet=True, max_file_size="1mb")
    try:
        yield hub, Client(demo.local_url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def bad_photos(tmp_path_factory, faces_dir):
    folder = tmp_path_factory.mktemp("bad")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(folder / "blank.png")
    pair = [Image.open(faces_dir / name).convert("RGB") for name in ("Aaron_Peirsol_0001.jpg", "Abdullah_Gul_0001.jpg")]
    group = Image.new("RGB", (500, 250))
    group.paste(pair[0], (0, 0))
    group.paste(pair[1], (250, 0))
    group.save(folder / "two_people.png")
    (folder / "notes.txt").write_text("not an image")
    np.save(folder / "big.npy", np.random.default_rng(0).random((400, 400)))  # 1.3 MB > 1mb limit
    png_claiming(folder / "bomb.png", 9000, 9000)   # 70 bytes that would decode to 81 megapixels
    (folder / "truncated.jpg").write_bytes((faces_dir / "Aaron_Peirsol_0001.jpg").read_bytes()[:3000])
    return folder


def _image_path(item) -> str:
    image = item["image"]
    return image if isinstance(image, str) else image["path"]


def _error_of(call) -> str:
    with pytest.raises(Exception) as caught:
        call()
    return str(caught.value)


def _generate(client, photos, *, use_random=False, seed=0, count=2, steps=2, style="arc2face", prompt="",
              negative="", pose=None):
    files = [handle_file(str(p)) for p in photos]
    pose = handle_file(str(pose)) if pose else None
    return client.predict(files, use_random, style, prompt, negative, pose, seed, steps, 3.0, count, False,
                          api_name="/generate")


def _pixels(item_or_path) -> np.ndarray:
    path = item_or_path if isinstance(item_or_path, str) else _image_path(item_or_path)
    return np.asarray(Image.open(path).convert("RGB"))


def test_page_is_labelled_tiny_and_loads_nothing_up_front():
    import gradio as gr

    hub = ModelHub(ModelSettings(tiny=True))
    demo = build_demo(hub)
    assert "tiny random models" in demo.title
    texts = [block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    assert any("Tiny random models" in str(text) for text in texts)
    assert hub.loaded() == []


def test_generate_from_photo(served, faces_dir):
    hub, client = served
    gallery, detected, archive, status = _generate(client, [faces_dir / "Aaron_Peirsol_0001.jpg"], count=2)
    assert hub.loaded() == ["analyzer", "arc2face"]  # no InstantID, nothing for other tabs
    assert len(gallery) == 2
    for item in gallery:
        assert item["caption"] == "no face found in the result" or item["caption"].startswith("identity similarity")
        assert Image.open(_image_path(item)).size == (32, 32)
    # The detected face is the photo with the box and keypoints drawn on it.
    photo = np.asarray(Image.open(faces_dir / "Aaron_Peirsol_0001.jpg").convert("RGB"))
    drawn = np.asarray(Image.open(detected))
    assert drawn.shape == photo.shape and (drawn != photo).any()
    with zipfile.ZipFile(archive) as z:
        assert sorted(z.namelist()) == ["image_000.png", "image_001.png"]
    assert "Aaron_Peirsol_0001.jpg" in status


def test_image_k_depends_only_on_seed_plus_k(served, faces_dir):
    _, client = served
    photo = [faces_dir / "Aaron_Peirsol_0001.jpg"]
    pair = _generate(client, photo, seed=5, count=2)[0]
    alone = _generate(client, photo, seed=6, count=1)[0]
    second = np.asarray(Image.open(_image_path(pair[1])))
    assert np.array_equal(second, np.asarray(Image.open(_image_path(alone[0]))))
    assert not np.array_equal(second, np.asarray(Image.open(_image_path(pair[0]))))


def test_random_identity_needs_no_photo(served):
    _, client = served
    gallery, detected, _, status = _generate(client, [], use_random=True, count=1)
    assert len(gallery) == 1 and detected is None and "random identity" in status


@pytest.mark.parametrize("name, expected", [
    ("blank.png", "No face"),
    ("two_people.png", "faces"),
    ("notes.txt", "notes.txt"),
    ("bomb.png", "more than idgen decodes"),
    ("truncated.jpg", "truncated or corrupt"),
])
def test_bad_photos_give_a_friendly_message(served, bad_photos, name, expected):
    _, client = served
    import gradio.utils

    message = _error_of(lambda: _generate(client, [bad_photos / name], count=1))
    assert expected.lower() in message.lower()
    assert "Traceback" not in message and "Something went wrong" not in message
    # The upload's own name, not the server's copy of it; advice the page can act on.
    assert name in message and f"/{name}" not in message and gradio.utils.get_upload_folder() not in message
    assert "det_size" not in message and "upsample" not in message and "policy=" not in message


def test_page_messages_name_the_upload_and_what_the_visitor_can_do():
    import gradio.utils

    from idgen.demo.ui import page_message
    from idgen.errors import MultipleFacesError, NoFaceError
    from idgen.faces.analyzer import SEVERAL_FACES_HINT, TIGHT_CROP_HINT

    upload = f"{gradio.utils.get_upload_folder()}/0f3a9c1e/my photo.jpg"
    assert page_message(NoFaceError(f"no face found in {upload}; {TIGHT_CROP_HINT}")) == (
        "no face found in my photo.jpg; upload a photo where the whole face shows, with some background around "
        "the head (tightly cropped faces are often missed)")
    assert page_message(MultipleFacesError(f"2 faces found in {upload}; {SEVERAL_FACES_HINT}")) == (
        "2 faces found in my photo.jpg; crop the photo to one person and upload it again")
    assert page_message(NoFaceError("no face found in /data/me.jpg; x")) == "no face found in /data/me.jpg; x"


def test_a_busy_port_is_said_and_the_next_free_one_used(capsys):
    import socket

    from idgen.demo.ui import free_port

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = free_port("127.0.0.1", taken)
    assert port > taken
    assert capsys.readouterr().out.strip() == (f"idgen: port {taken} is in use; the demo serves on "
                                               f"http://127.0.0.1:{port} instead (choose a port with --port)")
    assert free_port("127.0.0.1", port) == port and capsys.readouterr().out == ""   # free: nothing said


def test_random_identity_captions_do_not_mention_an_input():
    import gradio as gr

    demo = build_demo(ModelHub(ModelSettings(tiny=True)))
    [gallery] = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery) and b.elem_id == "gallery"]
    assert "random identity" in gallery.label and "the input" not in gallery.label


def test_no_photo_and_oversized_upload_are_refused(served, bad_photos):
    _, client = served
    assert "Upload a face photo" in _error_of(lambda: _generate(client, [], count=1))
    assert "exceeds the maximum file size" in _error_of(lambda: _generate(client, [bad_photos / "big.npy"], count=1))


def test_friendly_errors_hide_unexpected_tracebacks():
    import gradio as gr

    from idgen.demo import friendly_errors

    @friendly_errors
    def broken():
        raise RuntimeError("disk on fire")

    with pytest.raises(gr.Error) as caught:
        broken()
    assert "RuntimeError: disk on fire" in caught.value.message and "server log" in caught.value.message


def test_mix_at_zero_is_face_a(served, faces_dir):
    hub, client = served
    a, b = faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Abdullah_Gul_0001.jpg"
    image, text = client.predict(handle_file(str(a)), handle_file(str(b)), 0.0, 3, 2, 3.0, False, api_name="/mix")
    assert "similarity to A" in text and "similarity to B" in text
    # Independent path: A's identity straight into the pipeline with the same seed.
    identity = actions.identity_from_photos(hub, [a])
    [(expected, _)] = actions.generate_images(hub, identity, seed=3, steps=2, count=1)
    assert np.array_equal(np.asarray(Image.open(image)), np.asarray(expected))


def test_mix_follows_the_great_circle(faces_dir):
    hub = ModelHub(ModelSettings(tiny=True))
    a = actions.identity_from_photos(hub, [faces_dir / "Aaron_Peirsol_0001.jpg"]).vector
    b = actions.identity_from_photos(hub, [faces_dir / "Abdullah_Gul_0001.jpg"]).vector
    half = slerp(a, b, 0.5)
    assert torch.allclose(half @ a, half @ b, atol=1e-5)  # equidistant from A and B
    # An input photo scores ~1 against its own identity: similarity_to measures what it claims.
    photo = Image.open(faces_dir / "Aaron_Peirsol_0001.jpg")
    assert actions.similarity_to(hub, photo, a) == pytest.approx(1.0, abs=1e-4)


def test_mix_without_two_photos(served, faces_dir):
    _, client = served
    message = _error_of(lambda: client.predict(handle_file(str(faces_dir / "Aaron_Peirsol_0001.jpg")), None, 0.5,
                                               0, 2, 3.0, False, api_name="/mix"))
    assert "Upload two face photos" in message


def test_dataset_then_forget(served):
    _, client = served
    grid, plot, archive, summary, source = client.predict(3, 3, 0, 1, 3, api_name="/dataset")
    assert summary.startswith("**9 images of 3 of 3 identities kept**, from 9 renders.")   # tiny: the filter is off
    assert Image.open(plot).format == "PNG"
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert "plots/similarity.png" in names and "README.md" in names
    assert sum(n.startswith("images/") and n.endswith(".jpg") for n in names) == 9
    assert len(grid) == 9    # every kept image, each captioned with its identity, by identity
    assert [item["caption"] for item in grid] == [f"id00000{k}" for k in range(3) for _ in range(3)]
    # The Forget tab now reads this session's dataset (the server keeps where it is): forget one named person.
    assert source == "dataset"
    people = sorted({n.split("/")[1] for n in names if n.startswith("images/") and n.endswith(".jpg")})
    assert len(people) == 3
    job = client.submit("dataset", None, people[1], 1, 2, 30, api_name="/forget")
    bars = set()
    while not job.done():   # the page shows the run's own tqdm bars (track_tqdm): collect them as they come
        bars |= {(unit.desc, unit.length) for unit in job.status().progress_data or []}
        time.sleep(0.02)
    report, groups = job.result()
    assert people[1] in report and "gs-lora" in report
    assert Image.open(groups).format == "PNG"
    assert ("GS-LoRA task 1", 30) in bars   # one step per forgetting epoch, as many as asked for
    # Another visitor (another session) has made no dataset: theirs is not this one.
    other = Client(client.src, verbose=False)
    assert "the Dataset tab has made no dataset on this page yet" in _error_of(
        lambda: other.predict("dataset", None, people[1], 1, 2, 2, api_name="/forget"))


def test_forget_reads_an_uploaded_zip_of_people(served, faces_dir, tmp_path):
    _, client = served
    archive = tmp_path / "lfw.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for photo in sorted(faces_dir.iterdir()):
            person = photo.stem.rsplit("_", 1)[0]
            for copy in range(2):   # every person needs a training and a test photo
                z.write(photo, f"lfw/{person}/{copy}_{photo.name}")
    report, groups = client.predict("upload", handle_file(str(archive)), "Angelina_Jolie", 1, 2, 2, api_name="/forget")
    assert "Angelina_Jolie" in report and "gs-lora" in report and Image.open(groups).format == "PNG"
    traversal = tmp_path / "evil.zip"
    with zipfile.ZipFile(traversal, "w") as z:
        z.writestr("../../escaped.jpg", b"x")
    message = _error_of(lambda: client.predict("upload", handle_file(str(traversal)), "", 1, 2, 2, api_name="/forget"))
    assert "evil.zip: the entry '../../escaped.jpg' points outside the zip's folder" in message


def test_forget_never_reads_a_server_path_and_never_tells_whether_one_exists(served, tmp_path):
    """The face folder used to be a text field: '~' trained on the server's home folder and 'not found'
    / 'found 0 identity folders' told which paths exist. Now only the offered sources are accepted."""
    _, client = served
    (tmp_path / "home" / "alice").mkdir(parents=True)
    answers = []
    for path in (str(tmp_path / "home"), str(tmp_path / "missing"), "~", "/"):
        message = _error_of(lambda: client.predict(path, None, "", 1, 2, 2, api_name="/forget"))
        assert "alice" not in message and "Something went wrong" not in message
        answers.append(message.replace(path, "PATH"))
    assert len(set(answers)) == 1 and "not in the list of choices" in answers[0], answers


def test_the_forget_tab_offers_exactly_the_allowed_folders(tmp_path):
    import gradio as gr

    (tmp_path / "orl").mkdir()

    def offered(settings):
        demo = build_demo(ModelHub(settings))
        [dropdown] = [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "faces from"]
        [textboxes] = [[b.label for b in demo.blocks.values() if isinstance(b, gr.Textbox)]]
        assert "face folder" not in textboxes    # no field takes a server path
        return [value for _, value in dropdown.choices], dropdown.value

    assert offered(ModelSettings(tiny=True)) == (["upload", "dataset"], "upload")
    assert offered(ModelSettings(tiny=True, allow_folders=(str(tmp_path / "orl"),))) == (
        ["upload", "dataset", "folder:0"], "folder:0")


def test_numbers_out_of_range_are_refused_with_the_range(served):
    _, client = served
    for seed in (2**70, -1):
        message = _error_of(lambda: client.predict([], True, "arc2face", "", "", None, seed, 1, 3.0, 1, False,
                                                   api_name="/generate"))
        assert str(seed) in message and (str(SEED.at_most) in message.replace(",", "") or "minimum value 0" in message), message
        assert "Something went wrong" not in message
    message = _error_of(lambda: client.predict("dataset", None, "", -1, 2, 2, api_name="/forget"))
    assert "-1 is less than minimum value 1" in message


def test_a_request_writes_into_the_servers_workspace_which_close_deletes(faces_dir, one_thread):
    from idgen.application.workspace import Workspace

    demo = build_demo(ModelHub(ModelSettings(tiny=True)), Workspace(keep_requests=2))
    launch(demo, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        for seed in range(3):
            client.predict([], True, "arc2face", "", "", None, seed, 1, 3.0, 1, False, api_name="/generate")
        root = demo.workspace.root
        assert sorted(p.name for p in (root / "requests").iterdir()) == ["000002-generate", "000003-generate"]
        assert (root / "requests" / "000003-generate" / "images.zip").is_file()   # the oldest was pruned
    finally:
        demo.close()
    assert not root.exists()


def test_python_app_py_stopped_with_sigterm_leaves_no_files(tmp_path, faces_dir):
    """``python app.py`` wrote a /tmp/idgen-demo-* folder per request that outlived it; stopped (SIGTERM, as
    a service manager does), it now deletes its workspace, and Gradio its copies of uploads and results."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen([sys.executable, "app.py", "--tiny", "--port", str(port)], cwd=root, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                time.sleep(0.5)
        gallery = _generate(Client(url, verbose=False), [faces_dir / "Aaron_Peirsol_0001.jpg"], count=1, steps=1)[0]
        assert len(gallery) == 1
        assert len(list(tmp_path.glob("idgen-demo-*/requests/*-generate/images.zip"))) == 1
        assert any(p.is_file() for p in (tmp_path / "gradio").rglob("*"))   # the upload and the results
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        if server.poll() is None:
            server.kill()
    assert list(tmp_path.glob("idgen-demo-*")) == []
    # Gradio's gr.File leaves one empty placeholder file per request (its own, never tracked); nothing else
    assert [p for p in (tmp_path / "gradio").rglob("*") if p.is_file() and p.stat().st_size] == []


# ---------------------------------------------------------------------------- InstantID style
def test_instantid_style_with_prompt_negative_prompt_and_pose(served, faces_dir):
    hub, client = served
    photo, pose = faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Abdullah_Gul_0001.jpg"
    gallery, detected, archive, status = _generate(client, [photo], style="instantid", prompt="a watercolour",
                                                   negative="blurry", seed=4, count=2)
    assert "instantid" in hub.loaded() and len(gallery) == 2 and "Aaron_Peirsol_0001.jpg" in status
    for item in gallery:
        assert item["caption"] == "no face found in the result" or item["caption"].startswith("identity similarity")
        assert _pixels(item).shape == (64, 64, 3)
    source = np.asarray(Image.open(photo).convert("RGB"))
    assert _pixels(detected).shape == source.shape and (_pixels(detected) != source).any()  # box + keypoints drawn
    # Independent path: the raw dlib embedding and the photo's pose straight into the pipeline.
    face = hub.analyzer().get_face(photo)
    expected = hub.instantid()("a watercolour", negative_prompt="blurry", id_embeds=face.embedding[None],
                               pose_image=str(photo), num_inference_steps=2, guidance_scale=3.0, num_images_per_prompt=2,
                               generator=[torch.Generator().manual_seed(4 + k) for k in range(2)]).images
    for item, image in zip(gallery, expected):
        assert np.array_equal(_pixels(item), np.asarray(image))
    # A pose photo: its keypoints drive IdentityNet (different image, same seed) and its detection is shown too.
    posed, detected_pose, _, _ = _generate(client, [photo], style="instantid", prompt="a watercolour",
                                           negative="blurry", seed=4, count=1, pose=pose)
    assert not np.array_equal(_pixels(posed[0]), _pixels(gallery[0]))
    shown = _pixels(detected_pose)
    assert shown.shape[0] == source.shape[0] and shown.shape[1] > source.shape[1]  # identity | pose side by side


def test_instantid_needs_a_photo_and_a_face_in_the_pose(served, faces_dir, bad_photos):
    _, client = served
    assert "needs a face photo" in _error_of(lambda: client.predict(
        [], True, "instantid", "", "", None, 0, 1, 3.0, 1, False, api_name="/generate"))
    message = _error_of(lambda: _generate(client, [faces_dir / "Aaron_Peirsol_0001.jpg"], style="instantid",
                                          count=1, steps=1, pose=bad_photos / "blank.png"))
    assert "no face" in message.lower() and "blank.png" in message


# ---------------------------------------------------------------------------- InfiniteYou style
def test_infiniteyou_style_with_prompt_and_pose_and_from_a_random_identity(served, faces_dir):
    hub, client = served
    photo, pose = faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Abdullah_Gul_0001.jpg"
    gallery, detected, _, status = _generate(client, [photo], style="infiniteyou", prompt="a watercolour", seed=4,
                                             count=2, pose=pose)
    assert "infiniteyou" in hub.loaded() and len(gallery) == 2 and "Aaron_Peirsol_0001.jpg" in status
    source = np.asarray(Image.open(photo).convert("RGB"))
    assert _pixels(detected).shape[1] > source.shape[1]   # identity | pose side by side
    # Independent path: the photo's unit embedding and the pose photo straight into the pipeline.
    unit = torch.from_numpy(hub.analyzer().get_face(photo).normed_embedding).float()
    expected = hub.infiniteyou()("a watercolour", id_embeds=unit[None], pose_image=str(pose), num_inference_steps=2,
                                 guidance_scale=3.0, num_images_per_prompt=2,
                                 generator=[torch.Generator().manual_seed(4 + k) for k in range(2)]).images
    for item, image in zip(gallery, expected):
        assert _pixels(item).shape == (32, 32, 3) and np.array_equal(_pixels(item), np.asarray(image))
    # No photo is needed: without a pose InfuseNet gets none, so a random identity works too.
    drawn, _, _, status = client.predict([], True, "infiniteyou", "a portrait", "", None, 1, 2, 3.0, 1, False,
                                         api_name="/generate")
    assert len(drawn) == 1 and "random identity" in status
    assert "negative prompt" in _error_of(lambda: _generate(client, [photo], style="infiniteyou", negative="blurry",
                                                            count=1, steps=1))


def test_infiniteyou_style_is_offered_only_when_configured():
    import gradio as gr

    def styles(settings):
        demo = build_demo(ModelHub(settings))
        [radio] = [b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "style"]
        return [value for _, value in radio.choices]

    assert styles(ModelSettings()) == ["arc2face"]
    assert styles(ModelSettings(infiniteyou="ByteDance/InfiniteYou")) == ["arc2face", "infiniteyou"]
    assert styles(ModelSettings(tiny=True)) == ["arc2face", "instantid", "infiniteyou"]
    from idgen.errors import ConfigError

    with pytest.raises(ConfigError, match="InfiniteYou is not configured: download ByteDance/InfiniteYou"):
        ModelHub(ModelSettings()).infiniteyou()


# ---------------------------------------------------------------------------- Arc2Face's extensions
#: The Generate tab's Arc2Face extension controls, by elem_id.
ARC2FACE_CONTROLS = ("pose-normal-map", "expression-file", "expression-photo", "expression-scale", "keep-appearance",
                     "reference-scale")


def _shown_arc2face_controls(settings) -> set[str]:
    demo = build_demo(ModelHub(settings))
    return {b.elem_id for b in demo.blocks.values() if b.elem_id in ARC2FACE_CONTROLS and b.visible}


def test_arc2face_extension_controls_show_only_when_their_files_are_here(tmp_path):
    assert _shown_arc2face_controls(ModelSettings(tiny=True)) == set(ARC2FACE_CONTROLS) - {"expression-photo"}
    assert _shown_arc2face_controls(ModelSettings(tiny=True, smirk=str(tmp_path))) == set(ARC2FACE_CONTROLS)
    assert _shown_arc2face_controls(ModelSettings(model="mini")) == set()
    assert _shown_arc2face_controls(ModelSettings(model="mini", smirk=str(tmp_path))) == set()


def _generate_arc2face(client, photo, *, normal_map=None, expression_file=None, expression_photo=None,
                       expression_scale=1.0, keep_appearance=False, reference_scale=0.8, style="arc2face", pose=None):
    upload = lambda path: handle_file(str(path)) if path else None  # noqa: E731
    return client.predict([upload(photo)], False, style, "", "", upload(pose), 3, 2, 3.0, 1, False,
                          upload(normal_map), upload(expression_file), upload(expression_photo), expression_scale,
                          keep_appearance, reference_scale, api_name="/generate")


def test_arc2face_extensions_change_the_images_with_the_values_of_their_controls(served, faces_dir, tmp_path):
    """A pose normal map, an expression .npy and "keep appearance" each change the image; each is the
    image generate_images makes with that upload and that scale; an expression at scale 0 is the plain image."""
    hub, client = served
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    normal_map = tmp_path / "normals.png"
    Image.fromarray((np.random.RandomState(0).rand(48, 48, 3) * 255).astype(np.uint8)).save(normal_map)
    np.save(tmp_path / "smile.npy", np.full((1, 55), 0.8))
    runs = {"pose": dict(normal_map=normal_map), "expression": dict(expression_file=tmp_path / "smile.npy",
                                                                    expression_scale=1.5),
            "appearance": dict(keep_appearance=True, reference_scale=1.2)}
    plain = _pixels(_generate_arc2face(client, photo)[0][0]).astype(np.float64)
    identity = actions.identity_from_photos(hub, [str(photo)], "arc2face")
    for name, controls in runs.items():
        shown = _pixels(_generate_arc2face(client, photo, **controls)[0][0]).astype(np.float64)
        assert np.abs(shown - plain).mean() > 0.5, name
        direct = dict(controls, expression=controls.pop("expression_file", None))
        [(expected, _)] = actions.generate_images(hub, identity, style="arc2face", seed=3, steps=2, guidance=3.0,
                                                  pose_photo=direct.pop("normal_map", None), **direct)
        assert np.array_equal(shown, np.asarray(expected, dtype=np.float64)), name
    unscaled = _generate_arc2face(client, photo, expression_file=tmp_path / "smile.npy", expression_scale=0.0)
    assert np.array_equal(_pixels(unscaled[0][0]), plain)


def test_an_expression_photo_is_read_with_smirk_and_without_it_the_message_names_its_files(served, faces_dir,
                                                                                          monkeypatch):
    from idgen.faces.expression import ExpressionExtractor
    from idgen.models.smirk import SmirkExpressionEncoder

    hub, client = served
    photo, smiling = faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Abdullah_Gul_0001.jpg"
    message = _error_of(lambda: _generate_arc2face(client, photo, expression_photo=smiling))
    assert "face_landmarker.task" in message and "SMIRK_em1.pt" in message and "--smirk" in message
    torch.manual_seed(0)
    landmarks = np.array([[40.0, 40.0], [120.0, 140.0]])
    extractor = ExpressionExtractor(SmirkExpressionEncoder().eval(), lambda rgb: landmarks)
    monkeypatch.setattr(hub, "expression_extractor", lambda: extractor)
    shown = _pixels(_generate_arc2face(client, photo, expression_photo=smiling)[0][0])
    assert not np.array_equal(shown, _pixels(_generate_arc2face(client, photo)[0][0]))
    identity = actions.identity_from_photos(hub, [str(photo)], "arc2face")
    [(expected, _)] = actions.generate_images(hub, identity, style="arc2face", seed=3, steps=2, guidance=3.0,
                                              expression=torch.from_numpy(extractor(smiling))[None])
    assert np.array_equal(shown, np.asarray(expected))


def test_arc2face_extension_inputs_given_to_the_wrong_style_are_refused(served, faces_dir, tmp_path):
    _, client = served
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    np.save(tmp_path / "smile.npy", np.full((1, 55), 0.8))
    assert "Arc2Face takes a rendered face normal map" in _error_of(
        lambda: _generate_arc2face(client, photo, pose=photo))
    assert "normal map is for the Arc2Face style" in _error_of(
        lambda: _generate_arc2face(client, photo, style="instantid", normal_map=photo))
    assert "not both" in _error_of(lambda: _generate_arc2face(client, photo, expression_file=tmp_path / "smile.npy",
                                                               expression_photo=photo))
    assert "choose the arc2face style" in _error_of(
        lambda: _generate_arc2face(client, photo, style="instantid", keep_appearance=True))


# ---------------------------------------------------------------------------- fast preset
@pytest.fixture(scope="module")
def lcm_lora_folder(tmp_path_factory):
    """A random LoRA for the tiny UNet, saved as a published LCM-LoRA is (diffusers format)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from diffusers.utils import convert_state_dict_to_diffusers

    from idgen.testing.tiny_arc2face import tiny_arc2face
    from idgen.pipelines import Arc2FacePipeline

    donor = tiny_arc2face().unet
    torch.manual_seed(0)
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False, target_modules=["to_k", "to_v"]))
    folder = tmp_path_factory.mktemp("lcm-lora")
    Arc2FacePipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(
        get_peft_model_state_dict(donor)))
    return folder


def test_fast_preset_loads_the_lcm_lora_and_scheduler_and_undoes_them(lcm_lora_folder, faces_dir):
    from diffusers import LCMScheduler

    from idgen.testing.tiny_arc2face import tiny_arc2face

    hub = ModelHub(ModelSettings(tiny=True, lcm_lora=str(lcm_lora_folder)))
    identity = actions.identity_from_photos(hub, [faces_dir / "Aaron_Peirsol_0001.jpg"])
    plain = actions.generate_images(hub, identity, seed=2, steps=2, guidance=3.0)[0][0]
    scheduler, adapters = type(hub.arc2face().scheduler), hub.arc2face().get_list_adapters()
    fast = actions.generate_images(hub, identity, seed=2, steps=2, guidance=3.0, fast=True)[0][0]
    assert isinstance(hub.arc2face().scheduler, LCMScheduler)
    # Independent path: a fresh tiny pipeline with the LoRA, the LCM scheduler, 4 steps at guidance 1.
    reference = tiny_arc2face()
    reference.load_lora_weights(str(lcm_lora_folder))
    reference.scheduler = LCMScheduler.from_config(reference.scheduler.config)
    expected = reference(id_embeds=identity.vector[None], num_inference_steps=4, guidance_scale=1.0,
                         generator=torch.Generator().manual_seed(2)).images[0]
    assert np.abs(np.asarray(fast, float) - np.asarray(expected, float)).max() <= 1
    assert not np.array_equal(np.asarray(fast), np.asarray(plain))
    # Switching the preset off removes its LoRA (the tiny hub's own extension adapters stay) and restores
    # the scheduler: the plain image again.
    again = actions.generate_images(hub, identity, seed=2, steps=2, guidance=3.0)[0][0]
    assert type(hub.arc2face().scheduler) is scheduler and hub.arc2face().get_list_adapters() == adapters
    assert np.array_equal(np.asarray(again), np.asarray(plain))


def test_tiny_page_says_what_the_fast_preset_does():
    import gradio as gr

    demo = build_demo(ModelHub(ModelSettings(tiny=True)))
    texts = [str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown)]
    presets = [text for text in texts if text.startswith("Fast preset")]
    assert len(presets) == 2  # under the Generate and the Mix controls
    assert all("4 steps at guidance 1" in text and "No LCM-LoRA" in text and "--lcm-lora" in text for text in presets)
    assert ModelSettings(tiny=True).lcm_lora is None  # the published SD 1.5 LCM-LoRA is not fetched for random weights
    assert ModelSettings().lcm_lora == "latent-consistency/lcm-lora-sdv1-5"


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache: nothing is downloaded on this machine."""
    import huggingface_hub.constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_lora(cache: Path, repo: str) -> None:
    """Put ``repo``'s LoRA file into the hub cache the way a download does (refs/main → snapshot)."""
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("abc123")


def _fast_boxes_and_notes(demo):
    import gradio as gr

    boxes = [b for b in demo.blocks.values() if isinstance(b, gr.Checkbox) and "fast preset" in str(b.label)]
    notes = [str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown)
             and str(b.value).startswith("Fast preset")]
    return boxes, notes


def test_fast_preset_is_offered_only_when_its_lcm_lora_is_on_this_machine(empty_hub_cache, lcm_lora_folder, tmp_path):
    from idgen.errors import ConfigError

    # A saved Arc2Face pipeline (not loaded: building the page loads nothing) and no LCM-LoRA downloaded.
    hub = ModelHub(ModelSettings(model=str(tmp_path / "saved-pipeline")))
    problem = hub.settings.fast_preset_unavailable("arc2face")
    assert "hf download latent-consistency/lcm-lora-sdv1-5" in problem and "--lcm-lora" in problem
    boxes, notes = _fast_boxes_and_notes(build_demo(hub))
    assert len(boxes) == 2 and not any(box.interactive for box in boxes)   # Generate and Mix
    assert all("Not available for Arc2Face here" in n and "hf download latent-consistency/lcm-lora-sdv1-5" in n
               for n in notes)
    # Asked anyway (the API), it is refused before any model loads.
    identity = actions.IdentityInput(torch.ones(512) / 512 ** 0.5)
    with pytest.raises(ConfigError, match="hf download latent-consistency/lcm-lora-sdv1-5"):
        actions.generate_images(hub, identity, fast=True)
    assert hub.loaded() == []
    # Once downloaded (in the hub cache), or named as a local folder, it is offered.
    _cache_lora(empty_hub_cache, "latent-consistency/lcm-lora-sdv1-5")
    assert hub.settings.fast_preset_unavailable("arc2face") is None
    boxes, notes = _fast_boxes_and_notes(build_demo(hub))
    assert all(box.interactive for box in boxes) and not any("Not available" in n for n in notes)
    local = ModelSettings(model=str(tmp_path / "saved-pipeline"), lcm_lora=str(lcm_lora_folder))
    assert local.fast_preset_unavailable("arc2face") is None
    wrong = ModelSettings(model=str(tmp_path / "saved-pipeline"), lcm_lora=str(tmp_path))
    assert "--lcm-lora" in wrong.fast_preset_unavailable("arc2face") and "no LoRA weights" in wrong.fast_preset_unavailable("arc2face")
    # The SD 1.5 LCM-LoRA does not fit the embedded mini model, downloaded or not; InfiniteYou has none.
    mini = ModelSettings(model="mini")
    assert "mini model" in mini.fast_preset_unavailable("arc2face")
    assert "InfiniteYou has none" in mini.fast_preset_unavailable("infiniteyou")
    sdxl = ModelSettings(model=str(tmp_path / "saved-pipeline"), instantid="InstantX/InstantID")
    assert "hf download latent-consistency/lcm-lora-sdxl" in sdxl.fast_preset_unavailable("instantid")


def test_prompt_and_pose_fields_show_only_with_a_style_that_uses_them():
    import gradio as gr

    def shown(settings):
        demo = build_demo(ModelHub(settings))
        labels = {str(b.label).split(" (")[0]: b.visible for b in demo.blocks.values()
                  if isinstance(b, (gr.Textbox, gr.File, gr.Radio)) and b.label}
        return {name for name in ("style", "prompt", "negative prompt", "pose photo") if labels[name]}

    assert shown(ModelSettings(model="mini")) == set()
    assert shown(ModelSettings(model="mini", infiniteyou="ByteDance/InfiniteYou")) == {"style", "prompt", "pose photo"}
    assert shown(ModelSettings(tiny=True)) == {"style", "prompt", "negative prompt", "pose photo"}
    demo = build_demo(ModelHub(ModelSettings(model="mini")))
    note = [str(b.value) for b in demo.blocks.values() if isinstance(b, gr.Markdown) and b.elem_id == "styles-note"]
    assert len(note) == 1 and "--instantid" in note[0] and "--infiniteyou" in note[0]


# ---------------------------------------------------------------------------- forgetting in the generator
def test_forget_in_the_generator(served, faces_dir, tmp_path):
    from idgen.testing.tiny_arc2face import tiny_arc2face

    hub, client = served
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    renders, text, archive = client.predict([handle_file(str(photo))], 1, 30, 0.5, 2, api_name="/forget_generator")
    assert [r["caption"].split(":")[0] for r in renders] == ["before", "after"]
    with zipfile.ZipFile(archive) as z:
        z.extractall(tmp_path / "lora")
    report = __import__("json").loads((tmp_path / "lora" / "forgetting.json").read_text())
    for name, value in report["metrics"].items():  # the page shows the result's metrics
        assert f"| `{name}` |" in text and f"{value:.3f}" in text
    assert "Aaron_Peirsol_0001.jpg" in text
    # Independent check with the saved LoRA on a fresh copy of the tiny generator.
    person = actions.identity_from_photos(hub, [photo]).vector[None]
    others = torch.nn.functional.normalize(torch.randn(16, person.shape[1], generator=torch.Generator().manual_seed(9)), dim=1)
    original, edited = tiny_arc2face(), tiny_arc2face()
    edited.load_lora_weights(str(tmp_path / "lora"))
    with torch.no_grad():
        def moved(ids):
            before, after = original.encode_identity(ids).flatten(1), edited.encode_identity(ids).flatten(1)
            return ((after - before).norm(dim=1) / before.norm(dim=1)).mean().item()
        assert moved(person) > 2 * moved(others)
        # The demo's own generator is untouched (the edit went into a copy).
        assert torch.equal(hub.arc2face().encode_identity(person), original.encode_identity(person))
    render = lambda pipe: np.asarray(pipe(id_embeds=person, num_inference_steps=2,  # noqa: E731
                                          generator=torch.Generator().manual_seed(1)).images[0], float)
    assert np.array_equal(_pixels(renders[0]), render(original))
    assert np.abs(_pixels(renders[1]) - render(edited)).max() <= 2  # LoRA loaded vs fused: float rounding
    assert np.abs(_pixels(renders[1]) - _pixels(renders[0])).mean() > 1


def test_forget_in_the_generator_refuses_a_photo_without_a_face(served, bad_photos):
    _, client = served
    message = _error_of(lambda: client.predict([handle_file(str(bad_photos / "blank.png"))], 0, 10, 0.5, 1,
                                               api_name="/forget_generator"))
    assert "no face" in message.lower() and "Traceback" not in message


# ---------------------------------------------------------------------------- serving
def test_queue_runs_one_generation_at_a_time(served, faces_dir, monkeypatch):
    import threading
    import time

    hub, client = served
    running, peak, lock = [0], [0], threading.Lock()
    generate = actions.generate_images

    def tracked(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.3)  # long enough for the other requests to arrive while this one runs
            return generate(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(actions, "generate_images", tracked)
    photo = handle_file(str(faces_dir / "Aaron_Peirsol_0001.jpg"))
    jobs = [client.submit([photo], False, "arc2face", "", "", None, k, 1, 3.0, 1, False, api_name="/generate")
            for k in range(3)]
    assert all(len(job.result(timeout=120)[0]) == 1 for job in jobs)
    assert peak[0] == 1  # launch(concurrency=1): requests wait in the queue instead of running together


def test_generation_reports_progress_per_step(faces_dir):
    hub = ModelHub(ModelSettings(tiny=True))
    identity = actions.random_identity(hub, 0)
    updates = []
    actions.generate_images(hub, identity, steps=3, guidance=3.0, progress=lambda f, desc=None: updates.append((f, desc)))
    fractions = [f for f, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [d for _, d in updates if "step" in d] == [f"denoising 1 image(s): step {k}/3" for k in (1, 2, 3)]


def test_work_progress_says_how_far_and_how_long_is_left():
    now = [100.0]
    updates = []
    work = actions.WorkProgress(lambda f, desc=None: updates.append((f, desc)), 10, lambda done: f"{done} of 10",
                                start=0.1, end=0.9, clock=lambda: now[0])
    now[0] = 110.0
    work.advance(2)      # 2 units in 10 s: 8 left take 40 s
    now[0] = 220.0
    work.advance(2)      # 4 in 120 s: 6 left take 180 s
    now[0] = 400.0
    work.advance(7)      # more than planned (a refused image made again): the fraction stops at the end
    assert updates == [(pytest.approx(0.26), "2 of 10 · about 40 s left"), (pytest.approx(0.42), "4 of 10 · about 3 min left"),
                       (pytest.approx(0.9), "10 of 10 · about 0 s left")]
    assert actions.time_left(3900) == "1 h 5 min"


def test_dataset_progress_moves_with_every_denoising_step(tmp_path):
    """The Dataset tab's bar: one update per denoising step of each batch, between 10 % and 90 %, each
    saying how many images are done and the time left (it used to sit at 10 % for the whole run)."""
    hub = ModelHub(ModelSettings(tiny=True))
    updates = []
    actions.make_dataset(hub, tmp_path, identities=3, images_per_identity=2, steps=3,
                         progress=lambda f, desc=None: updates.append((f, desc)))
    steps = [(f, d) for f, d in updates if "steps each" in d and "left" in d]
    assert len(steps) == 2 * 3   # 6 images in batches of 4: two batches of 3 steps
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[0] > 0.1 and fractions[-1] == pytest.approx(0.9)
    assert steps[-1][1].startswith("generating 3×2 images (3 steps each): 6 of 6 done · about")
    assert steps[2][1].startswith("generating 3×2 images (3 steps each): 4 of 6 done")   # the first batch of 4


def test_the_dataset_grid_groups_kept_images_by_identity_and_the_counts_are_in_words():
    from idgen.demo.ui import dataset_counts, dataset_grid

    def kept(identity, index, similarity):
        return {"label": identity, "index": index, "identity": f"id{identity:06d}", "similarity": similarity,
                "path": Path(f"images/id{identity:06d}/{index}.jpg")}

    images = [kept(2, 0, 0.31), kept(0, 1, 0.25), kept(0, 0, 0.4), kept(2, 1, None)]   # out of order
    assert dataset_grid(images) == [("images/id000000/0.jpg", "id000000 · similarity 0.40"),
                                    ("images/id000000/1.jpg", "id000000 · similarity 0.25"),
                                    ("images/id000002/0.jpg", "id000002 · similarity 0.31"),
                                    ("images/id000002/1.jpg", "id000002")]
    stats = {"images": 4, "identities_with_images": 2, "counts": {
        "generated": 23, "kept": 4, "no_face": 11, "low_similarity": 7, "duplicate": 1, "dropped": 2}}
    assert dataset_counts(stats, 3) == (
        "**4 images of 2 of 3 identities kept**, from 23 renders. Refused: 11 with no face found, "
        "7 below the identity-similarity threshold, 1 duplicate. 2 images were still refused after their "
        "last retry.")
    assert "still refused" not in dataset_counts({**stats, "counts": {**stats["counts"], "dropped": 0}}, 3)
    one = {"images": 1, "identities_with_images": 1, "counts": {
        "generated": 1, "kept": 1, "no_face": 0, "low_similarity": 0, "duplicate": 2, "dropped": 1}}
    assert dataset_counts(one, 1) == (
        "**1 image of 1 of 1 identity kept**, from 1 render. Refused: 0 with no face found, 0 below the "
        "identity-similarity threshold, 2 duplicates. 1 image was still refused after its last retry.")


def test_the_dataset_grid_never_stretches_one_image_to_the_page_width():
    import gradio as gr

    from idgen.demo.ui import DATASET_COLUMNS

    demo = build_demo(ModelHub(ModelSettings(tiny=True)))
    [grid] = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery) and b.elem_id == "dataset-grid"]
    assert grid.columns == DATASET_COLUMNS >= 4 and grid.object_fit == "contain"


def test_forgetting_says_before_it_starts_whether_it_trains_the_recogniser_and_how_long_it_takes():
    people = {"a": [Path("1.jpg"), Path("2.jpg")], "b": [Path("3.jpg")]}
    seconds = actions.RECOGNIZER_STEP_SECONDS
    assert actions.forgetting_plan(people, 40, 10, (0, 20)) == (
        "reusing the recogniser already trained on these 3 photos; then forgetting: 10 epochs "
        f"(20 steps, about {actions.time_left(20 * seconds['forgetting'])})")
    assert actions.forgetting_plan(people, 40, 10, (360, 20)).startswith(
        "training the recogniser on 3 photos of 2 people for 40 epochs (the long part: 360 steps, about "
        f"{actions.time_left(360 * seconds['training'])}; later runs")


def test_the_steps_of_a_forgetting_run_follow_the_photos_and_the_split():
    from idgen.recognition.data import FaceDataConfig

    orl = {f"s{k}": [Path(f"{n}.pgm") for n in range(10)] for k in range(40)}   # 40 people × 10 photos
    data = FaceDataConfig(root="orl", align="resize", test_fraction=0.3)      # 3 test, 7 training photos each
    # training: 280 photos in batches of 32 → 9 steps an epoch; forgetting one drawn person: 273 retained
    # photos in batches of 64 → 5 steps an epoch
    assert actions.forgetting_steps(orl, data, 1, 40, 10) == (360, 50)
    assert actions.forgetting_steps(orl, data, ["s0"], 0, 10) == (0, 50)         # a trained recogniser is reused
    few = {"a": [Path("1.jpg")] * 3, "b": [Path("2.jpg")] * 4}                    # 2 and 3 training photos
    assert actions.forgetting_steps(few, data, ["b"], 2, 3) == (2, 3)             # at least one step an epoch


def test_forgetting_reports_every_step_with_the_time_left(tmp_path, one_thread):
    """Forget → Recogniser's bar: the plan first, then one update per optimiser step (training, then
    forgetting), each with the time left, as many as the plan counted."""
    from idgen.application.face_folders import FaceFolder
    from idgen.application.workspace import FolderLRU

    root = tmp_path / "faces"
    for person in ("ann", "bob", "cid"):
        (root / person).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.random.default_rng(k).integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                root / person / f"{k}.png")
    updates = []
    actions.forget_in_recognizer(ModelHub(ModelSettings(tiny=True)), FaceFolder(root, "faces"), tmp_path / "work",
                                 FolderLRU(tmp_path / "cache", 1), identities=["ann"], base_epochs=2, epochs=3,
                                 progress=lambda f, desc=None: updates.append((f, desc)))
    # 6 training photos (one a person is for testing): 2 epochs of 1 step; 4 retained photos: 3 epochs of 1 step
    assert updates[0][1].startswith("training the recogniser on 9 photos of 3 people for 2 epochs (the long part: 2 steps")
    steps = [desc for _, desc in updates if desc.startswith("step ")]
    assert [desc.split(" · ")[0] for desc in steps] == (
        [f"step {k} of 5: training the recogniser" for k in (1, 2)] + [f"step {k} of 5: forgetting" for k in (3, 4, 5)])
    assert all(" · about " in desc and desc.endswith(" left") for desc in steps)
    fractions = [f for f, _ in updates]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_generator_forgetting_reports_every_step_with_the_time_left(tmp_path):
    updates = []
    actions.forget_in_generator(ModelHub(ModelSettings(tiny=True)), tmp_path, seed=3, steps=12, render_steps=1,
                                progress=lambda f, desc=None: updates.append((f, desc)))
    steps = [(f, desc) for f, desc in updates if ": step " in desc]
    assert [desc.split(" · ")[0] for _, desc in steps] == [f"forgetting random identity: step {k} of 12" for k in range(1, 13)]
    assert all(desc.endswith(" left") for _, desc in steps)
    assert steps[0][0] > 0.1 and steps[-1][0] == pytest.approx(0.8)


def test_models_come_from_flags_then_environment_then_defaults(monkeypatch):
    import app

    monkeypatch.setenv("IDGEN_ARC2FACE", "/models/arc2face")
    monkeypatch.setenv("IDGEN_INSTANTID", "InstantX/InstantID")
    monkeypatch.setenv("IDGEN_LCM_LORA", "/models/lcm-lora")
    monkeypatch.setenv("IDGEN_INFINITEYOU", "/models/InfiniteYou")
    monkeypatch.setenv("IDGEN_INFINITEYOU_VARIANT", "sim_stage1")
    from idgen.application import settings_from_args

    settings = settings_from_args(app.build_parser().parse_args(["--arc2face", "/flag/arc2face", "--device", "cpu"]))
    assert settings.arc2face == "/flag/arc2face"  # the flag wins over $IDGEN_ARC2FACE
    assert settings.instantid == "InstantX/InstantID" and settings.lcm_lora == "/models/lcm-lora"  # environment
    assert settings.base == "stable-diffusion-v1-5/stable-diffusion-v1-5" and settings.device == "cpu"
    assert (settings.infiniteyou, settings.infiniteyou_variant) == ("/models/InfiniteYou", "sim_stage1")
    assert settings.infiniteyou_base == "black-forest-labs/FLUX.1-dev"   # the default
    flagged = settings_from_args(app.build_parser().parse_args(["--infiniteyou-base", "/flag/flux"]))
    assert flagged.infiniteyou_base == "/flag/flux"
    hub = ModelHub(settings)
    assert hub.instantid_available and hub.infiniteyou_available and hub.loaded() == []  # named, not loaded
