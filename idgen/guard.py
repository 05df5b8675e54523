"""A protected-identity guard: refuse (or substitute) identities close to a protected list.

Forgetting (:mod:`idgen.unlearn.generator`) changes the generator's weights; the guard is its
cheap complement at request time. Before anything is generated, every requested identity is
compared with every protected identity by cosine similarity; at or above ``threshold`` the
request is either refused with :class:`ProtectedIdentityError` or the identity is replaced by a
random one (far from every protected identity) with a warning. The same threshold logic as face
verification applies: pick it from the recogniser's verification ROC (ArcFace same-person pairs
mostly lie above ~0.3–0.4).

>>> guard = IdentityGuard(protected_embeddings, threshold=0.4, names=["alice", "bob"])
>>> safe_pipe = guard.wrap(pipe)            # an Arc2FacePipeline
>>> safe_pipe(id_embeds=requested)          # raises ProtectedIdentityError for alice or bob
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from .errors import ConfigError, DataError, IdgenError
from .identity import normalize, random_identities
from .io import open_safetensors, save_safetensors_atomic

ACTIONS = ("refuse", "substitute")


class ProtectedIdentityError(IdgenError, ValueError):
    """A requested identity is too close to a protected identity, so generation was refused."""


class ProtectedIdentityWarning(UserWarning):
    """A requested identity was protected and has been replaced by a random one."""


@dataclass
class GuardMatch:
    """One requested identity that hit the protected list."""

    index: int            # row of the request
    protected: int        # row of the closest protected identity
    name: str
    cosine: float


class IdentityGuard:
    """Protected identity embeddings (``P×D``, any scale), a cosine ``threshold`` and an ``action``."""

    def __init__(self, protected, threshold: float = 0.4, action: str = "refuse",
                 names: Optional[Sequence[str]] = None, seed: int = 0):
        protected = torch.as_tensor(protected, dtype=torch.float32).cpu()
        self.protected = normalize(protected.reshape(-1, protected.shape[-1]))
        if action not in ACTIONS:
            raise ConfigError(f"guard action must be one of {ACTIONS}, not {action!r}")
        if not -1.0 <= threshold <= 1.0:
            raise ConfigError(f"guard threshold is a cosine and must lie in [-1, 1], got {threshold}")
        names = list(names) if names is not None else [f"#{i}" for i in range(len(self.protected))]
        if len(names) != len(self.protected):
            raise ConfigError(f"{len(names)} names for {len(self.protected)} protected identities")
        self.threshold, self.action, self.names = float(threshold), action, names
        self._generator = torch.Generator().manual_seed(seed)

    # -------------------------------------------------------------- persistence
    def save(self, path) -> None:
        """Write the protected list as safetensors (``identities`` tensor; names, threshold, action
        in the metadata)."""
        save_safetensors_atomic({"identities": self.protected}, path, metadata={
            "names": "\n".join(self.names), "threshold": str(self.threshold), "action": self.action})

    @classmethod
    def load(cls, path, **overrides) -> "IdentityGuard":
        """Read a list written by :meth:`save`; ``overrides`` (threshold, action, …) win over the file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"protected-identity list {path} does not exist; write one with IdentityGuard.save()")
        fix = "write the list again with IdentityGuard.save()"
        with open_safetensors(path, fix) as f:
            if "identities" not in f.keys():
                raise DataError(f"{path}: no 'identities' tensor: not a protected-identity list; {fix}")
            metadata, identities = f.metadata() or {}, f.get_tensor("identities")
        settings = {"names": metadata["names"].split("\n") if metadata.get("names") else None,
                    "threshold": float(metadata.get("threshold", 0.4)), "action": metadata.get("action", "refuse")}
        settings.update(overrides)
        return cls(identities, **settings)

    # -------------------------------------------------------------- checking
    def similarities(self, identities) -> torch.Tensor:
        """``N×P`` cosine similarities of the requested identities to the protected ones."""
        ids = torch.as_tensor(identities, dtype=torch.float32).cpu()
        ids = normalize(ids.reshape(-1, ids.shape[-1]))
        if ids.shape[-1] != self.protected.shape[-1]:
            raise ConfigError(f"requested identities have {ids.shape[-1]} dimensions but the protected list "
                              f"{self.protected.shape[-1]}; use the same recogniser for both")
        return ids @ self.protected.T

    def matches(self, identities) -> list[GuardMatch]:
        """Requested identities whose cosine to some protected identity is ≥ the threshold."""
        best, which = self.similarities(identities).max(dim=1)
        return [GuardMatch(i, int(which[i]), self.names[int(which[i])], float(best[i]))
                for i in range(len(best)) if best[i] >= self.threshold]

    def check(self, identities) -> torch.Tensor:
        """Return the identities to generate (``N×D`` unit vectors): unchanged when none is protected;
        otherwise raise :class:`ProtectedIdentityError` (``refuse``) or replace each protected one
        by a random identity below the threshold to all protected identities (``substitute``,
        with a :class:`ProtectedIdentityWarning`)."""
        ids = torch.as_tensor(identities, dtype=torch.float32).cpu()
        ids = normalize(ids.reshape(-1, ids.shape[-1]))
        hits = self.matches(ids)
        if not hits:
            return ids
        described = "; ".join(f"identity {m.index} matches protected identity {m.name!r} "
                              f"(cosine {m.cosine:.3f} ≥ threshold {self.threshold:.3f})" for m in hits)
        if self.action == "refuse":
            raise ProtectedIdentityError(f"generation refused: {described}. Use a different identity, or "
                                         "remove the person from the protected-identity list.")
        ids = ids.clone()
        for match in hits:
            ids[match.index] = self._safe_random_identity(ids.shape[-1])
        warnings.warn(f"{described}; replaced by random identities", ProtectedIdentityWarning, stacklevel=2)
        return ids

    def _safe_random_identity(self, dim: int) -> torch.Tensor:
        for _ in range(1000):
            candidate = random_identities(1, dim, generator=self._generator)
            if float((candidate @ self.protected.T).max()) < self.threshold:
                return candidate[0]
        raise ProtectedIdentityError(f"could not draw a random identity below cosine {self.threshold} to all "
                                     f"{len(self.protected)} protected identities; raise the threshold")

    def wrap(self, pipe) -> "GuardedPipeline":
        """The Arc2Face pipeline ``pipe`` with this guard in front of every call."""
        return GuardedPipeline(pipe, self)


class GuardedPipeline:
    """An identity-conditioned pipeline whose calls pass the guard first.

    Calling it takes the pipeline's own arguments (``id_embeds`` or ``face_images`` and any
    generation option); photos are embedded with the pipeline's face analyser so they are checked
    too. Every other attribute (``to``, ``load_lora_weights``, components, …) is the pipeline's.
    """

    def __init__(self, pipe, guard: IdentityGuard):
        self.pipe, self.guard = pipe, guard

    def __call__(self, id_embeds=None, face_images=None, *, face_policy: str = "largest", **kwargs):
        if (id_embeds is None) == (face_images is None):
            raise ValueError("pass exactly one of id_embeds (identity vectors) or face_images (photos)")
        if face_images is not None:
            id_embeds = self.pipe.embed_faces(face_images, policy=face_policy)
        return self.pipe(id_embeds=self.guard.check(id_embeds), **kwargs)

    def __getattr__(self, name):
        return getattr(self.pipe, name)
