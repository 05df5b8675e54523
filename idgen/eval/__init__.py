"""Evaluation: face verification (LFW protocol, insightface ``.bin`` sets), identity similarity."""

from .insightface_bin import VerificationSet, read_bin, read_bin_pairs, verify_bin, write_bin
from .verification import (Pair, VerificationResult, embed_aligned, evaluate_scores, read_pairs, roc_auc,
                           tar_at_far, verify_pairs)

__all__ = ["Pair", "VerificationResult", "VerificationSet", "embed_aligned", "evaluate_scores", "read_bin",
           "read_bin_pairs", "read_pairs", "roc_auc", "tar_at_far", "verify_bin", "verify_pairs", "write_bin"]
