"""Writing the files a report leaves beside a study (zoo exports, the dashboard, findings)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(target: Path, text: str) -> Path:
    """Write `text` to `target` atomically, through a fresh temporary file in the same
    folder (created exclusively, so a planted symlink is never written through): a reader
    sees the old file or the new one, never half of one."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes it private; a report is meant to be read
            f.write(text)
        os.replace(tmp, target)  # replaces a symlink at `target` itself, not what it points to
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
