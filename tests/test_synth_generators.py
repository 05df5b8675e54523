"""Generator adapters: per-image seeds make images independent of batching."""

import numpy as np
import pytest
import torch
from PIL import Image

from idgen.synth.generators import Arc2FaceGenerator, PhotoJitterGenerator, derive_seed
from idgen.identity import random_identities


def test_photo_generator_images_do_not_depend_on_the_batch(faces_dir):
    generator = PhotoJitterGenerator(faces_dir, size=96, failure_rate=0.3)
    ids = random_identities(6, 32, generator=torch.Generator().manual_seed(0))
    seeds = [derive_seed(0, i, 0, 0) for i in range(6)]
    together = generator(ids, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [generator(ids[i:i + 1], [torch.Generator().manual_seed(seeds[i])])[0] for i in (5, 2, 0)]
    for i, image in zip((5, 2, 0), alone):
        assert np.array_equal(np.asarray(image), np.asarray(together[i]))
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))
    assert derive_seed(0, 1, 2, 3) != derive_seed(0, 1, 2, 4)


class RecordingPipeline:
    """Stands in for a diffusers pipeline to check the adapter's call (not a generator test)."""

    class unet:
        device, dtype = torch.device("cpu"), torch.float16

    def __init__(self):
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        images = [Image.new("RGB", (8, 8)) for _ in kwargs["generator"]]
        return type("Output", (), {"images": images})()


def test_arc2face_adapter_makes_the_documented_diffusers_call():
    pipeline = RecordingPipeline()
    adapter = Arc2FaceGenerator(pipeline, num_inference_steps=4, guidance_scale=1.0, micro_batch=3)
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    images = adapter(torch.randn(3, 512), generators)
    call = pipeline.calls[0]
    assert len(images) == 3 and len(pipeline.calls) == 1
    assert call["id_embeds"].shape == (3, 512) and call["id_embeds"].dtype == torch.float16
    assert call["num_images_per_prompt"] == 1 and call["generator"] == generators
    assert (call["num_inference_steps"], call["guidance_scale"], call["output_type"]) == (4, 1.0, "pil")


def test_an_arc2face_generator_in_bfloat16_renders():
    """The adapter hands the identities to the pipeline in its UNet's dtype; in bfloat16 (which numpy
    cannot hold) they are read back as float32 and the images are made."""
    from idgen.testing.tiny_arc2face import tiny_arc2face

    pipeline = tiny_arc2face().to(dtype=torch.bfloat16)
    pipeline.set_progress_bar_config(disable=True)
    generator = Arc2FaceGenerator(pipeline, num_inference_steps=1, micro_batch=2)
    images = generator(torch.randn(2, 128), [torch.Generator().manual_seed(n) for n in range(2)])
    assert [image.size for image in images] == [(32, 32), (32, 32)]


def test_adapters_call_the_pipeline_on_fixed_micro_batches_padded_at_the_end():
    pipeline = RecordingPipeline()
    ids = torch.randn(5, 512)
    generators = [torch.Generator().manual_seed(i) for i in range(5)]
    images = Arc2FaceGenerator(pipeline, micro_batch=2)(ids, generators)
    assert len(images) == 5
    assert [len(call["generator"]) for call in pipeline.calls] == [2, 2, 2]
    last = pipeline.calls[-1]
    assert last["generator"][0] is generators[4] and last["generator"][1] not in generators  # a spare for the pad
    assert torch.equal(last["id_embeds"].float(), ids[[4, 4]].half().float())  # padded with a copy of the last


def test_a_micro_batch_below_one_is_refused_before_any_weights_load(monkeypatch):
    from idgen.errors import ConfigError
    from idgen.pipelines import mini
    from idgen.synth.generators import build_generator

    def load_mini_pipeline(*args):
        raise AssertionError("the weights were loaded before the setting was checked")

    monkeypatch.setattr(mini, "load_mini_pipeline", load_mini_pipeline)
    for bad in (0, -2, 1.5, True, "8"):
        with pytest.raises(ConfigError, match=r"generator.micro_batch must be a whole number ≥ 1.*got"):
            Arc2FaceGenerator(RecordingPipeline(), micro_batch=bad)
        with pytest.raises(ConfigError, match=r"generator.micro_batch must be a whole number ≥ 1.*got"):
            build_generator({"type": "mini", "micro_batch": bad}, "cpu", 128)



