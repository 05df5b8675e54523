"""EdgeFace with a margin head over a fixed set of people: the classifier ``idgen forget`` edits when
``model.architecture`` is ``edgeface`` (the Face Transformer's role, :class:`~idgen.models.FaceRecognizer`,
with the same interface: ``embed``, ``head``, ``forward`` gives class logits, ``config``,
``save_pretrained`` / ``from_pretrained``, ``num_parameters``).

Its tensors are the EdgeFace network's, under their published names (``model.…``), plus the head's
class centres (``head.weight``); its folder is the recogniser folder every architecture writes
(architecture ``edgeface``), with the head's options as ``classifier`` and the class names, so
:mod:`idgen.faces` loads an edited classifier as a recogniser (its embedding) too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from ..config import CROP_SIDE, EMBEDDING_DIM, Range, check_ranges, ranged
from ..errors import ConfigError, ModelFilesMissingError
from ..io import load_module_weights
from .backbones import save_recognizer
from .edgeface import ARCHITECTURE, VARIANTS, EdgeFace
from .heads import MarginHead


@dataclass
class EdgeFaceClassifierConfig:
    """An EdgeFace ``variant`` for ``resolution`` crops and its CosFace or ArcFace head over ``num_classes`` people."""

    variant: str = "xs_gamma_06"
    resolution: int = ranged(112, CROP_SIDE)   # a multiple of 16, at least 32
    embedding_dim: int = ranged(512, EMBEDDING_DIM)
    num_classes: int = ranged(100, Range(2, 1_000_000))
    head: str = "cosface"  # or "arcface"
    scale: float = ranged(64.0, Range(above=0))
    margin: float = ranged(0.35, Range(0))

    def __post_init__(self):
        check_ranges(self)
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown EdgeFace variant {self.variant!r}; choose one of {sorted(VARIANTS)}")
        if self.resolution % 16 or self.resolution < 32:
            raise ConfigError(f"resolution {self.resolution}: EdgeFace takes crops whose side is a multiple of 16, "
                              "at least 32")
        if self.head not in ("cosface", "arcface"):
            raise ConfigError(f"head must be 'cosface' or 'arcface', not {self.head!r}")


class EdgeFaceClassifier(EdgeFace):
    """EdgeFace (``embed``) + margin head (``forward`` gives class logits)."""

    def __init__(self, config: EdgeFaceClassifierConfig):
        super().__init__(config.variant, config.embedding_dim, config.resolution)
        self.network_config = self.config   # the EdgeFace arguments, what a recogniser folder records as ``model``
        self.config = config
        self.head = MarginHead(config.embedding_dim, config.num_classes, config.head, config.scale, config.margin)
        self.class_names: list[str] | None = None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Identity embeddings (not normalised) of images scaled to [-1, 1], shape N×3×S×S."""
        return self.model(images)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.embed(images), labels)

    def save_pretrained(self, folder: str | os.PathLike, class_names: list[str] | None = None, **record) -> None:
        """The recogniser folder every architecture writes (:func:`idgen.models.save_recognizer`), architecture
        ``edgeface``, with the head's options as ``classifier``, the class names and ``record``."""
        extra = {"class_names": list(class_names)} if class_names is not None else {}
        head = {k: v for k, v in asdict(self.config).items() if k in ("num_classes", "head", "scale", "margin")}
        save_recognizer(folder, ARCHITECTURE, self, self.network_config, classifier=head, **extra, **record)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "EdgeFaceClassifier":
        """A folder :meth:`save_pretrained` wrote."""
        folder = Path(folder)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise ModelFilesMissingError(f"{folder / name} is missing; an `idgen forget` run with "
                                             "model.architecture: edgeface trains and saves one there")
        saved = json.loads((folder / "config.json").read_text())
        if saved.get("architecture") != ARCHITECTURE or not isinstance(saved.get("classifier"), dict):
            what = "an EdgeFace embedding network" if saved.get("architecture") == ARCHITECTURE else \
                f"a {saved.get('architecture')} recogniser"
            raise ModelFilesMissingError(f"{folder} holds {what}, not an EdgeFace classifier; point model.path at a "
                                         "new folder to train one there")
        network = saved["model"]
        known = {f.name for f in fields(EdgeFaceClassifierConfig)}
        values = {"variant": network["variant"], "resolution": network["resolution"],
                  "embedding_dim": network["embedding_size"], **saved["classifier"]}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{folder}/config.json: unknown classifier option(s) {unknown}")
        model = cls(EdgeFaceClassifierConfig(**values))
        load_module_weights(model, folder / "model.safetensors", "the EdgeFace classifier config.json describes",
                            "point model.path at a new folder to train one again, or copy the folder again")
        model.class_names = saved.get("class_names")
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
