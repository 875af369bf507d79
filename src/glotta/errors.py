"""The one exception type that reaches the user as a single actionable line."""


class GlottaError(Exception):
    """A problem the user can fix (bad input, bad recipe, missing file).

    The CLI prints ``glotta: error: <message>`` and exits with status 2; no traceback.
    Messages name the file, line or key and say what to do.
    """
