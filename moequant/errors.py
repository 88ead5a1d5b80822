"""One exception type for every user-facing mistake.

The command line turns a `UsageError` into one line on stderr and exit code 2, so bad
input never surfaces as a traceback from deep inside torch or transformers.
"""


class UsageError(ValueError):
    """Bad input from the user: a value, a path or a combination that cannot work."""


def require(condition: bool, message: str) -> None:
    """Raise `UsageError(message)` unless `condition` holds."""
    if not condition:
        raise UsageError(message)
