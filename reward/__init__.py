"""Rewards: outcome verifiers (and, later, process reward models and reward composition)."""

from reward.verifiers import Verdict, check, extract_answer, verify

__all__ = ["Verdict", "check", "extract_answer", "verify"]
