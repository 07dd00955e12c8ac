"""Rebuild ``data/sample/``: 3D Fluent Emoji sorted into class folders by emoji group.

Images: npm ``@lobehub/fluent-emoji-3d`` (MIT, Microsoft's Fluent Emoji, 256x256 WebP).
Groups: npm ``emojibase-data`` (MIT) ``en/data.json`` group ids, ``en/messages.json`` names.
Skin-tone variants are dropped; the same number of images is taken from each group, evenly
spaced over the group's emoji order, so the selection is balanced and stable.

    python scripts/make_sample.py [--per-group 40] [--out data/sample]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

EMOJI_PKG = "@lobehub/fluent-emoji-3d@1.1.0"
GROUPS_PKG = "emojibase-data@17.0.0"
#: Groups left out: "component" holds hair/skin swatches; "flags" are near-identical rectangles.
SKIP_GROUPS = {"component", "flags"}
SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}


def npm_unpack(spec: str, work: Path) -> Path:
    """``npm pack`` a package (no install, no scripts) and unpack it safely."""
    out = subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=work, check=True, capture_output=True, text=True
    )
    tgz = work / out.stdout.strip().splitlines()[-1]
    dest = work / tgz.stem
    with tarfile.open(tgz) as tf:
        tf.extractall(dest, filter="data")
    return dest / "package"


def key(codepoints: str) -> str:
    """Code points without variation selectors, lower case: the common key of both packages."""
    return "-".join(c for c in codepoints.lower().split("-") if c != "fe0f")


def select(emoji_dir: Path, groups_dir: Path, per_group: int) -> dict[str, list[Path]]:
    data = json.loads((groups_dir / "en" / "data.json").read_text(encoding="utf-8"))
    names = {
        g["order"]: g["key"]
        for g in json.loads((groups_dir / "en" / "messages.json").read_text())["groups"]
    }
    assets = {key(p.stem): p for p in (emoji_dir / "assets").glob("*.webp")}
    chosen: dict[str, list[Path]] = {}
    for entry in sorted(data, key=lambda e: e.get("order", 1e9)):
        group = names.get(entry.get("group"))
        k = key(entry["hexcode"])
        if group is None or group in SKIP_GROUPS or SKIN_TONES & set(k.split("-")):
            continue
        if k in assets:
            chosen.setdefault(group, []).append(assets[k])
    balanced = {}
    for group, paths in chosen.items():
        if len(paths) < per_group:
            continue
        step = len(paths) / per_group
        balanced[group] = [paths[int(i * step)] for i in range(per_group)]
    return balanced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=40)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data/sample"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emoji_dir, groups_dir = npm_unpack(EMOJI_PKG, work), npm_unpack(GROUPS_PKG, work)
        staged = work / "sample"
        for group, paths in sorted(select(emoji_dir, groups_dir, args.per_group).items()):
            (staged / group).mkdir(parents=True)
            for p in paths:
                shutil.copyfile(p, staged / group / p.name)
            print(f"{group}: {len(paths)}")
        if (out / "LICENSE.md").exists():
            shutil.copyfile(out / "LICENSE.md", staged / "LICENSE.md")
        old = out.with_name(out.name + ".old")
        if out.exists():
            out.rename(old)  # swap whole folders so a failure never leaves half a sample
        shutil.move(staged, out)
        shutil.rmtree(old, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
