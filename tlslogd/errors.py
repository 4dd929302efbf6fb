"""The error every command reports as one line and exit status 2, in a module of its own so
that the offline commands need not import the configuration machinery (pydantic) to raise it."""


class ConfigError(Exception):
    """A configuration problem, worded for the admin who has to fix it."""
