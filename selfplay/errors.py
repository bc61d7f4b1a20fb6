"""The one base class of every error a user can cause: the CLI prints its message as one line and exits 1.

Anything else that escapes is a bug in selfplay and keeps its traceback."""


class SelfplayError(Exception):
    """Bad input or an unusable state a user can fix; the message is one line saying what and how."""
