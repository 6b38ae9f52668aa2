"""Start-up failures a user can fix, told in one line.

The app's lifespan raises :class:`CannotStart` with what is wrong and what to do;
the edge turns it into the one line uvicorn prints (instead of the traceback
Starlette hands it), and uvicorn exits with status 3.
"""

from __future__ import annotations


class CannotStart(Exception):
    """The service cannot start; the message names the problem and the fix."""


__all__ = ["CannotStart"]
