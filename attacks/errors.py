"""The attacks' user-facing errors: a pool, a reference set, a target or an attack name that cannot
be used as given. The CLI prints them as one line (they are UserErrors)."""

from models.errors import UserError


class AttackError(UserError):
    """An attack input (pool, references, target, attack name) that the user can fix."""
