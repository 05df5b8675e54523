"""Reusable pieces of ``training/train.py``: config, data, losses, LoRA, checkpoints, validation."""

from .checkpoints import latest_checkpoint, list_checkpoints, prune_checkpoints, register_trainable_state
from .config import TrainConfig
from .data import FaceDataset, FaceFolder, IdentityCache, SeededBatches, default_cache_path, read_people, scan_faces
from .losses import denoising_loss, latent_diffusion_loss, sample_noise, vae_loss
from .lora import add_lora, add_training_lora, save_lora_weights
from .components import Components, Conditioning, build_pipeline, standardize_latents, full_training_groups, load_components, new_components
from .optimizer import make_optimizer

__all__ = [
    "Components", "Conditioning", "FaceDataset", "FaceFolder", "IdentityCache", "SeededBatches", "TrainConfig",
    "add_lora", "add_training_lora", "build_pipeline", "default_cache_path", "denoising_loss", "standardize_latents",
    "full_training_groups",
    "latent_diffusion_loss", "latest_checkpoint", "list_checkpoints", "load_components",
    "make_optimizer", "new_components", "prune_checkpoints", "read_people", "register_trainable_state",
    "sample_noise", "save_lora_weights", "scan_faces", "vae_loss",
]
