"""Failpoints: let a test make a service die at an exact point, as a power cut would.

``YIDI_CRASH_AT=<stage>:<point>`` makes that stage's process exit at once (no clean-up, no
flush) when it reaches the point. Unset in production; read once at import.
"""

from __future__ import annotations

import os
import sys

_CRASH_AT = os.environ.get("YIDI_CRASH_AT", "")


def crash_point(stage: str, point: str) -> None:
    if _CRASH_AT and _CRASH_AT == f"{stage}:{point}":
        sys.stderr.write(f"failpoint {_CRASH_AT}: exiting now\n")
        sys.stderr.flush()
        os._exit(70)


def armed(stage: str, point: str) -> bool:
    return bool(_CRASH_AT) and _CRASH_AT == f"{stage}:{point}"
