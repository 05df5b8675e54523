"""Evaluation: face verification (LFW protocol, insightface ``.bin`` sets), identity similarity."""

from .insightface_bin import VerificationSet, embed_aligned, read_bin, read_bin_pairs, verify_bin, write_bin
from .verification import (Pair, VerificationResult, evaluate_scores, read_pairs, roc_auc, tar_at_far,
                           verify_pairs)

__all__ = ["Pair", "VerificationResult", "VerificationSet", "embed_aligned", "evaluate_scores", "read_bin",
           "read_bin_pairs", "read_pairs", "roc_auc", "tar_at_far", "verify_bin", "verify_pairs", "write_bin"]
