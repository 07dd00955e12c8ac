"""The wheel's build step: it carries the notebooks and the sample into the package.

Both are kept once, at the repository's top (``notebooks/`` for `make lab` and the tests,
``data/sample/`` for `make sample`), and read from there by a checkout (an editable install).
An installed kit has no checkout, so the wheel carries them as ``embedscope/notebooks`` and
``embedscope/sample`` (``embedscope.shipped`` finds either place). Everything else is declared
in pyproject.toml.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def _generated() -> tuple[str, ...]:
    """What a run of dataset "sample" writes beside the sample's own images (it is also the
    sample's data folder in a checkout): never shipped. Read from the kit's vocabulary module
    by its path, which imports nothing (the build has none of the kit's dependencies)."""
    path = Path(__file__).resolve().parent / "src" / "embedscope" / "vocabulary.py"
    spec = importlib.util.spec_from_file_location("_embedscope_vocabulary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GENERATED_NAMES


GENERATED = _generated()


def shipped_files(top: Path) -> Iterator[tuple[Path, str]]:
    """Each file the wheel carries from ``top`` (the repository), with its path inside the
    package: every notebook, and the sample's licence and class folders' images (not what a
    run wrote there, nor hidden files or temp files of a write in flight)."""
    for notebook in sorted((top / "notebooks").glob("*.ipynb")):
        yield notebook, f"notebooks/{notebook.name}"
    sample = top / "data" / "sample"
    yield sample / "LICENSE.md", "sample/LICENSE.md"
    for group in sorted(sample.iterdir()):
        if group.is_dir() and group.name not in GENERATED and not group.name.startswith("."):
            for image in sorted(group.iterdir()):
                if image.is_file() and not image.name.startswith("."):
                    yield image, f"sample/{group.name}/{image.name}"


class BuildPy(build_py):
    """setuptools' build_py, plus :func:`shipped_files` (an editable install reads them where
    they are)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        top = Path(__file__).resolve().parent
        for source, inside in shipped_files(top):
            target = Path(self.build_lib) / "embedscope" / inside
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))


if __name__ == "__main__":  # setuptools runs this file as __main__; the tests import it
    setup(cmdclass={"build_py": BuildPy})
