"""Fault injection for the crash and failure tests: the test side of mlops_cli.runs.FAULT_HOOK.

Production never sets the hook. A test describes the fault in MLOPS_FAULT, read here only:
'<step>:hang|fail|transient=N', comma separated for several steps:
  hang          the step blocks (to be killed, or to hold its lock while the test looks)
  fail          the step raises
  transient=N   the step raises TransientError N times, then runs; the count is kept in the
                file $MLOPS_FAULT_COUNTER, so that it survives retries and processes

The shadow worker (mlops_cli/serving/shadow.py) calls the hook as step 'shadow' before each
challenger predict: 'shadow:fail' is a challenger that raises, 'shadow:hang' one that hangs.

install_for_session() (conftest) installs the hook in the test process and puts SITE on the
PYTHONPATH of every process the tests start: its sitecustomize installs the hook there too
(the CLI run as a subprocess, a pipeline launched by the API or the UI), when MLOPS_FAULT is set.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent / "fault_site"


def from_environment(step: str) -> None:
    """The hook: inject into `step` the fault MLOPS_FAULT describes, read at each step (so a test
    sets or clears it with monkeypatch.setenv / delenv)."""
    from mlops_cli.errors import TransientError

    spec = os.environ.get("MLOPS_FAULT", "")
    for item in filter(None, spec.split(",")):
        target, _, kind = item.partition(":")
        if target != step:
            continue
        if kind == "hang":
            while True:
                time.sleep(1)
        if kind == "fail":
            raise RuntimeError(f"injected failure in {step} (MLOPS_FAULT)")
        if kind.startswith("transient="):
            counter = os.environ.get("MLOPS_FAULT_COUNTER", "")
            done = int(Path(counter).read_text() or 0) if counter and os.path.exists(counter) else 0
            if done < int(kind.split("=", 1)[1]):
                if counter:
                    Path(counter).write_text(str(done + 1))
                raise TransientError(f"injected transient error in {step} (MLOPS_FAULT)")


def install() -> None:
    """Set the hook in this process."""
    from mlops_cli import runs

    runs.FAULT_HOOK = from_environment


def install_for_session() -> None:
    """The hook in this process, and SITE first on the PYTHONPATH its child processes inherit."""
    install()
    paths = [str(SITE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
