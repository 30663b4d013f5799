"""Checkpoint import from and export to other libraries' formats."""
