"""Rewards: outcome verifiers (``verifiers``; free-form answers in ``answers``, math on math-verify)."""

from reward.verifiers import Verdict, check, extract_answer, verifier_counts, verify

__all__ = ["Verdict", "check", "extract_answer", "verifier_counts", "verify"]
