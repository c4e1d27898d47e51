"""Nonlocal blocks (the package cannot be called `nonlocal`: it is a Python keyword)."""

from . import functional
from .blocks import NL, SNL, BLOCK_TYPES, NonLocalBlock, build_nonlocal_block
from .insert import insert_nonlocal

__all__ = ["functional", "NL", "SNL", "BLOCK_TYPES", "NonLocalBlock", "build_nonlocal_block", "insert_nonlocal"]
