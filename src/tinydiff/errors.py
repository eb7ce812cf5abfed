"""The one exception type the command line turns into a one-line message."""


class TinyDiffError(Exception):
    """An expected failure caused by input: the message says what is wrong and how to fix it."""
