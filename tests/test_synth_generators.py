"""Generator adapters: per-image seeds make images independent of batching."""

import numpy as np
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
    adapter = Arc2FaceGenerator(pipeline, num_inference_steps=4, guidance_scale=1.0)
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    images = adapter(torch.randn(3, 512), generators)
    call = pipeline.calls[0]
    assert len(images) == 3
    assert call["id_embeds"].shape == (3, 512) and call["id_embeds"].dtype == torch.float16
    assert call["num_images_per_prompt"] == 1 and call["generator"] is generators
    assert (call["num_inference_steps"], call["guidance_scale"], call["output_type"]) == (4, 1.0, "pil")

