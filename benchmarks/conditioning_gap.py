"""Does an Arc2Face-style model use the identity? Its denoising error with the right identity vs a wrong one.

    python benchmarks/conditioning_gap.py --lfw PATH/TO/lfw [--model FOLDER ...]

For held-out LFW photos (View 1 DevTest people, never trained on) aligned as in training, the UNet
predicts the noise of one noised latent twice: conditioned on the photo's own identity vector, and
on another photo's (the batch rolled by one). The gap between the two mean squared errors, relative
to the first, is how much the model relies on the identity at that noise level; a model that ignores
its conditioning scores 0 %. Same photos, noise and timesteps for every model, so models compare.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from idgen.pipelines import Arc2FacePipeline
from idgen.pipelines.mini import MINI_MODEL_DIR, MINI_RESOLUTION
from idgen.training import FaceDataset, read_people
from mini_identity import mini_lfw_faces

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", default=str(ROOT.parent / "shared" / "data" / "lfw"), help="LFW folder (images/, peopleDevTest.txt)")
    parser.add_argument("--model", nargs="+", default=[os.fspath(MINI_MODEL_DIR)],
                        help="Arc2Face pipeline folders (default: the embedded mini model)")
    parser.add_argument("--photos", type=int, default=128, help="held-out photos, drawn with --seed")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[200, 500, 800, 950])
    parser.add_argument("--face-scale", type=float, default=0.8, help="crop framing, as data.face_scale in training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    lfw = Path(args.lfw)
    faces = mini_lfw_faces(lfw, only=read_people([lfw / "peopleDevTest.txt"]))
    chosen = torch.randperm(len(faces.files), generator=torch.Generator().manual_seed(args.seed))[:args.photos].tolist()
    photos = FaceDataset([faces.files[i] for i in chosen], faces.id_embeds[chosen], MINI_RESOLUTION, "",
                         faces.landmarks[chosen], args.face_scale)
    pixels = torch.stack([photos[i]["pixel_values"] for i in range(len(photos))])
    identities = faces.id_embeds[chosen]

    print(f"{len(photos)} held-out photos; error with the photo's own identity, and how much larger with another's")
    print("| model | " + " | ".join(f"t={t}" for t in args.timesteps) + " |")
    print("|---|" + "---|" * len(args.timesteps))
    for folder in args.model:
        pipe = Arc2FacePipeline.from_pretrained(folder, dtype=torch.float32)
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        own = pipe.encode_identity(identities)
        other = own.roll(1, dims=0)
        noising = DDPMScheduler.from_config(pipe.scheduler.config)
        cells = []
        for t in args.timesteps:
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(args.seed + t))
            timesteps = torch.full((len(latents),), t)
            noisy = noising.add_noise(latents, noise, timesteps)
            right = ((pipe.unet(noisy, timesteps, own).sample - noise) ** 2).mean().item()
            wrong = ((pipe.unet(noisy, timesteps, other).sample - noise) ** 2).mean().item()
            cells.append(f"{right:.4f}, {100 * (wrong - right) / right:+.1f} %")
        print(f"| {folder} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
