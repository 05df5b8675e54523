"""Prior-preservation images (DreamBooth): what the frozen model makes for "some other person".

Generated once per output folder and reused on resume. With identity conditioning the "class" is a
set of random unit identities (seeded, saved next to the images); with text conditioning it is the
class prompt.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..identity import random_identities
from ..io import atomic_path, read_safetensors, save_safetensors_atomic
from .config import PriorConfig

IDENTITIES_FILE = "identities.safetensors"


def prior_images(pipe, conditioning: str, folder: str | Path, config: PriorConfig, *, id_dim: int,
                 class_prompt: str, resolution: int, seed: int) -> tuple[list[str], torch.Tensor]:
    """Files of ``config.num_images`` prior images in ``folder`` and their identity vectors (zeros
    for text conditioning); images already there are kept."""
    folder = Path(folder)
    ids_path = folder / IDENTITIES_FILE
    saved = read_safetensors(ids_path, "delete the prior folder to draw its identities again") if ids_path.exists() else {}
    if "id_embeds" in saved and saved["id_embeds"].shape[0] == config.num_images:
        ids = saved["id_embeds"]
    else:
        ids = random_identities(config.num_images, id_dim, generator=torch.Generator().manual_seed(seed))
        save_safetensors_atomic({"id_embeds": ids}, ids_path)
    files = [str(folder / f"prior-{i:05d}.png") for i in range(config.num_images)]
    for i in tqdm([i for i, f in enumerate(files) if not Path(f).exists()], desc="prior images", unit="img"):
        common = dict(num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
                      generator=torch.Generator().manual_seed(seed + i), height=resolution, width=resolution)
        if conditioning == "arc2face":
            image = pipe(id_embeds=ids[i:i + 1], **common).images[0]
        else:
            image = pipe(prompt=class_prompt, **common).images[0]
        with atomic_path(files[i]) as tmp:
            image.save(tmp, format="PNG")
    if conditioning != "arc2face":
        ids = torch.zeros(config.num_images, id_dim)
    return files, ids
