"""Evaluation: face verification (LFW protocol), identity similarity."""

from .verification import (Pair, VerificationResult, evaluate_scores, read_pairs, roc_auc, tar_at_far,
                           verify_pairs)

__all__ = ["Pair", "VerificationResult", "evaluate_scores", "read_pairs", "roc_auc", "tar_at_far", "verify_pairs"]
