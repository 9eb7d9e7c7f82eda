"""This package's form server (``python -m flyteplugins.hitl serve ...``) with fsync turned off.

For reference only: running it next to the real server shows what the fsync of every stored
answer costs. The package itself always syncs a local answer to disk before acknowledging it.
"""

from __future__ import annotations

import os
import sys


def _no_fsync(fd: int) -> None:
    return None


if __name__ == "__main__":
    os.fsync = _no_fsync
    from flyteplugins.hitl.__main__ import main

    sys.exit(main(sys.argv[1:]))