def test_arc2face_dataset_images_equal_direct_pipeline_calls(tmp_path, one_thread):
    """A real (tiny, random) Arc2FacePipeline behind the engine: every written image is exactly
    the image the pipeline gives when called directly with the same identity vector and seed."""
    import io

    from safetensors.torch import load_file
    from tiny_sd import IMAGE_SIZE, TEXT_WIDTH, tiny_pipeline

    from idgen.synth import SynthConfig, generate_dataset, sample_identities

    pipe = tiny_pipeline(seed=0)
    run = dict(num_inference_steps=2, guidance_scale=3.0, height=IMAGE_SIZE, width=IMAGE_SIZE)
    config = SynthConfig.from_dict({
        "output_dir": str(tmp_path / "ds"), "seed": 7,
        "identities": {"count": 3, "dim": TEXT_WIDTH, "max_cosine": 0.3, "steps": 50},
        "variation": {"images_per_identity": 2},
        "filter": {"enabled": False},
        "writers": {"formats": ["imagefolder"], "jpeg_quality": 95},
        "runtime": {"batch_size": 4, "progress": False, "device": "cpu"},
    })
    stats = generate_dataset(config, generator=Arc2FaceGenerator(pipe, micro_batch=1, **run))
    assert stats["images"] == 6

    # the identity vectors, sampled independently of the run with the same settings
    targets, _ = sample_identities(3, TEXT_WIDTH, 0.3, seed=7, steps=50)
    assert torch.equal(targets, load_file(str(tmp_path / "ds" / "identities.safetensors"))["identities"])

    # micro_batch=1: the adapter calls the pipeline with one image at a time
    slots = [(i, n) for i in range(3) for n in range(2)]
    direct = []
    for i, n in slots:
        out = pipe(id_embeds=targets[i][None], generator=[torch.Generator().manual_seed(derive_seed(7, i, n, 0))],
                   output_type="pil", **run)
        direct += out.images
    for (i, n), image in zip(slots, direct):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=95)
        expected = np.asarray(Image.open(buffer))
        written = np.asarray(Image.open(tmp_path / "ds" / "images" / f"id{i:06d}" / f"{n}.jpg"))
        assert written.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
        assert np.array_equal(written, expected), f"identity {i} image {n} differs"
    # different identities and seeds give different images (the comparison above is not trivial)
    assert np.abs(np.asarray(direct[0], float) - np.asarray(direct[1], float)).mean() > 1
    assert np.abs(np.asarray(direct[0], float) - np.asarray(direct[2], float)).mean() > 1


# ---------------------------------------------------------------------------- which generator a config names
def test_a_config_naming_a_module_is_refused_and_the_module_is_never_imported(tmp_path, monkeypatch):
    """``generator.type: evilgen:make`` used to import ``evilgen`` from the current folder: a config ran code."""
    import sys

    import pytest

    from idgen.errors import ConfigError
    from idgen.synth import SynthConfig
    from idgen.synth.generators import build_generator

    marker = tmp_path / "imported"
    (tmp_path / "evilgen.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef make(**kwargs):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))   # importable, as the current folder is for `python -m`
    config = SynthConfig.load(None, ["generator.type=evilgen:make"])
    with pytest.raises(ConfigError) as caught:
        build_generator(config.generator)
    message = str(caught.value)
    assert "unknown generator type 'evilgen:make'" in message and "a config cannot name a module" in message
    for name in ("photo", "arc2face", "mini", "instantid", "instantid-tiny", "infiniteyou", "infiniteyou-tiny"):
        assert name in message
    assert not marker.exists() and "evilgen" not in sys.modules


def test_a_generator_registered_as_an_entry_point_is_built_and_listed(tmp_path, monkeypatch):
    """A package registering ``my-gen`` in the ``idgen.generators`` group (a real dist-info on sys.path,
    as ``pip install`` leaves it) is found by name; the error for an unknown type lists it."""
    import pytest

    from idgen.errors import ConfigError
    from idgen.synth.generators import build_generator, generator_types

    (tmp_path / "my_plugin.py").write_text(
        "class Made:\n    def __init__(self, **kwargs):\n        self.kwargs = kwargs\n"
        "def make(**kwargs):\n    return Made(**kwargs)\n")
    info = tmp_path / "my_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[idgen.generators]\nmy-gen = my_plugin:make\nphoto = my_plugin:make\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    assert generator_types()[-1] == "my-gen" and generator_types().count("photo") == 1
    made = build_generator({"type": "my-gen", "size": 8}, device="cpu")
    assert type(made).__name__ == "Made" and made.kwargs == {"device": "cpu", "size": 8}
    with pytest.raises(ConfigError, match="needs generator.photos"):   # a built-in name is not taken over
        build_generator({"type": "photo"})
    with pytest.raises(ConfigError, match="use one of photo, .*infiniteyou-tiny, my-gen "):
        build_generator({"type": "my-gen2"})


def test_the_photo_generator_reads_photos_through_the_one_image_reader(faces_dir, tmp_path):
    """A decompression bomb among its photos is refused from the header, naming it, like any image."""
    import pytest
    from hostile_files import png_claiming

    from idgen.errors import ImageReadError

    bomb = png_claiming(tmp_path / "bomb.png", 9000, 9000)
    with pytest.raises(ImageReadError, match=r"bomb.png: 9000×9000 pixels would take .* more than idgen decodes"):
        PhotoJitterGenerator([faces_dir / "Aaron_Peirsol_0001.jpg", bomb], size=96)
