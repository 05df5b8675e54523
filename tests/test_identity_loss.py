"""The identity loss of ``task: id-model`` (:mod:`idgen.training.identity_loss`): x̂0 recovered for every
prediction type; the training crop mapped onto the recogniser's 112×112 crop exactly as cv2 aligns it, so
that a real aligned crop embeds like the photo analysed normally; the term's gradient reaching the UNet
and the text encoder of tiny models; and the config checks of ``optim.id_loss_*``. The runs through
``training/train.py`` (weight 0 = the run without it, bit for bit; logging; resuming) are in
``test_full_training.py``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from idgen.errors import ConfigError
from idgen.faces import face_template, similarity_transform
from idgen.faces.model_files import MOBILEFACENET_ONNX
from idgen.models.mobilefacenet import from_onnx
from idgen.training.data import load_training_image
from idgen.training.identity_loss import IdentityLoss, identity_diffusion_loss, predicted_original

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analyzer():
    """What made the mini model's identity vectors: dlib's landmarks, MobileFaceNet flip-summed."""
    pytest.importorskip("dlib")
    from idgen.faces import FaceAnalyzer

    return FaceAnalyzer.from_backend("dlib", "mobilefacenet", flip=True)


@pytest.fixture(scope="module")
def recognizer():
    return from_onnx(MOBILEFACENET_ONNX)


def identity_loss(recognizer, resolution: int, face_scale: float = 0.8, **options) -> IdentityLoss:
    settings = {"weight": 1.0, "max_timestep": 600, "flip": True, **options}
    return IdentityLoss(recognizer, resolution, face_scale, **settings)


def crop_cosines(analyzer, loss: IdentityLoss, photos: list[Path], resolution: int, face_scale: float) -> np.ndarray:
    """Per photo: the cosine between the identity vector of the photo analysed normally (ONNX) and the
    identity loss's embedding of the photo's training crop."""
    cosines = []
    for path in photos:
        face = analyzer.get_face(path)
        crop = load_training_image(str(path), resolution, face.landmarks, face_scale)
        with torch.no_grad():
            embedding = loss.embed(crop[None])[0].numpy()
        cosines.append(embedding @ face.embedding / np.linalg.norm(embedding) / np.linalg.norm(face.embedding))
    return np.array(cosines)


# ---------------------------------------------------------------- x̂0
@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_predicted_original_inverts_the_noising(kind):
    from diffusers import DDPMScheduler

    from idgen.training.losses import training_target

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=kind)
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(4, 4, 8, 8, generator=generator), torch.randn(4, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([0, 250, 600, 999])
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = latents if kind == "sample" else training_target(scheduler, latents, noise, timesteps)
    torch.testing.assert_close(predicted_original(scheduler, noisy, target, timesteps), latents, rtol=0, atol=1e-4)
    # a wrong prediction gives a wrong x̂0: the function reads the prediction, not the answer
    assert (predicted_original(scheduler, noisy, target + 0.1, timesteps) - latents).abs().max() > 0.01


# ---------------------------------------------------------------- alignment
@pytest.mark.parametrize("resolution, face_scale", [(64, 0.8), (32, 1.0)])
def test_the_grid_samples_what_cv2_aligns(analyzer, recognizer, faces_dir, resolution, face_scale):
    """The recogniser's crop cut from a training crop by the grid equals cv2's warp of that crop onto the
    ArcFace template (bilinear both; the outer 4 pixels, where cv2 pads with black, left out)."""
    photo = faces_dir / "Aaron_Peirsol_0001.jpg"
    crop = load_training_image(str(photo), resolution, analyzer.get_face(photo).landmarks, face_scale)
    loss = identity_loss(recognizer, resolution, face_scale)
    with torch.no_grad():
        ours = (loss.aligned(crop[None])[0] * loss.std[0] + loss.mean[0]).permute(1, 2, 0).numpy() * 127.5 + 127.5
    pixels = (crop.permute(1, 2, 0).numpy() + 1) * 127.5
    matrix = similarity_transform(face_template(resolution, face_scale), face_template(112))
    expected = cv2.warpAffine(pixels, matrix, (112, 112), flags=cv2.INTER_LINEAR)
    assert np.abs(ours - expected)[4:-4, 4:-4].max() < 0.01   # on the 0..255 scale
    # off by one pixel is far off: the test can tell
    shifted = cv2.warpAffine(pixels, matrix + [[0, 0, 1], [0, 0, 0]], (112, 112), flags=cv2.INTER_LINEAR)
    assert np.abs(ours - shifted)[4:-4, 4:-4].max() > 5


def test_an_aligned_training_crop_embeds_like_the_photo(analyzer, recognizer, faces_dir):
    """Through the grid and the torch recogniser, a training crop's embedding is the photo's identity
    vector up to what the crop's resolution loses: cosine ≥ 0.99 from 128-pixel crops, ≥ 0.93 from the
    mini model's 64-pixel ones (0.949 to 0.984 on these five photos)."""
    photos = sorted(faces_dir.glob("*.jpg"))
    assert crop_cosines(analyzer, identity_loss(recognizer, 128), photos, 128, 0.8).min() >= 0.99
    assert crop_cosines(analyzer, identity_loss(recognizer, 64), photos, 64, 0.8).min() >= 0.93


