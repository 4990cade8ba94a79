"""Where glibc's ld.so finds a DT_NEEDED name (elf/dl-load.c, _dl_map_object).

For a name without '/', in order:

1. DT_RPATH of the object that needs it, then of the object that loaded that
   one, and so on up to the executable, only if the needing object has no
   DT_RUNPATH (an object with a DT_RUNPATH has no DT_RPATH at all for ld.so);
2. LD_LIBRARY_PATH from the submitting user's environment (':' or ';'
   separated; an empty element is the working directory; $ORIGIN is the
   executable's);
3. DT_RUNPATH of the needing object only (not inherited);
4. /etc/ld.so.cache, unless the needing object is DF_1_NODEFLIB;
5. the default directories, unless DF_1_NODEFLIB.

Every directory of 1, 2, 3 and 5 is tried with the supported glibc-hwcaps
subdirectories first (and, before glibc 2.37, the legacy hwcap ones), then
itself. A file of another ELF class or machine is skipped and the search goes
on; a file that is not ELF stops it (ld.so fails with "invalid ELF header").
A name with '/' is opened as it is, relative to the working directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from cachefs.closure.elf import ET_DYN, ElfInfo
from cachefs.closure.host import LoaderConfig
from cachefs.closure.ldcache import ACCEPTED_FLAGS
from cachefs.closure.session import Session
from cachefs.errors import BadObjectError

# $NAME must end at '/' or the end of the string; ${NAME} anywhere (elf/dl-load.c is_dst).
_DST = re.compile(r"\$(?:\{(ORIGIN|PLATFORM|LIB)\}|(ORIGIN|PLATFORM|LIB)(?=/|$))")


@dataclass(eq=False)
class LoadedObject:
    """One object in the emulated link map.

    ``path`` is the name ld.so opened it by (its l_name: not normalised, may go
    through symlinks); ``real`` its physical path, the object's identity.
    ``names`` are the names it was asked for by, matched like l_libname.
    """

    path: str
    real: str
    info: ElfInfo
    loader: LoadedObject | None
    origin: str
    names: set[str] = field(default_factory=set)

    def answers_to(self, name: str) -> bool:
        return name == self.path or name in self.names or name == self.info.soname


@dataclass(frozen=True)
class SearchContext:
    """What a search needs besides the name: the session, the loader's configuration,
    the executable (for LD_LIBRARY_PATH's $ORIGIN), LD_LIBRARY_PATH and the cwd."""

    session: Session
    config: LoaderConfig
    main: LoadedObject
    library_path: str | None
    cwd: str

    @cached_property
    def env_dirs(self) -> list[str]:
        if not self.library_path:
            return []
        return split_path(self.library_path, self.main.origin, self.config, self.cwd, seps=":;")


def expand(text: str, origin: str | None, config: LoaderConfig) -> str | None:
    """``text`` with $ORIGIN, $PLATFORM and $LIB (braced or not) substituted;
    None if it needs $ORIGIN and there is none (ld.so drops such an element)."""
    failed = False

    def value(match: re.Match[str]) -> str:
        nonlocal failed
        name = match.group(1) or match.group(2)
        if name == "ORIGIN":
            if origin is None:
                failed = True
                return ""
            return origin
        return config.platform if name == "PLATFORM" else config.lib

    expanded = _DST.sub(value, text) if "$" in text else text
    return None if failed else expanded


def split_path(
    text: str, origin: str | None, config: LoaderConfig, cwd: str, *, seps: str = ":"
) -> list[str]:
    """The directories of an RPATH/RUNPATH/LD_LIBRARY_PATH string, expanded, made
    absolute against ``cwd`` (ld.so resolves relative ones against the process's
    working directory) and without trailing slashes; duplicates removed."""
    dirs: list[str] = []
    for element in re.split(f"[{re.escape(seps)}]", text):
        expanded = expand(element, origin, config)
        if expanded is None:
            continue
        if not expanded:
            expanded = "."
        if not expanded.startswith("/"):
            expanded = cwd.rstrip("/") + "/" + expanded
        expanded = expanded.rstrip("/") or "/"
        if expanded not in dirs:
            dirs.append(expanded)
    return dirs


def find(name: str, loader: LoadedObject, ctx: SearchContext) -> tuple[str, ElfInfo] | None:
    """The path ld.so would open for DT_NEEDED ``name`` of ``loader``, and its facts;
    None if no acceptable file is found. Raises BadObjectError where ld.so fails."""
    want = ctx.main.info
    if "$" in name:  # DT_NEEDED may hold $ORIGIN etc. too (elf/dl-deps.c expand_dst)
        expanded = expand(name, loader.origin, ctx.config)
        if expanded is None:
            return None
        name = expanded
    if "/" in name:
        path = name if name.startswith("/") else ctx.cwd.rstrip("/") + "/" + name
        info = _try(path, want, ctx.session)
        return (path, info) if info is not None else None
    for dirs in _search_dirs(loader, ctx):
        found = _search_cache(name, want, ctx) if dirs is None else None
        if dirs is not None:
            found = search_dirs(name, dirs, want, ctx.config.subdirs, ctx.session)
        if found is not None:
            return found
    return None


def _search_dirs(loader: LoadedObject, ctx: SearchContext) -> Iterator[list[str] | None]:
    """Lazily, the directory lists tried in order; None stands for the cache."""
    cfg, cwd = ctx.config, ctx.cwd
    if loader.info.runpath is None:
        node: LoadedObject | None = loader
        while node is not None:
            if node.info.rpath is not None:
                yield split_path(node.info.rpath, node.origin, cfg, cwd)
            node = node.loader
    yield ctx.env_dirs
    if loader.info.runpath is not None:
        yield split_path(loader.info.runpath, loader.origin, cfg, cwd)
    if not loader.info.nodeflib:
        yield None
        yield list(cfg.system_dirs)


def _search_cache(name: str, want: ElfInfo, ctx: SearchContext) -> tuple[str, ElfInfo] | None:
    flags = ACCEPTED_FLAGS.get((want.elf_class, want.machine), frozenset())
    path = ctx.session.ld_so_cache.lookup(name, flags, ctx.config.hwcaps)
    if path is None:
        return None
    info = _try(path, want, ctx.session)
    return (path, info) if info is not None else None


def search_dirs(
    name: str, dirs: Sequence[str], want: ElfInfo, subdirs: Sequence[str], session: Session
) -> tuple[str, ElfInfo] | None:
    """The first ``dir/subdir/name`` then ``dir/name`` that is an acceptable library."""
    for directory in dirs:
        if not session.isdir(directory):
            continue
        for sub in subdirs:
            where = f"{directory}/{sub}"
            if session.isdir(where):
                info = _try(f"{where}/{name}", want, session)
                if info is not None:
                    return f"{where}/{name}", info
        path = f"{directory}/{name}" if directory != "/" else f"/{name}"
        info = _try(path, want, session)
        if info is not None:
            return path, info
    return None


def _try(path: str, want: ElfInfo, session: Session) -> ElfInfo | None:
    """ld.so's open_verify: None when absent or of another class/machine (search on)."""
    try:
        info = session.elf(path)
    except OSError:
        return None
    if info is None:
        raise BadObjectError(path, "not an ELF file (ld.so: invalid ELF header)")
    if not want.compatible(info):
        return None
    if info.elf_type != ET_DYN:
        raise BadObjectError(path, "not a shared object (ld.so: only ET_DYN can be loaded)")
    return info
