"""Rewards: outcome verifiers (``verifiers``, ``answers``), process reward models (``prm_labels``, ``prm``)."""

from reward.verifiers import Verdict, check, extract_answer, verifier_counts, verify

__all__ = ["Verdict", "check", "extract_answer", "verifier_counts", "verify"]
