"""A temporary file tree with a fake ld.so, default directory and ld.so.cache, in which
the resolver's search order can be checked without a compiler."""

from __future__ import annotations

import os
from pathlib import Path

from cachefs.closure import Closure, LoaderConfig, Resolver
from tests.unit.cachefs.closure.cachebuild import X86_64, build_cache
from tests.unit.cachefs.closure.elfbuild import write_elf


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rtld = write_elf(root / "rtld/ld-test.so.2", soname="ld-test.so.2")
        self.system = root / "sys"
        self.system.mkdir()
        self.config = LoaderConfig(
            system_dirs=(str(self.system),),
            hwcaps=("x86-64-v3", "x86-64-v2"),
            legacy_subdirs=(),
            lib="lib64t",
            platform="x86_64",
        )
        self.cache_entries: list[tuple[int, str, str, int]] = []

    def lib(self, rel: str, soname: str | None = None, **kwargs: object) -> Path:
        path = self.root / rel
        return write_elf(path, soname=soname or path.name, **kwargs)

    def prog(self, rel: str, **kwargs: object) -> Path:
        path = write_elf(self.root / rel, elf_type=3, interp=str(self.rtld), **kwargs)
        path.chmod(0o755)
        return path

    def cache(self, name: str, path: Path) -> None:
        self.cache_entries.append((X86_64, name, str(path), 0))

    def resolve(
        self, program: str | Path, env: dict[str, str] | None = None, **kwargs: object
    ) -> Closure:
        cache_file = self.root / "ld.so.cache"
        cache_file.write_bytes(build_cache(self.cache_entries))
        resolver = Resolver(ld_so_cache=str(cache_file), config=self.config)
        return resolver.resolve(
            str(program),
            env=env if env is not None else {"PATH": str(self.root / "bin")},
            cwd=str(kwargs.pop("cwd", self.root)),
            **kwargs,  # type: ignore[arg-type]
        )


def files(closure: Closure) -> set[str]:
    """The regular files of a closure."""
    return {p for p in closure.paths if os.path.isfile(p) and not os.path.islink(p)}
