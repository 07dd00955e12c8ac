"""Rebuild ``data/sample/``: 3D Fluent Emoji sorted into class folders by emoji group.

Images: npm ``@lobehub/fluent-emoji-3d`` (MIT, Microsoft's Fluent Emoji, 256x256 WebP), copied
byte for byte. Groups: npm ``emojibase-data`` (MIT), ``en/data.json`` group ids and
``en/messages.json`` group names. Skin-tone variants and the ``component`` group are dropped, as is
any group with fewer than ``--per-group`` emoji; every kept group gets exactly ``--per-group``
images, evenly spaced over emojibase's order, so the selection is balanced and stable.
Output: ``<out>/<group-slug>/<emojibase hexcode>.webp`` plus the kept ``<out>/LICENSE.md``.

    python scripts/make_sample.py [--per-group 40] [--out data/sample]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

EMOJI_PKG = "@lobehub/fluent-emoji-3d@1.1.0"
GROUPS_PKG = "emojibase-data@17.0.0"
SKIP_GROUPS = {"component"}  # hair and skin-tone swatches, not emoji in their own right
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))
#: Left out of the matching key: variation selectors (FE0E/FE0F, which the two packages write
#: differently) and the tag-sequence terminator E007F (absent from the subdivision-flag file names).
IGNORED = frozenset({0xFE0E, 0xFE0F, 0xE007F})
MAX_BYTES = 6 * 1024 * 1024
KEEP = ("LICENSE.md",)

Key = tuple[int, ...]


def npm_unpack(spec: str, work: Path) -> Path:
    """``npm pack`` one pinned package into ``work`` (no install, no scripts); unpack it safely."""
    out = subprocess.run(
        ["npm", "pack", spec, "--json", "--ignore-scripts"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    )
    tgz = work / json.loads(out.stdout)[0]["filename"]
    dest = work / tgz.name.removesuffix(".tgz")
    with tarfile.open(tgz) as tf:
        tf.extractall(dest, filter="data")  # refuses absolute paths, "..", links out, devices
    return dest / "package"


def key(codepoints: str) -> Key:
    """Matching key of a code-point string such as ``1F3F3-FE0F-200D-1F308`` (emojibase) or
    ``1f3f4-e0067_e0062_e0073_e0063_e0074`` (asset file name): case, zero padding, ``-``/``_``
    separators, variation selectors and the tag terminator do not matter."""
    return tuple(c for c in (int(h, 16) for h in re.split(r"[-_]", codepoints)) if c not in IGNORED)


def load_assets(emoji_dir: Path) -> dict[Key, Path]:
    """Asset files by key; of duplicates (``23-fe0f-20e3`` and ``0023-fe0f-20e3``) the one with
    zero-padded, four-digit code points wins."""

    def rank(p: Path) -> tuple[bool, str]:
        return (any(len(h) < 4 for h in re.split(r"[-_]", p.stem)), p.name)

    assets: dict[Key, Path] = {}
    for p in sorted((emoji_dir / "assets").glob("*.webp"), key=rank):
        assets.setdefault(key(p.stem), p)
    return assets


def slug(name: str) -> str:
    """``smileys & emotion`` -> ``smileys-emotion``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def select(emoji_dir: Path, groups_dir: Path, per_group: int) -> dict[str, list[tuple[str, Path]]]:
    """``{group slug: [(hexcode, asset path), ...]}``: ``per_group`` evenly spaced emoji from each
    group that has at least that many, skin-tone variants and skipped groups left out."""
    en = groups_dir / "en"
    data = json.loads((en / "data.json").read_text(encoding="utf-8"))
    groups = json.loads((en / "messages.json").read_text(encoding="utf-8"))["groups"]
    names = {g["order"]: slug(g["message"]) for g in groups}
    skins = {key(s["hexcode"]) for e in data for s in e.get("skins", [])}
    assets = load_assets(emoji_dir)

    by_group: dict[str, list[tuple[str, Path]]] = {}
    for entry in sorted(data, key=lambda e: (e.get("order", 1 << 30), e["hexcode"])):
        k = key(entry["hexcode"])
        group = names.get(entry.get("group", -1))
        if group is None or group in SKIP_GROUPS or k in skins or SKIN_TONES.intersection(k):
            continue
        if k in assets:
            by_group.setdefault(group, []).append((entry["hexcode"], assets[k]))
    return {
        group: [items[i * len(items) // per_group] for i in range(per_group)]
        for group, items in by_group.items()
        if len(items) >= per_group
    }


def replace_dir(staged: Path, out: Path) -> None:
    """Put ``staged`` in place of ``out`` by renames on one file system, restoring ``out`` if the
    swap fails, so ``out`` is always either the old or the new sample, never half of one."""
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent)) / out.name
    try:
        if out.exists():
            out.rename(old)
        staged.rename(out)
    except BaseException:
        if old.exists():
            old.rename(out)
        raise
    finally:
        shutil.rmtree(old.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Build the sample in a temporary folder next to ``--out``, then swap it in whole."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=40, help="images per group (40)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "sample"
    )
    args = parser.parse_args(argv)
    if args.per_group < 1:
        parser.error("--per-group must be at least 1")
    out: Path = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        emoji_dir, groups_dir = npm_unpack(EMOJI_PKG, work), npm_unpack(GROUPS_PKG, work)
        chosen = select(emoji_dir, groups_dir, args.per_group)
        if not chosen:
            parser.error(f"no group has {args.per_group} emoji")
        staged_root = Path(tempfile.mkdtemp(prefix=f".{out.name}-new-", dir=out.parent))
        try:
            staged = staged_root / out.name
            for group, items in sorted(chosen.items()):
                (staged / group).mkdir(parents=True)
                for hexcode, src in items:
                    shutil.copyfile(src, staged / group / f"{hexcode}.webp")
                print(f"{group:<16} {len(items)}")
            for name in KEEP:
                if (out / name).is_file():
                    shutil.copyfile(out / name, staged / name)
            size = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
            total = sum(len(items) for items in chosen.values())
            print(f"{'total':<16} {total} images in {len(chosen)} groups, {size / 2**20:.2f} MiB")
            if size > MAX_BYTES:
                raise SystemExit(f"sample is over {MAX_BYTES / 2**20:.0f} MiB; lower --per-group")
            replace_dir(staged, out)
        finally:
            shutil.rmtree(staged_root, ignore_errors=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
