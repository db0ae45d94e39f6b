"""The alerts dashboard in a real browser: `streamlit run` on a loopback port with the test's
environment (a copy of the seeded database: an open drift alert), headless Chromium takes a
screenshot, and the PNG must show a rendered page (not a blank or a spinner-only screen). The
screenshot is kept in test-artifacts/alerts_dashboard.png.

Chromium is a system package: `apt-get install -y chromium` (Debian). Without it this test FAILS
(it is part of the suite, not optional).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO
from test_ui import APP, seeded, ui_seed  # noqa: F401  (fixtures, reused: one seeded state per session)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACT = REPO / "test-artifacts" / "alerts_dashboard.png"
PAGE_URL_PATH = "Alerts_Dashboard"  # streamlit's URL for pages/5_Alerts_Dashboard.py


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/_stcore/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200 and resp.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"streamlit did not answer on {url} within {timeout:.0f}s:\n{log.read_text(errors='replace')[-3000:]}")


def screenshot(url: str, out: Path, profile: Path, budget_ms: int = 15000) -> tuple[subprocess.CompletedProcess, str]:
    """Headless Chromium: a screenshot of `url` and, from the same page load, its DOM (stdout)."""
    result = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1400,1000", f"--virtual-time-budget={budget_ms}",
         f"--screenshot={out}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    return result, result.stdout


def image_stats(path: Path) -> dict:
    """Size, distinct colours and the share of non-background pixels of a PNG."""
    from PIL import Image, ImageStat

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        small = rgb.resize((350, 250))
        colors = small.getcolors(maxcolors=350 * 250) or []
        background = max(colors)[1] if colors else (255, 255, 255)
        busy = sum(n for n, c in colors if sum(abs(a - b) for a, b in zip(c, background)) > 30)
        return {"size": rgb.size, "colors": len(colors), "busy": busy / (350 * 250),
                "stddev": sum(ImageStat.Stat(rgb).stddev) / 3}


@pytest.mark.slow
def test_alerts_dashboard_renders_in_headless_chromium(seeded, tmp_path):  # noqa: F811
    if not CHROMIUM.exists():
        pytest.fail("Chromium is not installed at /usr/bin/chromium: install it with "
                    "`apt-get update && apt-get install -y chromium` (Debian package) to run the UI browser check")
    port = free_port()
    log = tmp_path / "streamlit.log"
    env = dict(os.environ)  # the test's environment: its database (seeded), registry and model name
    env.update({"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_HEADLESS": "true"})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP / "Home.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=str(tmp_path),
            start_new_session=True,
        )
    try:
        wait_healthy(proc, port, log)
        url = f"http://127.0.0.1:{port}/{PAGE_URL_PATH}"
        png = tmp_path / "alerts_dashboard.png"
        # Chromium's virtual time runs faster than the script on a cold server (imports, MLflow
        # client, first connection): the first visits warm it up. A screenshot is kept once the
        # DOM of the same page load says the script run finished and the page's last section is there.
        done = False
        for attempt in range(8):
            if attempt:
                time.sleep(2)  # let the previous visit's script run end: the server is then idle
            if png.exists():
                png.unlink()
            result, dom = screenshot(url, png, tmp_path / f"chromium-profile-{attempt}")
            assert png.exists(), f"chromium wrote no screenshot (exit {result.returncode}):\n{result.stderr[-3000:]}"
            if 'data-test-script-state="notRunning"' in dom and "Decision history" in dom:
                done = True
                break
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, ARTIFACT)
        assert done, f"the page never finished rendering in Chromium (last screenshot: {ARTIFACT})"
        assert "Traceback" not in dom and "stException" not in dom, "the page shows an exception"
        assert "Alerts dashboard" in dom and f"Alert #{seeded.alert_ids[0]}" in dom, "the seeded alert is not shown"
        stats = image_stats(png)
        assert png.stat().st_size > 30_000, stats
        assert stats["size"] == (1400, 1000), stats
        assert stats["colors"] > 50 and stats["busy"] > 0.05 and stats["stddev"] > 10, (
            f"the screenshot looks blank: {stats} (see {ARTIFACT})")
        assert proc.poll() is None, "streamlit died while the page was open"
        server_log = log.read_text(errors="replace")
        assert "Traceback" not in server_log, server_log[-3000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
