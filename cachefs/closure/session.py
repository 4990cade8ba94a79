"""Filesystem facts memoised for one resolve session: parsed ELF files, directory
existence, symlink targets, the parsed ld.so.cache and the loader configurations.

A session is meant to live for one closure, or for a batch of closures taken at
the same moment (the benchmark); it never notices files changing under it.
"""

from __future__ import annotations

import os

from cachefs.closure import host, ldcache
from cachefs.closure.elf import ElfInfo, read_elf
from cachefs.errors import BadObjectError, ClosureError

# Linux's limit on symlinks followed while resolving one path (ELOOP past it).
MAX_SYMLINKS = 40


class Session:
    """``config``, if given, replaces this host's loader configuration (for every ABI):
    for resolving against a loader set up differently, and for tests."""

    def __init__(
        self, ld_so_cache: str = "/etc/ld.so.cache", config: host.LoaderConfig | None = None
    ) -> None:
        self._fixed_config = config
        self._ld_so_cache_path = ld_so_cache
        self._ld_so_cache: ldcache.LdCache | None = None
        self._elf: dict[str, ElfInfo | BadObjectError | OSError | None] = {}
        self._isdir: dict[str, bool] = {}
        self._links: dict[str, str | None] = {}
        self._configs: dict[tuple[int, int], host.LoaderConfig] = {}

    @property
    def ld_so_cache(self) -> ldcache.LdCache:
        if self._ld_so_cache is None:
            self._ld_so_cache = ldcache.load(self._ld_so_cache_path)
        return self._ld_so_cache

    def loader_config(self, info: ElfInfo) -> host.LoaderConfig:
        if self._fixed_config is not None:
            return self._fixed_config
        key = (info.elf_class, info.machine)
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = host.detect(info.elf_class, info.machine)
        return config

    def elf(self, path: str) -> ElfInfo | None:
        """The ELF facts of ``path``; None if it is not an ELF file.

        Raises OSError if it cannot be opened or read (absent, a directory,
        unreadable), BadObjectError if it is a damaged ELF file.
        """
        if path in self._elf:
            found = self._elf[path]
        else:
            try:
                found = read_elf(path)
            except (OSError, BadObjectError) as exc:
                found = exc
            self._elf[path] = found
        if isinstance(found, (OSError, BadObjectError)):
            raise found
        return found

    def isdir(self, path: str) -> bool:
        found = self._isdir.get(path)
        if found is None:
            found = self._isdir[path] = os.path.isdir(path)
        return found

    def readlink(self, path: str) -> str | None:
        """The target of ``path`` if it is a symlink, else None (also if absent)."""
        if path in self._links:
            return self._links[path]
        try:
            target: str | None = os.readlink(path)
        except OSError:
            target = None
        self._links[path] = target
        return target

    def chain(self, path: str) -> tuple[list[str], str]:
        """Resolve absolute ``path`` component by component as the kernel does.

        Returns the absolute paths of every symlink met on the way (in the
        order met; a link whose target holds more links is followed too) and
        the physical path reached at the end. '..' is taken physically, after
        the links before it are followed, never lexically.
        """
        if not path.startswith("/"):
            raise ValueError(f"chain needs an absolute path, got {path!r}")
        todo = path.split("/")[::-1]
        current = "/"
        links: list[str] = []
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                current = os.path.dirname(current)
                continue
            candidate = current + part if current == "/" else f"{current}/{part}"
            target = self.readlink(candidate)
            if target is None:
                current = candidate
                continue
            links.append(candidate)
            if len(links) > MAX_SYMLINKS:
                raise ClosureError(f"{path}: more than {MAX_SYMLINKS} symlinks (a loop?)")
            if target.startswith("/"):
                current = "/"
            todo.extend(target.split("/")[::-1])
        return links, current

    def realpath(self, path: str) -> str:
        return self.chain(path)[1]
