"""User-facing errors of the pipeline layer (configuration, stages, run directory)."""

from models.errors import UserError


class PrivcompError(UserError):
    """A problem with the user's input or run directory, stated so that they can fix it."""
