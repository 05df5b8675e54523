"""A pose bank: head poses taken from real photos, for generators that draw the face where it goes.

InstantID-style generators take a pose as the five face keypoints (eyes, nose tip, mouth corners)
drawn into the IdentityNet's condition image. A synthetic dataset varies the pose of each identity's
images by drawing them from a bank of poses measured on real photos. A pose is stored as fractions
of the photo's width and height, so it can be drawn at any output size (as InstantID's own pipeline
maps a pose photo's keypoints onto the output image).

``variation.poses`` in the dataset config names the bank:

- ``default`` — :data:`DEFAULT_BANK`, 24 varied poses measured once on LFW photos (shipped with idgen);
- a folder of face photos — analysed once (the largest face of each), when the dataset starts;
- a ``.json`` file written by :meth:`PoseBank.save`, or a ``.npy`` array of P × 5 × 2 fractions.

The bank a dataset used is saved with it as ``poses.json``; a resumed run reads it from there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import read_npy, write_json_atomic

DEFAULT_BANK = Path(__file__).with_name("poses_lfw.json")


@dataclass
class PoseBank:
    keypoints: np.ndarray  # P × 5 × 2, fractions of width (x) and height (y)
    sources: list[str]     # where each pose was measured

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def from_photos(cls, photos, analyzer, progress: bool = False) -> "PoseBank":
        """The pose of the largest face in each photo (``photos``: a folder or a list of files),
        found by ``analyzer`` (a :class:`~idgen.faces.FaceAnalyzer`; no recogniser needed). Photos
        without a face are left out."""
        from tqdm.auto import tqdm

        from ..faces import iter_image_files, load_image

        files = list(iter_image_files(photos)) if isinstance(photos, (str, os.PathLike)) else list(photos)
        keypoints, sources = [], []
        for path in tqdm(files, desc="poses", unit="img", disable=not progress):
            faces = analyzer.detect(path)
            if faces:
                height, width = load_image(path).shape[:2]
                keypoints.append(np.asarray(faces[0].landmarks, dtype=np.float64) / [width, height])
                sources.append(Path(path).name)
        if not keypoints:
            raise ConfigError(f"no face found in any photo of {photos}; the pose bank needs face photos")
        return cls(np.stack(keypoints), sources)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PoseBank":
        path = Path(path)
        if path.suffix == ".npy":
            keypoints = read_npy(path, "save the poses as a numeric P × 5 × 2 array of fractions (np.save)")
            return cls(_checked(keypoints, path), [f"{path.name}[{i}]" for i in range(len(keypoints))])
        data = json.loads(path.read_text())
        return cls(_checked(np.asarray(data["keypoints"], dtype=np.float64), path), list(data["sources"]))

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, {"keypoints": np.round(self.keypoints, 6).tolist(), "sources": self.sources})

    def crop(self, box: tuple[float, float, float, float], margin: float = 0.05) -> "PoseBank":
        """The poses as seen in the crop ``box = (x0, y0, x1, y1)`` (fractions) of their photos,
        keeping only those whose keypoints all lie inside it, ``margin`` away from its edges.
        E.g. the central half of LFW's 250 px photos frames the face as face crops do."""
        x0, y0, x1, y1 = box
        inner = (self.keypoints - [x0, y0]) / [x1 - x0, y1 - y0]
        keep = ((inner >= margin) & (inner <= 1 - margin)).all(axis=(1, 2))
        return PoseBank(inner[keep], [s for s, k in zip(self.sources, keep) if k])

    def diverse(self, count: int) -> "PoseBank":
        """``count`` poses spread over the bank (greedy farthest-point selection, starting from the
        pose nearest the mean), so a small bank still covers the range of poses."""
        flat = self.keypoints.reshape(len(self), -1)
        chosen = [int(np.linalg.norm(flat - flat.mean(0), axis=1).argmin())]
        distance = np.linalg.norm(flat - flat[chosen[0]], axis=1)
        while len(chosen) < min(count, len(self)):
            chosen.append(int(distance.argmax()))
            distance = np.minimum(distance, np.linalg.norm(flat - flat[chosen[-1]], axis=1))
        return PoseBank(self.keypoints[chosen], [self.sources[i] for i in chosen])


def _checked(keypoints: np.ndarray, path: Path) -> np.ndarray:
    if keypoints.ndim != 3 or keypoints.shape[1:] != (5, 2) or len(keypoints) == 0:
        raise ConfigError(f"{path}: a pose bank is a P × 5 × 2 array of keypoints, got shape {keypoints.shape}")
    if keypoints.min() < -0.5 or keypoints.max() > 1.5:
        raise ConfigError(f"{path}: pose keypoints are fractions of the image width and height (0–1), "
                          f"not pixels; divide by the photo size")
    return keypoints.astype(np.float64)


def resolve_pose_bank(spec, analyzer_factory, progress: bool = False) -> PoseBank:
    """The bank ``variation.poses`` names (see the module docstring); ``analyzer_factory()`` makes
    the face analyzer, only when a folder of photos must be analysed."""
    if spec == "default":
        return PoseBank.load(DEFAULT_BANK)
    if isinstance(spec, list):
        return PoseBank(_checked(np.asarray(spec, dtype=np.float64), Path("variation.poses")),
                        [f"variation.poses[{i}]" for i in range(len(spec))])
    path = Path(str(spec))
    if path.is_dir():
        return PoseBank.from_photos(path, analyzer_factory(), progress)
    if path.is_file():
        return PoseBank.load(path)
    raise ConfigError(f"variation.poses: {spec} is neither 'default', a folder of face photos nor a pose file")
