"""Where a headless Chromium lives on this machine, for the browser tests, the benchmark and the
docs' pictures (dev tooling, not part of the package): users' Chromium is in many places (a
variable, Playwright's cache, Debian, Ubuntu's snap, macOS), so it is looked for, never assumed
at one path.

``python scripts/browser.py`` (``make chromium``, run by ``make test``) prints the browser it
finds or, when there is none, provisions one — Playwright's installer where it can download,
the system's package manager when running as root on Debian/Ubuntu — or stops with one
sentence naming what to install.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: Flags for a headless, quiet, offline Chromium (software GL, so WebGL 3D plots render).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
]
#: Names a Chromium goes by on the PATH.
PATH_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Where Chromium-family browsers install themselves outside the PATH.
KNOWN_PATHS = (
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/snap/bin/chromium",
)
MISSING = (
    "no Chromium found: install one (Debian: apt-get install chromium; Ubuntu: "
    "apt-get install chromium-browser; anywhere with internet: python -m playwright install "
    "chromium) or point EMBEDSCOPE_CHROMIUM at its executable"
)


def find_chromium() -> Path | None:
    """The first Chromium found: ``$EMBEDSCOPE_CHROMIUM``, Playwright's own browser, the PATH,
    then the usual install places; None when there is none."""
    if os.environ.get("EMBEDSCOPE_CHROMIUM"):
        path = Path(os.environ["EMBEDSCOPE_CHROMIUM"]).expanduser()
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"EMBEDSCOPE_CHROMIUM={path} is not an executable file")
        return path
    candidates = [_playwright_chromium(), *(shutil.which(n) for n in PATH_NAMES), *KNOWN_PATHS]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


def _playwright_chromium() -> str | None:
    """Playwright's downloaded Chromium (``python -m playwright install chromium``), if any."""
    cache = os.environ.get("PLAYWRIGHT_BROWSERS_PATH") or str(
        Path.home() / ("Library/Caches" if sys.platform == "darwin" else ".cache") / "ms-playwright"
    )
    patterns = ("chromium-*/chrome-linux*/chrome", "chromium-*/chrome-mac*/*.app/Contents/MacOS/*")
    found = sorted(p for pattern in patterns for p in glob.glob(os.path.join(cache, pattern)))
    return found[-1] if found else None


def ensure_chromium() -> Path:
    """A Chromium, provisioned if needed; ``RuntimeError`` with :data:`MISSING` if impossible."""
    found = find_chromium()
    if found:
        return found
    for route in (_install_with_playwright, _install_with_apt):
        if route():
            found = find_chromium()
            if found:
                return found
    raise RuntimeError(MISSING)


def _install_with_playwright() -> bool:
    """Playwright's own download: works wherever its CDN is reachable."""
    print("[embedscope] no Chromium found; trying playwright install chromium", flush=True)
    cmd = [sys.executable, "-m", "playwright", "install", "chromium"]
    return _quiet(cmd, timeout=600)


def _install_with_apt() -> bool:
    """Debian's ``chromium`` (Ubuntu's ``chromium-browser``), as root only."""
    if sys.platform != "linux" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print("[embedscope] trying apt-get install chromium (running as root)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _quiet(["apt-get", "update", "-qq"], timeout=600, env=env):
        return False
    return any(
        _quiet(["apt-get", "install", "-y", "-qq", package], timeout=900, env=env)
        for package in ("chromium", "chromium-browser")
    )


def _quiet(cmd: list[str], *, timeout: int, env: dict | None = None) -> bool:
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def main() -> int:
    try:
        print(f"[embedscope] Chromium: {ensure_chromium()}", flush=True)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
