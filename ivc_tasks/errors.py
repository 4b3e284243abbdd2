"""Errors that ivc raises, and the exit codes scripts can rely on.

Exit codes (documented in the README):
  0  done (changed or not)
  1  a cloud operation failed
  2  invalid input or configuration; nothing was touched
  3  rotate failed and rolled back; the old server serves as before
  4  another run holds the lock for this server
"""

EXIT_CLOUD = 1
EXIT_INVALID = 2
EXIT_ROLLED_BACK = 3
EXIT_LOCKED = 4


class IvcError(Exception):
    """Base of every error ivc raises on purpose; ``exit_code`` is what the task exits with."""

    exit_code = EXIT_CLOUD


class ConfigError(IvcError):
    """Invalid input or configuration (env file, declarations, template, missing resource).

    Raised before any cloud change is made.
    """

    exit_code = EXIT_INVALID


class CloudError(IvcError):
    """A cloud operation failed (after retries, where it was retried)."""

    exit_code = EXIT_CLOUD


class RolledBack(IvcError):
    """A rotate failed and was rolled back; the old server serves as before."""

    exit_code = EXIT_ROLLED_BACK


class Locked(IvcError):
    """Another run holds the lock for the server."""

    exit_code = EXIT_LOCKED


CLIP = 80  # characters of a value shown in a message
MESSAGE_LIMIT = 2000  # characters of a whole message


def clip(text: str, limit: int = CLIP) -> str:
    """Return ``text``, or its first ``limit`` characters and its full length when longer."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def clip_repr(value: object, limit: int = CLIP) -> str:
    """Return ``repr(value)`` cut like ``clip`` (for values quoted in messages)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    return clip(repr(value), limit)


def clip_message(message: str, *, word: int = 200, limit: int = MESSAGE_LIMIT) -> str:
    """Cut a whole message for output: every run of more than ``word`` non-blank characters,
    then the message itself beyond ``limit`` characters (the lengths are given)."""
    import re

    message = re.sub(r"\S{" + str(word + 1) + ",}", lambda m: clip(m.group(0), CLIP), str(message))
    return clip(message, limit)
