"""Rewards: outcome verifiers (``verifiers``, ``answers``; math-verify in ``bounded`` workers) and process reward
models (``prm_labels``, ``prm``, PRIME's ``implicit_prm``)."""

from arbor.reward.verifiers import (
    Verdict,
    check,
    extract_answer,
    has_step_check,
    majority_vote,
    step_fault,
    verifier_counts,
    verify,
)

__all__ = [
    "Verdict",
    "check",
    "extract_answer",
    "has_step_check",
    "majority_vote",
    "step_fault",
    "verifier_counts",
    "verify",
]
