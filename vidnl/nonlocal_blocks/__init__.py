"""Nonlocal blocks (the package cannot be called `nonlocal`: it is a Python keyword)."""

from . import functional
from .blocks import (A2, BLOCK_REGISTRY, BLOCK_TYPES, CC, CGNL, GSNL, NL, NS, SNL, TYPE_OPTIONS, NonLocalBase,
                     block_options, build_nonlocal_block, create_block, inner_channels, list_blocks)
from .insert import insert_nonlocal

__all__ = ["functional", "NL", "NS", "A2", "CGNL", "CC", "SNL", "GSNL", "BLOCK_REGISTRY", "BLOCK_TYPES",
           "TYPE_OPTIONS", "NonLocalBase", "block_options", "build_nonlocal_block", "create_block", "inner_channels",
           "list_blocks", "insert_nonlocal"]