@pytest.mark.slow
def test_aligned_lfw_training_crops_embed_like_their_photos(analyzer, recognizer, lfw_dir):
    """100 LFW people, 64-pixel crops as the mini model trains on: mean cosine 0.966, lowest 0.930
    when measured."""
    people = sorted(p for p in (lfw_dir / "images").iterdir() if p.is_dir())[::50][:100]
    cosines = crop_cosines(analyzer, identity_loss(recognizer, 64), [sorted(p.glob("*.jpg"))[0] for p in people],
                           64, 0.8)
    assert len(cosines) == 100 and cosines.mean() >= 0.95 and cosines.min() >= 0.90


# ---------------------------------------------------------------- the term in training
@pytest.fixture(scope="module")
def tiny(analyzer, faces_dir):
    """Tiny random UNet, VAE and text encoder; two 32-pixel training crops with their identity vectors."""
    from tiny_sd import tiny_pipeline

    from idgen.training import Conditioning

    pipe = tiny_pipeline()
    pipe.unet.requires_grad_(True)
    pipe.text_encoder.requires_grad_(True)
    pipe.vae.requires_grad_(False)
    photos = [faces_dir / "Aaron_Peirsol_0001.jpg", faces_dir / "Abdullah_Gul_0001.jpg"]
    faces = [analyzer.get_face(path) for path in photos]
    batch = {"pixel_values": torch.stack([load_training_image(str(p), 32, f.landmarks) for p, f in zip(photos, faces)]),
             "id_embeds": torch.from_numpy(np.stack([f.embedding for f in faces]))}
    return pipe, Conditioning(pipe, "arc2face"), batch


def run_loss(tiny, loss: IdentityLoss, keep, mirrored=(False, False)):
    from diffusers import DDPMScheduler

    from idgen.training import latent_diffusion_loss

    pipe, conditioning, batch = tiny
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    args = (pipe.unet, pipe.vae, scheduler, batch["pixel_values"])

    def generators():
        return [torch.Generator().manual_seed(i) for i in range(2)]

    plain = latent_diffusion_loss(*args, conditioning(batch, "cpu"), generators()).detach()
    total, term = identity_diffusion_loss(loss, *args, conditioning(batch, "cpu"), generators(), batch["id_embeds"],
                                          torch.tensor(keep), torch.tensor(mirrored))
    return plain, total, term


def test_the_identity_term_reaches_the_unet_and_the_text_encoder(tiny, recognizer):
    pipe = tiny[0]
    plain, total, term = run_loss(tiny, identity_loss(recognizer, 32, weight=0.5, max_timestep=1000), [True, True],
                                  mirrored=[True, False])
    torch.testing.assert_close(total.detach() - term.loss.detach(), plain, rtol=0, atol=1e-6)   # plus the usual loss
    assert ((term.loss > 0) & (term.loss <= 1.0)).all() and term.cosine.abs().max() <= 1
    torch.testing.assert_close(term.loss.detach(), 0.5 * (1 - term.cosine))
    pipe.unet.zero_grad(), pipe.text_encoder.zero_grad()
    term.loss.sum().backward()
    assert pipe.unet.conv_out.weight.grad.abs().sum() > 0 and pipe.unet.conv_in.weight.grad.abs().sum() > 0
    assert pipe.text_encoder.get_input_embeddings().weight.grad.abs().sum() > 0   # the identity enters here
    assert all(p.grad is None for p in pipe.vae.parameters()) and all(p.grad is None for p in recognizer.parameters())


def test_examples_without_identity_or_at_high_noise_take_no_part(tiny, recognizer):
    # guidance dropout: no identity was given, so none is asked for
    plain, total, term = run_loss(tiny, identity_loss(recognizer, 32, max_timestep=1000), [False, True])
    assert term.loss[0] == 0 and term.cosine[0].isnan() and term.loss[1] > 0 and total[0] == plain[0]
    # no timestep below 1: no example takes part, nothing is decoded, the loss is the usual one
    plain, total, term = run_loss(tiny, identity_loss(recognizer, 32, max_timestep=1), [True, True])
    assert torch.equal(total.detach(), plain) and not term.loss.requires_grad and term.cosine.isnan().all()


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, message", [
    (["optim.id_loss_weight=-0.1"], "optim.id_loss_weight must be a number ≥ 0, got -0.1"),
    (["optim.id_loss_max_timestep=0"], "optim.id_loss_max_timestep must be an integer from 1 to 1,000, got 0"),
    (["optim.id_loss_weight=0.1", "data.recognizer=dlib"], "needs data.recognizer: mobilefacenet"),
    (["optim.id_loss_weight=0.1", "task=vae"], "applies to task id-model only"),
])
def test_bad_identity_loss_settings_are_config_errors(overrides, message):
    from idgen.training import TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig.load(ROOT / "training/configs/mini_lfw64.yaml", overrides)


def test_the_identity_loss_config_continues_the_shipped_model():
    from idgen.training import TrainConfig

    config = TrainConfig.load(ROOT / "training/configs/mini_lfw64_idloss.yaml")
    assert config.task == "id-model" and config.optim.id_loss_weight > 0 and config.data.recognizer == "mobilefacenet"
    assert Path(config.model.init) == ROOT / "idgen/weights/mini-arc2face"
    assert Path(config.model.vae) == ROOT / "idgen/weights/mini-arc2face/vae"
