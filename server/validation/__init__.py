"""Validation of minute records: pure, deterministic rules with explained reason codes."""

from server.validation.minutes import Fix30, MinuteFacts, Verdict, judge_minutes
from server.validation.reasons import REASONS, Reason, describe

__all__ = ["REASONS", "Fix30", "MinuteFacts", "Reason", "Verdict", "describe", "judge_minutes"]
