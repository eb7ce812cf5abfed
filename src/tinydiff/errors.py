"""The one exception type the command line turns into a one-line message."""


class TinyDiffError(Exception):
    """An expected failure caused by input: the message says what is wrong and how to fix it."""


class Interrupted(TinyDiffError):
    """Work stopped by Ctrl-C or SIGTERM after saving what it could; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, *, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
