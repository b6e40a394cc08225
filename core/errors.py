"""Errors that mean "the user's input is wrong": the CLI prints them and exits with status 2."""


class ArborError(ValueError):
    """Bad input; the message names the file and line, the config key, or the path at fault."""


class ConfigError(ArborError):
    """A config file or override is wrong; the message names the file or the dotted key."""


class ModelLoadError(ArborError):
    """A model directory is missing or is not a loadable Hugging Face checkpoint."""


class DataError(ArborError):
    """A data file is empty or malformed; the message names the file, the line and the field."""


class Interrupted(Exception):
    """The user stopped the command (Ctrl-C) after it saved what it had; the CLI exits with status 130."""


class RunFailed(Exception):
    """A process the run cannot go on without died (a learner rank; every rollout actor); the message says what
    died and how to resume from the latest checkpoint. The CLI exits with status 1, without a traceback."""
