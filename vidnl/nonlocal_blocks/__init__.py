"""Nonlocal blocks (the package cannot be called `nonlocal`: it is a Python keyword)."""

from . import functional
from .blocks import A2, BLOCK_TYPES, CC, CGNL, GSNL, NL, NS, SNL, NonLocalBase, build_nonlocal_block
from .insert import insert_nonlocal

__all__ = ["functional", "NL", "NS", "A2", "CGNL", "CC", "SNL", "GSNL", "BLOCK_TYPES", "NonLocalBase",
           "build_nonlocal_block", "insert_nonlocal"]
