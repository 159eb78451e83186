"""Console scripts whose output is piped into ``head`` or ``less`` and cut short."""

import functools
import os
import sys


def quiet_on_closed_pipe(main):
    """Wrap a console script's ``main``: when the reader of stdout goes away (``| head``),
    exit 0 without a ``BrokenPipeError`` traceback, as ``cat`` and ``grep`` do. stdout is
    pointed at /dev/null first so the interpreter's final flush cannot raise again (the
    recipe in Python's ``signal`` documentation)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return wrapper
