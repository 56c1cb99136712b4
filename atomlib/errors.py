"""The one exception type for mistakes a user can make.

An AtomError carries a single sentence that says what is wrong and what to do. The CLI
prints it on one line of stderr and exits with code 2; notebooks show it as is. Anything
that is not an AtomError is a bug in ATOM-GPT and keeps its traceback.
"""


class AtomError(Exception):
    """A user-caused error (bad config, missing file, server down), with a one-line message."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep the message on one line: the CLI contract is "one line on stderr".
        super().__init__(" ".join(str(message).split()))
