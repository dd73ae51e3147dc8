"""Adversarial tests: hostile exchanges, operators and file systems (issue 14)."""
