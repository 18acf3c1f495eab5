"""The one error type the CLI turns into a one-line message (no traceback)."""


class KtedgeError(Exception):
    """Bad input or a failed gate: the message names the file/line/op and what to do."""
