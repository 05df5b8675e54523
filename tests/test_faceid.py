"""IP-Adapter FaceID (SD 1.5) through diffusers' own loader, fed by idgen.faces embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from idgen.errors import NoFaceError
from idgen.pipelines.faceid import faceid_embeds
from tiny_models import faceid_state_dict, tiny_sd15_components

EMBED_DIM = 128  # dlib's embedding size, so real photos drive the tiny adapter


pytestmark = pytest.mark.usefixtures("one_thread")


def test_faceid_embeds_layout(dlib_analyzer, faces_dir):
    photos = [faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Aaron_Peirsol_0002.jpg"]
    [embeds] = faceid_embeds(dlib_analyzer, photos)
    assert embeds.shape == (2, 2, EMBED_DIM) and embeds.dtype == torch.float32
    assert not embeds[0].any()  # the negative is a zero embedding
    expected = dlib_analyzer.get_face(photos[1]).normed_embedding
    np.testing.assert_allclose(embeds[1, 1].numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(embeds[1].norm(dim=-1), torch.ones(2))
    [unguided] = faceid_embeds(dlib_analyzer, photos[:1], do_classifier_free_guidance=False)
    assert unguided.shape == (1, 1, EMBED_DIM)
    with pytest.raises(NoFaceError, match="no face found"):
        faceid_embeds(dlib_analyzer, [np.full((128, 128, 3), 127, np.uint8)])


def test_faceid_adapter_loads_and_conditions_sd15(dlib_analyzer, faces_dir, tmp_path):
    pipe = StableDiffusionPipeline(**tiny_sd15_components(tmp_path))
    pipe.set_progress_bar_config(disable=True)
    state = faceid_state_dict(pipe.unet, EMBED_DIM)
    pipe.load_ip_adapter(state, subfolder=None, weight_name="ip-adapter-faceid_sd15.bin", image_encoder_folder=None)
    assert "faceid_0" in pipe.unet.peft_config  # the checkpoint's LoRA went in through load_lora_weights

    # the projection is FaceID's MLP + LayerNorm, read from the original keys
    proj, x = state["image_proj"], torch.randn(3, EMBED_DIM)
    hidden = F.gelu(x @ proj["proj.0.weight"].T + proj["proj.0.bias"]) @ proj["proj.2.weight"].T + proj["proj.2.bias"]
    expected = F.layer_norm(hidden.reshape(3, 4, 32), (32,), proj["norm.weight"], proj["norm.bias"])
    with torch.no_grad():
        torch.testing.assert_close(pipe.unet.encoder_hid_proj.image_projection_layers[0](x), expected,
                                   rtol=1e-4, atol=1e-5)

    def generate(photo, seed=0):
        embeds = faceid_embeds(dlib_analyzer, [faces_dir / photo])
        return pipe("a photo of a person", ip_adapter_image_embeds=embeds, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(seed), output_type="np").images

    aaron, angelina = generate("Aaron_Peirsol_0001.jpg"), generate("Angelina_Jolie_0001.jpg")
    assert aaron.shape == (1, 64, 64, 3)
    assert np.abs(aaron - angelina).max() > 1e-3
    np.testing.assert_array_equal(aaron, generate("Aaron_Peirsol_0001.jpg"))


def test_another_recogniser_than_buffalo_ls_gets_a_warning_naming_it(dlib_analyzer, faces_dir):
    """FaceID was trained on buffalo_l's w600k_r50.onnx embeddings; dlib's are accepted, with a warning."""
    from idgen.faces.published import FACE_BACKENDS

    assert FACE_BACKENDS["faceid"] == ("buffalo_l", "w600k_r50.onnx")
    with pytest.warns(UserWarning, match="IP-Adapter FaceID was trained on the embeddings of w600k_r50.onnx "
                                         r"\(detector buffalo_l.*embeds with DlibRecognizer"):
        faceid_embeds(dlib_analyzer, [faces_dir / "Aaron_Peirsol_0001.jpg"])
