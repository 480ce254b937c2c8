"""Step 3: stage the image tree from unpacked inputs: the install map, the recipe's own files,
and `usr/lib/extension-release.d/extension-release.<name>`. Nothing else enters the image.

Reads from the inputs and writes into the image root go through `pipeline.build.tree`: no
input link is ever followed, and a write that would go through a link already in the root is
refused before it happens. Every image path is claimed once; a second claim is an error, not
a silent overwrite.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from pipeline.build.elf import NotElf, is_elf, read_elf
from pipeline.build.tree import Entry, Tree, UnsafePath, check_path
from pipeline.core.artifacts import ElfRecord
from pipeline.core.errors import PipelineError
from pipeline.core.fs import os_problem
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


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _matches(parts, pattern[1:]) or (bool(parts) and _matches(parts[1:], pattern))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def glob(tree: Tree, pattern: str) -> list[Entry]:
    """Entries of `tree` matching `pattern` (`*`, `?`, `[...]` within a name, `**` for any
    directories), without following links; an entry inside a matched directory is left to
    that directory."""
    wanted = tuple(p for p in pattern.split("/") if p not in ("", "."))
    found: list[Entry] = []
    for entry in tree.walk():
        if _matches(entry.path.parts, wanted) and not any(
            entry.path.is_relative_to(f.path) for f in found if f.is_dir
        ):
            found.append(entry)
    return found


def stage(
    recipe: Recipe,
    version: str,
    arch: Arch,
    unpacked: list[Path],
    labels: list[str],
    root: Path,
    epoch: int,
) -> list[ElfRecord]:
    """Fill the empty directory `root`. `unpacked[i]` holds input i, downloaded from `labels[i]`.
    `epoch` is the time of the tree's directories (the image tools stamp everything else).
    Returns the image's ELF files; one for another machine than `arch` is refused."""
    placed: dict[PurePosixPath, str] = {}  # image path -> what put it there

    def claim(path: str, owner: str) -> PurePosixPath:
        try:
            rel = check_path(path.lstrip("/"))
        except UnsafePath as err:
            raise PipelineError(f"{recipe.path}: {owner}: {path}: {err}") from None
        if rel in placed:
            raise PipelineError(
                f"{recipe.path}: {owner}: /{rel} is already written by {placed[rel]}"
            )
        placed[rel] = owner
        return rel

    with ExitStack() as stack:
        out = stack.enter_context(Tree(root))
        sources = [stack.enter_context(Tree(p)) for p in unpacked]
        for i, entry in enumerate(recipe.install):
            owner = f"install[{i}]"
            pattern = recipe.expand(entry.src, version, arch)
            if entry.input >= len(sources):
                raise PipelineError(
                    f"{recipe.path}: {owner}.input: {entry.input}: this build "
                    f"has {len(sources)} input(s)"
                )
            source = sources[entry.input]
            matches = glob(source, pattern)
            if not matches:
                raise PipelineError(
                    f"{recipe.path}: {owner}.from: {pattern!r} matches nothing "
                    f"in {labels[entry.input]} (it has: {_listing(source)})"
                )
            into_dir = entry.dst.endswith("/") or len(matches) > 1
            for match in matches:
                dst = entry.dst.rstrip("/") + "/" + match.path.name if into_dir else entry.dst
                members = (
                    [e for e in source.walk(match.path) if not e.is_dir]
                    if match.is_dir
                    else [match]
                )
                for member in members:
                    below = member.path.relative_to(match.path).as_posix()
                    target = claim(f"{dst.rstrip('/')}/{below}" if match.is_dir else dst, owner)
                    try:
                        out.copy_from(source, member.path, target, entry.mode)
                    except UnsafePath as err:
                        raise PipelineError(f"{recipe.path}: {owner}: /{target}: {err}") from None
                    except OSError as err:
                        raise PipelineError(f"{root}: /{target}: {os_problem(err)}") from None

        for i, extra in enumerate(recipe.files):
            target = claim(extra.path, f"files[{i}]")
            try:
                out.write(target, extra.content.encode("utf-8"), extra.mode)
            except UnsafePath as err:
                raise PipelineError(f"{recipe.path}: files[{i}]: {extra.path}: {err}") from None

        release = claim(
            f"/usr/lib/extension-release.d/extension-release.{recipe.name}", "extension-release"
        )
        out.write(release, extension_release(recipe, version, arch).encode(), 0o644)
        _check_links(recipe, out)
        elf = _check_elf(recipe, out, arch)
        _normalize(out, epoch)
    return elf


def _listing(tree: Tree, limit: int = 12) -> str:
    names = [e.path.as_posix() for e in tree.walk()]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") or "nothing"


def _check_links(recipe: Recipe, tree: Tree) -> None:
    """Every symlink in the image must resolve inside it (a lib link needs its target)."""
    real_root = tree.root.resolve()
    for entry in tree.walk():
        if not entry.is_link:
            continue
        target = tree.readlink(entry.path)
        rel = f"/{entry.path}"
        # Resolving only reads (readlink/lstat); nothing is written through a link.
        try:
            resolved = (real_root / entry.path.parent / target).resolve()
        except (RuntimeError, OSError):  # a loop: RuntimeError up to 3.12, OSError after
            raise PipelineError(
                f"{recipe.path}: install: {rel} -> {target} is a symlink loop"
            ) from None
        if target.startswith("/") or not resolved.is_relative_to(real_root):
            raise PipelineError(f"{recipe.path}: install: {rel} links outside the image ({target})")
        if not resolved.exists():
            raise PipelineError(
                f"{recipe.path}: install: {rel} -> {target} dangles; install its target too"
            )


def _check_elf(recipe: Recipe, tree: Tree, arch: Arch) -> list[ElfRecord]:
    """Every ELF file must be for `arch`; each one's machine and needs, for the metadata."""
    found = []
    for entry in tree.walk():
        if not entry.is_file:
            continue
        with tree.open(entry.path) as f:
            if not is_elf(f.read(4)):
                continue
            try:
                info = read_elf(f)
            except NotElf as err:
                raise PipelineError(f"{recipe.path}: /{entry.path}: {err}") from None
        if info.machine != arch.facts.elf_machine:
            raise PipelineError(
                f"{recipe.path}: /{entry.path} is an ELF file for "
                f"{info.machine_name}, not {arch}: refused in an {arch} image"
            )
        found.append(ElfRecord(f"/{entry.path}", info.machine_name, info.interpreter, info.needed))
    return found


def _normalize(tree: Tree, epoch: int) -> None:
    """Fixed directory modes and times, so the image bytes depend only on the contents."""
    for entry in [e for e in tree.walk() if e.is_dir]:
        tree.chmod(entry.path, 0o755)
    os.chmod(tree.fd, 0o755)
    for entry in tree.walk():
        os.utime(tree.root / entry.path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree.fd, (epoch, epoch))
