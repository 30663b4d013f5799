"""Checkpoint import from other libraries' formats into jaxssl models."""
