"""The dataset card: README.md with counts, acceptance statistics and similarity plots.

The YAML header tells ``datasets.load_dataset(<folder>)`` to read the parquet shards. Until the
dataset is finished the card says so (:data:`UNFINISHED_CARD`).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..io import write_bytes_atomic

#: Lets ``datasets.load_dataset(<folder>)`` find the parquet shards; only written with them.
PARQUET_HEADER = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
tags:
- synthetic
- face-recognition
---
"""


def inter_identity_cosines(vectors: np.ndarray, limit: int = 2000, seed: int = 0) -> np.ndarray:
    """Cosines of all pairs among at most ``limit`` identities (a fixed random subset beyond)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if len(vectors) > limit:
        vectors = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), limit, replace=False))]
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    gram = vectors @ vectors.T
    return gram[np.triu_indices(len(vectors), 1)]


def similarity_plot(intra: np.ndarray, inter_targets: np.ndarray, inter_images: np.ndarray, threshold) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    bins = np.linspace(-0.5, 1.0, 61)
    if len(intra):
        ax.hist(intra, bins=bins, density=True, alpha=0.6, label=f"intra: image vs its identity ({len(intra)})")
    if len(inter_images):
        ax.hist(inter_images, bins=bins, density=True, alpha=0.6,
                label=f"inter: identity centroids, recogniser ({len(inter_images)} pairs)")
    if len(inter_targets):
        ax.hist(inter_targets, bins=bins, density=True, histtype="step", color="k",
                label=f"inter: target identity vectors ({len(inter_targets)} pairs)")
    if threshold is not None:
        ax.axvline(threshold, color="r", linestyle="--", label=f"filter threshold {threshold}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


#: The card of a dataset still being made, replaced by the real one when it is finished. Its header
#: points ``datasets.load_dataset(<folder>)`` at parquet shards that do not exist yet, so loading an
#: unfinished folder fails instead of reading the images made so far as if they were all.
UNFINISHED_CARD = PARQUET_HEADER + """
# Unfinished synthetic face-recognition dataset

`idgen dataset generate` is still making this dataset, or was stopped before it finished: run the
same command again to finish it. Until then `images/` holds only part of the images.
"""


def write_unfinished_card(folder: Path) -> None:
    """README.md saying the dataset in ``folder`` is not finished (:data:`UNFINISHED_CARD`)."""
    write_bytes_atomic(folder / "README.md", UNFINISHED_CARD.encode())


#: What the card says about each output format's files.
FORMAT_FILES = {
    "parquet": "- `data/train-*.parquet` (`datasets.load_dataset(<this folder>)` reads them)",
    "webdataset": "- `webdataset/train-*.tar` (WebDataset: `<key>.jpg`, `<key>.cls`, `<key>.json`)",
}


def write_card(folder: Path, config, stats: dict, intra, inter_targets, inter_images) -> None:
    """README.md and plots/similarity.png; the card lists only the formats this run wrote."""
    formats = config.writers.formats
    extra_files = "".join(FORMAT_FILES[name] + "\n" for name in FORMAT_FILES if name in formats)
    threshold = config.filter.threshold if config.filter.enabled else None
    write_bytes_atomic(folder / "plots" / "similarity.png",
                       similarity_plot(np.asarray(intra), inter_targets, inter_images, threshold))
    counts, ids = stats["counts"], stats["identities"]
    rows = "\n".join(f"| {key} | {value} |" for key, value in counts.items())
    text = f"""{PARQUET_HEADER if "parquet" in formats else ""}
# Synthetic face-recognition dataset

{stats['images']} images of {stats['identities_with_images']} synthetic identities
({config.identities.count} sampled, {config.variation.images_per_identity} images each requested),
made by `idgen dataset generate` with the generator `{config.generator.get('type')}`.
These people do not exist; the identity vectors were sampled, not taken from anyone.

## Identities
Pairwise cosine of the {config.identities.count} identity vectors (target ≤ {config.identities.max_cosine}):
max {ids['max_cosine']:.4f}, mean {ids['mean_cosine']:.4f}, mean nearest {ids['mean_nearest_cosine']:.4f}.

## Consistency filter
{"Filter: " + config.filter.recognizer + f", keep similarity ≥ {threshold}, reference {config.filter.reference}, up to {config.filter.max_retries} retries." if threshold is not None else "Filter off: every generated image is kept."}
Acceptance rate {stats['acceptance_rate']:.3f}.

| outcome | images |
|---|---|
{rows}

![similarity](plots/similarity.png)

## Files
- `images/<identity>/<n>.jpg` (ImageFolder), `manifest.jsonl` (one record per image)
{extra_files}- `config.json` (the exact configuration), `identities.safetensors` (the identity vectors), `stats.json`
"""
    write_bytes_atomic(folder / "README.md", text.encode())
