"""Errors caused by the user's input (config, files); tools print their message without a
traceback and exit non-zero."""


class VidnlUserError(Exception):
    """Base class of errors whose message is meant for the user."""


class DatasetError(VidnlUserError, ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


class ConfigError(VidnlUserError, ValueError):
    """A user error in a config file or override; the message names the key and what is allowed."""
