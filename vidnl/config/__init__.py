"""Configuration: defaults (fvcore CfgNode), YAML files with _BASE_, overrides, validation."""

from .defaults import get_cfg
from .validate import ConfigError, load_config, validate

__all__ = ["get_cfg", "load_config", "validate", "ConfigError"]
