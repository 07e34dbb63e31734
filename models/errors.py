"""The one exception family a user sees: every package's errors about the user's input, files or
settings derive from `UserError`, and the CLI prints the message as one line on stderr with a
non-zero exit. Anything else is a bug and says so."""


class UserError(Exception):
    """A problem with the user's input, files or settings, stated so that they can fix it."""


class ModelFileError(UserError):
    """A model file that cannot be used: a model folder whose arch.json or weights are missing,
    unreadable or inconsistent, or an ONNX file that fails the full check."""
