"""User-facing errors: the CLI prints their message as one line on stderr and exits non-zero."""


class PrivcompError(Exception):
    """A problem with the user's input or run directory, stated so that they can fix it."""
