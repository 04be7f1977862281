"""Shared by the load scripts (soak.py, overload.py): stopping the flashsrv they started."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path


def stop_server(proc: subprocess.Popen | None, base: Path) -> None:
    """SIGTERM the server if it still runs (SIGKILL after 15 s), then remove the temporary
    folder `base` that held its data set."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(base, ignore_errors=True)
