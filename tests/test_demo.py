"""The Gradio demo in --tiny mode, served on localhost and driven through gradio_client like a visitor.

One server for the module (launching costs seconds); each tab is exercised with good and bad inputs.
Tiny random models make noise, so assertions are about behaviour we can compute independently:
seeds, identity arithmetic, files, counts, and error messages.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from idgen.demo import ModelHub, ModelSettings, build_demo, launch  # noqa: E402
from idgen.demo import actions  # noqa: E402
from idgen.identity import slerp  # noqa: E402


@pytest.fixture(scope="module")
def served():
    torch.set_num_threads(1)
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
    return folder


def _image_path(item) -> str:
    image = item["image"]
    return image if isinstance(image, str) else image["path"]


def _error_of(call) -> str:
    with pytest.raises(Exception) as caught:
        call()
    return str(caught.value)


def _generate(client, photos, *, use_random=False, seed=0, count=2, steps=2):
    files = [handle_file(str(p)) for p in photos]
    return client.predict(files, use_random, "arc2face", "", "", None, seed, steps, 3.0, count, False,
                          api_name="/generate")


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
])
def test_bad_photos_give_a_friendly_message(served, bad_photos, name, expected):
    _, client = served
    message = _error_of(lambda: _generate(client, [bad_photos / name], count=1))
    assert expected.lower() in message.lower()
    assert "Traceback" not in message and "Something went wrong" not in message


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
    samples, plot, archive, summary, images_folder = client.predict(3, 3, 0, 1, api_name="/dataset")
    assert summary.startswith("9 images of 3 identities")
    assert Image.open(plot).format == "PNG"
    with zipfile.ZipFile(archive) as z:
        names = z.namelist()
    assert "plots/similarity.png" in names and "README.md" in names
    assert sum(n.startswith("images/") and n.endswith(".jpg") for n in names) == 9
    assert len(samples) == 8
    # The Forget tab takes the dataset's identity folders: forget one named person.
    people = sorted(p.name for p in Path(images_folder).iterdir())
    assert len(people) == 3
    report, groups = client.predict(images_folder, people[1], 1, 2, 2, api_name="/forget")
    assert people[1] in report and "gs-lora" in report
    assert Image.open(groups).format == "PNG"


def test_forget_without_a_folder(served, tmp_path):
    _, client = served
    message = _error_of(lambda: client.predict(str(tmp_path / "missing"), "", 1, 2, 2, api_name="/forget"))
    assert "face folder" in message and "not found" in message
