"""Step 3: stage the image tree from unpacked inputs: the install map, the recipe's own files,
and `usr/lib/extension-release.d/extension-release.<name>`. Nothing else enters the image.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.core.vocab import Arch
from pipeline.recipe.model import Recipe


def extension_release(recipe: Recipe, version: str, arch: Arch) -> str:
    """The extension-release text: what systemd-sysext matches against the host."""
    lines = [f"ID={recipe.os.id}"]
    if recipe.os.sysext_level:
        lines.append(f"SYSEXT_LEVEL={recipe.os.sysext_level}")
    if recipe.os.version_id:
        lines.append(f"VERSION_ID={recipe.os.version_id}")
    lines += [f"ARCHITECTURE={arch}", f"SYSEXT_ID={recipe.name}", f"SYSEXT_VERSION_ID={version}"]
    if recipe.ships_units:
        lines.append("EXTENSION_RELOAD_MANAGER=1")
    return "\n".join(lines) + "\n"


def stage(recipe: Recipe, version: str, arch: Arch, unpacked: list[Path], labels: list[str],
          root: Path, epoch: int) -> None:
    """Fill the empty directory `root`. `unpacked[i]` holds input i, downloaded from `labels[i]`."""
    placed: dict[str, str] = {}  # image path -> what put it there, to refuse silent overwrites

    def claim(path: str, owner: str) -> Path:
        if path in placed:
            raise PipelineError(f"{recipe.path}: {owner}: {path} is already written by "
                                f"{placed[path]}")
        placed[path] = owner
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    for i, entry in enumerate(recipe.install):
        owner = f"install[{i}]"
        pattern = recipe.expand(entry.src, version, arch)
        source_root = unpacked[entry.input]
        matches = sorted(source_root.glob(pattern))
        if not matches:
            raise PipelineError(f"{recipe.path}: {owner}.from: {pattern!r} matches nothing in "
                                f"{labels[entry.input]} (it has: {_listing(source_root)})")
        into_dir = entry.dst.endswith("/") or len(matches) > 1
        for match in matches:
            dst = entry.dst.rstrip("/") + "/" + match.name if into_dir else entry.dst
            if match.is_dir() and not match.is_symlink():
                for sub in sorted(match.rglob("*")):
                    if sub.is_dir() and not sub.is_symlink():
                        continue
                    rel = sub.relative_to(match).as_posix()
                    _copy(sub, claim(f"{dst.rstrip('/')}/{rel}", owner), entry.mode)
            else:
                _copy(match, claim(dst, owner), entry.mode)

    for i, extra in enumerate(recipe.files):
        target = claim(extra.path, f"files[{i}]")
        target.write_text(extra.content, encoding="utf-8")
        target.chmod(extra.mode)

    release = claim(f"/usr/lib/extension-release.d/extension-release.{recipe.name}",
                    "extension-release")
    release.write_text(extension_release(recipe, version, arch), encoding="utf-8")
    release.chmod(0o644)
    _check_links(recipe, root)
    _normalize(root, epoch)


def _listing(root: Path, limit: int = 12) -> str:
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") or "nothing"


def _copy(src: Path, dst: Path, mode: int | None) -> None:
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    shutil.copyfile(src, dst)
    if mode is None:
        mode = 0o755 if src.stat().st_mode & 0o111 else 0o644
    dst.chmod(mode)


def _check_links(recipe: Recipe, root: Path) -> None:
    """Every symlink in the image must resolve inside it (a lib link needs its target)."""
    real_root = root.resolve()
    for link in root.rglob("*"):
        if not link.is_symlink():
            continue
        target = os.readlink(link)
        rel = "/" + link.relative_to(root).as_posix()
        resolved = (link.parent / target).resolve()
        if os.path.isabs(target) or not resolved.is_relative_to(real_root):
            raise PipelineError(f"{recipe.path}: install: {rel} links outside the image ({target})")
        if not resolved.exists():
            raise PipelineError(f"{recipe.path}: install: {rel} -> {target} dangles; "
                                "install its target too")


def _normalize(root: Path, epoch: int) -> None:
    """Fixed directory modes and timestamps, so the image bytes depend only on the contents."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    root.chmod(0o755)
    os.utime(root, (epoch, epoch))
