"""Configuration: defaults (fvcore CfgNode), YAML files with _BASE_, overrides, validation."""

from .defaults import get_cfg
from ..errors import ConfigError
from .validate import load_config, validate

__all__ = ["get_cfg", "load_config", "validate", "ConfigError"]
