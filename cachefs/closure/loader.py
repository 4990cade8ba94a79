"""An emulated ld.so link map: which objects a dynamically linked program loads.

Like _dl_map_object_deps, dependencies are mapped breadth first from the
executable, the object named by PT_INTERP being in the map from the start. A
name already in the map (by the path it was opened as, a name it was asked for
by, or its DT_SONAME) is not searched again, and a file found under a second
name is the object already loaded (same physical file). So which copy of a
library wins depends on load order, exactly as in ld.so.

Nothing is raised for a library not found: each is recorded in ``missing`` so
that the caller reports every one at once.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

from cachefs.closure.elf import ElfInfo
from cachefs.closure.search import LoadedObject, SearchContext, find
from cachefs.closure.session import Session
from cachefs.errors import BadObjectError


@dataclass
class LinkMap:
    """The objects of one program: ``objects`` in load order (executable first),
    ``needed_by`` object real path -> the real paths of objects that needed it,
    ``missing`` (name, path of the object that needed it)."""

    main: LoadedObject
    context: SearchContext
    objects: list[LoadedObject] = field(default_factory=list)
    needed_by: dict[str, list[str]] = field(default_factory=dict)
    missing: list[tuple[str, str]] = field(default_factory=list)

    def _by_real(self, real: str) -> LoadedObject | None:
        for obj in self.objects:
            if obj.real == real:
                return obj
        return None

    def _note(self, obj: LoadedObject, needer: LoadedObject) -> None:
        who = self.needed_by.setdefault(obj.real, [])
        if needer.real not in who:
            who.append(needer.real)

    def add_object(self, path: str, info: ElfInfo, loader: LoadedObject | None) -> LoadedObject:
        real = self.context.session.realpath(path)
        found = self._by_real(real)
        if found is not None:
            return found
        obj = LoadedObject(path, real, info, loader, os.path.dirname(path) or ".")
        self.objects.append(obj)
        return obj

    def map_needed(self, *start: LoadedObject) -> None:
        """Map the dependencies of ``start`` and of everything they bring, breadth first."""
        queue = deque(start)
        while queue:
            obj = queue.popleft()
            for name in obj.info.needed:
                dep = self._map_one(name, obj)
                if dep is not None:
                    queue.append(dep)

    def dlopen(self, path: str, info: ElfInfo, needer: str | None) -> None:
        """Load ``path`` as the executable's dlopen would, and its dependencies;
        ``needer`` (a real path) is who asked for it, if anyone."""
        known = self._by_real(self.context.session.realpath(path))
        obj = known or self.add_object(path, info, self.main)
        who = self.needed_by.setdefault(obj.real, [])
        if needer is not None and needer not in who:
            who.append(needer)
        if known is None:
            self.map_needed(obj)

    def _map_one(self, name: str, needer: LoadedObject) -> LoadedObject | None:
        """Map one DT_NEEDED entry; returns the object if it is new (its deps to map)."""
        for obj in self.objects:
            if obj.answers_to(name):
                self._note(obj, needer)
                return None
        found = find(name, needer, self.context)
        if found is None:
            self.missing.append((name, needer.path))
            return None
        path, info = found
        real = self.context.session.realpath(path)
        known = self._by_real(real)
        if known is not None:
            known.names.add(name)
            self._note(known, needer)
            return None
        obj = self.add_object(path, info, needer)
        obj.names.add(name)
        self._note(obj, needer)
        return obj


def link_map(
    session: Session,
    program: str,
    info: ElfInfo,
    *,
    library_path: str | None,
    cwd: str,
    preload: str | None = None,
) -> LinkMap:
    """The link map of the ELF executable at absolute ``program``.

    ``preload`` is LD_PRELOAD (names or paths, separated by spaces or colons):
    those objects are loaded after the executable and before its dependencies,
    and one that is not found is left out, as ld.so does (it only warns).
    Raises BadObjectError if its PT_INTERP is absent or not an ELF file of
    the same ABI (the kernel could not start it).
    """
    real = session.realpath(program)
    # The executable's $ORIGIN comes from /proc/self/exe: its physical directory.
    main = LoadedObject(program, real, info, None, os.path.dirname(real))
    config = session.loader_config(info)
    context = SearchContext(session, config, main, library_path, cwd)
    links = LinkMap(main, context, [main])
    links.needed_by[real] = []
    if info.interp is not None:
        interp = info.interp if info.interp.startswith("/") else f"{cwd}/{info.interp}"
        try:
            rtld = session.elf(interp)
        except OSError as exc:
            raise BadObjectError(interp, f"the program interpreter of {program}: {exc}") from exc
        if rtld is None or not info.compatible(rtld):
            raise BadObjectError(interp, f"not an ELF interpreter for {program}")
        obj = links.add_object(interp, rtld, None)
        links._note(obj, main)
    preloaded = []
    for name in (preload or "").replace(":", " ").split():
        found = find(name, main, context)
        if found is not None:
            obj = links.add_object(found[0], found[1], main)
            obj.names.add(name)
            links.needed_by.setdefault(obj.real, [])
            preloaded.append(obj)
    links.map_needed(main, *preloaded)
    return links
