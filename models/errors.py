"""The one exception family a user sees: every package's errors about the user's input, files or
settings derive from `UserError`, and the CLI prints the message as one line on stderr with a
non-zero exit. Anything else is a bug and says so."""


class UserError(Exception):
    """A problem with the user's input, files or settings, stated so that they can fix it."""
