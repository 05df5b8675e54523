"""Face verification on pairs, with the standard LFW protocol.

LFW's View 2 (``pairs.txt``) is 10 sets of ``n`` matched then ``n`` mismatched pairs. Each set is
one fold: a threshold is chosen on the other nine and accuracy measured on it; the result is the
mean ± standard deviation over the ten folds. AUC and TAR at a fixed FAR use all pairs.

With an :class:`~idgen.faces.occlusion.Occlusion`, the second photo of every pair is scored from its
112×112 aligned crop with the occlusion drawn on it (seeded by the pair's number, so one photo in
several pairs is occluded differently in each), embedded without detection.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tqdm.auto import tqdm

from ..errors import DataError
from ..faces.analyzer import FALLBACK_SCORE
from ..faces.occlusion import Occlusion


@dataclass
class Pair:
    first: str
    second: str
    same: bool
    fold: int


def _lfw_path(root: Path, name: str, index: str) -> str:
    return str(root / name / f"{name}_{int(index):04d}.jpg")


def read_pairs(pairs_file: str | os.PathLike, image_root: str | os.PathLike, folds: int = 10) -> list[Pair]:
    """Read an LFW-format pairs file.

    The first line is ``<sets> <n>`` (``pairs.txt``) or ``<n>`` (View 1 files); then each set
    holds ``n`` matched lines ``name i j`` and ``n`` mismatched lines ``name1 i name2 j``. With
    one set, pairs are dealt round-robin into ``folds`` folds.
    """
    pairs_file, root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise DataError(f"{pairs_file}: pairs file not found")
    lines = [line.split() for line in pairs_file.read_text().splitlines() if line.strip()]
    header, body = lines[0], lines[1:]
    if not header or not all(h.isdigit() for h in header) or len(header) > 2:
        raise DataError(f"{pairs_file}: first line must be '<sets> <pairs per set>' or '<pairs>' (LFW format)")
    sets, per_set = (int(header[0]), int(header[1])) if len(header) == 2 else (1, int(header[0]))
    if len(body) != sets * 2 * per_set:
        raise DataError(f"{pairs_file}: header promises {sets * 2 * per_set} pairs, found {len(body)} lines")
    pairs = []
    for number, fields in enumerate(body):
        if len(fields) == 3:
            pair = (_lfw_path(root, fields[0], fields[1]), _lfw_path(root, fields[0], fields[2]), True)
        elif len(fields) == 4:
            pair = (_lfw_path(root, fields[0], fields[1]), _lfw_path(root, fields[2], fields[3]), False)
        else:
            raise DataError(f"{pairs_file}:{number + 2}: expected 3 or 4 fields, got {len(fields)}")
        fold = number // (2 * per_set) if sets > 1 else number % folds
        pairs.append(Pair(*pair, fold))
    return pairs


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold maximising accuracy of ``score >= t``: midpoints between sorted scores."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[1:] + order[:-1]) / 2, [order[-1] + 1e-6]])
    accuracies = [((scores >= t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann–Whitney) statistic, ties averaged."""
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(sorted_scores[np.r_[False, np.diff(sorted_scores) == 0]]):
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    positives, negatives = same.sum(), (~same).sum()
    return float((ranks[same].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """True-accept rate at the threshold where at most ``far`` of impostor pairs are accepted."""
    impostor = np.sort(scores[~same])[::-1]
    allowed = int(np.floor(far * len(impostor)))
    threshold = impostor[allowed] if allowed < len(impostor) else -np.inf
    return float((scores[same] > threshold).mean())


@dataclass
class VerificationResult:
    accuracy: float
    accuracy_std: float
    auc: float
    tar_at_far_1e3: float
    fold_accuracies: list
    thresholds: list
    pairs: int
    images: int
    missing_faces: int
    #: ``kind``, ``severity`` and ``seed`` of the occlusion on each pair's second photo; ``None``: none.
    occlusion: dict | None = None

    def summary(self) -> str:
        occluded = f"; second photos occluded: {Occlusion(**self.occlusion).describe()}" if self.occlusion else ""
        return (
            f"accuracy {100 * self.accuracy:.2f} ± {100 * self.accuracy_std:.2f} %  "
            f"AUC {self.auc:.4f}  TAR@FAR=1e-3 {100 * self.tar_at_far_1e3:.2f} %  "
            f"({self.pairs} pairs, {self.images} images, {self.missing_faces} without a detected face{occluded})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate_scores(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """k-fold accuracy (threshold from the other folds), AUC and TAR@FAR=1e-3."""
    scores, same, folds = np.asarray(scores, float), np.asarray(same, bool), np.asarray(folds)
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        threshold = best_threshold(scores[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(float(((scores[test] >= threshold) == same[test]).mean()))
    return {
        "accuracy": float(np.mean(accuracies)),
        "accuracy_std": float(np.std(accuracies)),
        "auc": roc_auc(scores, same),
        "tar_at_far_1e3": tar_at_far(scores, same, 1e-3),
        "fold_accuracies": accuracies,
        "thresholds": thresholds,
    }


def embed_aligned(analyzer, images: list[np.ndarray], batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """Unit-length embeddings of already aligned face crops, in batches, with no detection
    (:meth:`idgen.faces.FaceAnalyzer.embed_aligned`; the analyser's ``flip`` applies)."""
    batches = tqdm(range(0, len(images), batch_size), desc="embedding", disable=not progress, unit="batch")
    embeddings = np.concatenate([np.asarray(analyzer.embed_aligned(images[start: start + batch_size]), dtype=np.float64)
                                 for start in batches])
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)


def _occluded_seconds(analyzer, pairs: list[Pair], faces: dict, occlusion: Occlusion, batch_size: int,
                      progress: bool) -> list[np.ndarray | None]:
    """The embedding of each pair's second photo from its aligned crop occluded (seeded by the pair's
    index), ``None`` where that photo has no face; crops are made one batch at a time."""
    found = [index for index, pair in enumerate(pairs) if pair.second in faces]
    seconds: list[np.ndarray | None] = [None] * len(pairs)
    starts = tqdm(range(0, len(found), batch_size), desc="occluded", disable=not progress, unit="batch")
    for start in starts:
        batch = found[start: start + batch_size]
        crops = [occlusion(faces[pairs[index].second].aligned, index) for index in batch]
        for index, embedding in zip(batch, embed_aligned(analyzer, crops, batch_size, progress=False)):
            seconds[index] = embedding
    return seconds


def verify_pairs(analyzer, pairs: list[Pair], batch_size: int = 64, progress: bool = True,
                 occlusion: Occlusion | None = None) -> VerificationResult:
    """Embed every image once (batched) and evaluate the pairs; with ``occlusion``, each pair's second
    photo is scored occluded (see the module's docstring).

    Images where no face is found (with no ``fallback_box`` on the analyzer) score -1 in every
    pair they appear in, so they count as errors rather than silently leaving the protocol.
    """
    images = sorted({p.first for p in pairs} | {p.second for p in pairs})
    faces = analyzer.analyze_many(images, batch_size=batch_size, progress=progress)
    found = {path: face for path, face in zip(images, faces) if face is not None}
    missing = sum(face is None or face.det_score == FALLBACK_SCORE for face in faces)
    firsts = [found[p.first].normed_embedding if p.first in found else None for p in pairs]
    if occlusion is None:
        seconds = [found[p.second].normed_embedding if p.second in found else None for p in pairs]
    else:
        seconds = _occluded_seconds(analyzer, pairs, found, occlusion, batch_size, progress)
    scores = np.array([-1.0 if a is None or b is None else float(a @ b) for a, b in zip(firsts, seconds)])
    metrics = evaluate_scores(scores, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    return VerificationResult(pairs=len(pairs), images=len(images), missing_faces=int(missing),
                              occlusion=None if occlusion is None else asdict(occlusion), **metrics)
