"""The exception types for failures a user can fix, and for those a retry can cure.

The CLI and the KFP components print a ``ShrinkError`` as a single line and exit
non-zero; anything else is a bug and keeps its traceback.
"""


class ShrinkError(Exception):
    """An expected failure: bad input, a missing file, an unreachable store.

    The message must name the file, row or URI at fault and what is wrong with it.
    """


class TransientError(ShrinkError):
    """An expected failure that the same call may not meet a little later: a store or hub that did not answer.

    Only these are retried (``shrink.transient.retrying``); every other ``ShrinkError`` is
    deterministic (the same input fails the same way), so retrying it only delays the answer.
    """
