"""Where users live: finding their Chromium wherever it is, and JupyterLab opening cleanly."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from browser import MISSING, find_chromium

from embedscope.lab import CONFIG_DIR, lab_command, lab_env


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No variable, an empty Playwright cache and a PATH of one empty folder."""
    monkeypatch.delenv("EMBEDSCOPE_CHROMIUM", raising=False)
    monkeypatch.setenv("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path / "pw"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def test_chromium_is_found_by_variable_then_playwright_then_path(clean_env: Path, monkeypatch):
    on_path = _executable(clean_env / "bin" / "chromium-browser")
    assert find_chromium() == on_path
    playwright = _executable(clean_env / "pw" / "chromium-1234" / "chrome-linux" / "chrome")
    assert find_chromium() == playwright
    chosen = _executable(clean_env / "my chrome")
    monkeypatch.setenv("EMBEDSCOPE_CHROMIUM", str(chosen))
    assert find_chromium() == chosen
    monkeypatch.setenv("EMBEDSCOPE_CHROMIUM", str(clean_env / "nothing here"))
    with pytest.raises(FileNotFoundError, match="EMBEDSCOPE_CHROMIUM=.*not an executable"):
        find_chromium()


def test_no_chromium_anywhere_is_none_and_the_message_names_what_to_install(clean_env: Path):
    if any(Path(p).exists() for p in ("/snap/bin/chromium", "/Applications/Chromium.app")):
        pytest.fail("this machine has a Chromium in a fixed place; the test needs it hidden")
    assert find_chromium() is None
    assert "apt-get install chromium" in MISSING and "playwright install chromium" in MISSING
    assert "\n" not in MISSING


def test_make_test_entry_point_reports_the_browser_it_uses(tmp_path: Path) -> None:
    chosen = _executable(tmp_path / "chromium")
    env = {**os.environ, "EMBEDSCOPE_CHROMIUM": str(chosen)}
    out = subprocess.run(
        [sys.executable, "-m", "embedscope.browser"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and str(chosen) in out.stdout


def test_lab_opens_for_root_without_build_check_or_news(monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert "--allow-root" in lab_command("notebooks")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "--allow-root" not in lab_command("notebooks")
    env = lab_env({"JUPYTER_CONFIG_PATH": "/elsewhere"})
    assert env["JUPYTER_CONFIG_PATH"].split(os.pathsep) == [str(CONFIG_DIR), "/elsewhere"]
    page = json.loads((CONFIG_DIR / "labconfig" / "page_config.json").read_text())
    assert page["buildCheck"] is False and page["buildAvailable"] is False
    news = json.loads((CONFIG_DIR / "labconfig" / "default_setting_overrides.json").read_text())
    assert news["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
