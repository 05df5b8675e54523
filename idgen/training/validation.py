"""Validation during training: render held-out identities, score them with an independent recogniser.

Every validation renders the same grid — the first ``num_identities`` photos of the validation
folder, ``images_per_identity`` renders each from fixed seeds — so grids from different steps are
directly comparable. Each render is embedded by the *evaluation* analyser (a different recogniser
from the one that made the conditioning vectors, when one is configured, so the score is not the
model grading its own homework) and compared with the same analyser's embedding of the real photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..faces import FaceAnalyzer, cosine_similarity
from ..faces.analyzer import FALLBACK_SCORE
from ..io import atomic_path
from .config import ValidationConfig
from .data import FaceFolder, load_training_image


@dataclass
class ValidationSet:
    photos: FaceFolder       # held-out photos with conditioning vectors
    targets: np.ndarray      # their embeddings by the evaluation analyser, N×D'


def prepare_validation(photos: FaceFolder, config: ValidationConfig, evaluator: FaceAnalyzer) -> ValidationSet:
    keep = min(config.num_identities, len(photos.files))
    photos = FaceFolder(photos.files[:keep], photos.id_embeds[:keep], photos.landmarks[:keep], photos.skipped)
    targets = np.stack([evaluator.get_face(path).embedding for path in photos.files])
    return ValidationSet(photos, targets)


def render(pipe, conditioning: str, valset: ValidationSet, config: ValidationConfig, resolution: int,
           seed: int, prompt: str = "") -> np.ndarray:
    """``N·K×R×R×3`` uint8 renders, identity-major, each from its own fixed seed."""
    n, k = len(valset.photos.files), config.images_per_identity
    generators = [torch.Generator().manual_seed(seed + i) for i in range(n * k)]
    common = dict(num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                  num_images_per_prompt=k, generator=generators, height=resolution, width=resolution,
                  output_type="np")
    if conditioning == "arc2face":
        images = pipe(id_embeds=valset.photos.id_embeds, **common).images
    else:
        images = pipe(prompt=[prompt] * n, **common).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def score(renders: np.ndarray, valset: ValidationSet, evaluator: FaceAnalyzer, per_identity: int) -> dict:
    """Mean cosine similarity of renders to their targets, and the fraction where a face was detected
    (the rest are scored on the analyser's fallback box)."""
    faces = evaluator.analyze_many(list(renders), progress=False)
    targets = np.repeat(valset.targets, per_identity, axis=0)
    sims = [float(cosine_similarity(f.embedding, t)) if f is not None else 0.0 for f, t in zip(faces, targets)]
    found = [f is not None and f.det_score != FALLBACK_SCORE for f in faces]
    return {"id_similarity": float(np.mean(sims)), "face_detected": float(np.mean(found))}


def grid(renders: np.ndarray, valset: ValidationSet, per_identity: int, face_scale: float) -> np.ndarray:
    """One row per identity: the real photo (aligned like the training photos), then its renders."""
    size = renders.shape[1]
    rows = []
    for i, path in enumerate(valset.photos.files):
        crop = load_training_image(path, size, valset.photos.landmarks[i].numpy(), face_scale)
        photo = ((crop.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        rows.append(np.concatenate([photo, *renders[i * per_identity:(i + 1) * per_identity]], axis=1))
    return np.concatenate(rows, axis=0)


def reconstructions(vae, photos: FaceFolder, count: int, resolution: int, face_scale: float) -> tuple[dict, np.ndarray]:
    """``task: vae``: PSNR (dB, on 0..255 pixels) of the first ``count`` held-out photos decoded from
    their posterior means, and a grid: photos on the top row, reconstructions below."""
    crops = torch.stack([load_training_image(path, resolution, photos.landmarks[i].numpy(), face_scale)
                         for i, path in enumerate(photos.files[:count])])
    with torch.no_grad():
        decoded = vae.decode(vae.encode(crops.to(vae.device, vae.dtype)).latent_dist.mean).sample
    real, fake = (((x.float().cpu().clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
                  for x in (crops, decoded))
    mse = ((real - fake) ** 2).reshape(len(real), -1).mean(axis=1)
    psnr = float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))
    grid_image = np.concatenate([np.concatenate(list(real), axis=1), np.concatenate(list(fake), axis=1)], axis=0)
    return {"psnr": psnr}, grid_image.astype(np.uint8)


def save_grid(image: np.ndarray, path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
