"""User-facing errors.

Every problem caused by the user's input (a wrong parameter, a missing or
corrupt file, a mismatched checkpoint) is raised as :class:`TriqdefError`
with a one-line message that names the thing and what was expected. The CLI
prints it as ``triqdef: error: <message>`` and exits with status 2, without a
traceback.
"""


class TriqdefError(Exception):
    """A one-line, user-facing error (bad parameter, missing or corrupt file)."""

    exit_code = 2
