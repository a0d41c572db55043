"""The one exception type for failures a user can fix.

The CLI and the KFP components print a ``ShrinkError`` as a single line and exit
non-zero; anything else is a bug and keeps its traceback.
"""


class ShrinkError(Exception):
    """An expected failure: bad input, a missing file, an unreachable store.

    The message must name the file, row or URI at fault and what is wrong with it.
    """
