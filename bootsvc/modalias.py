"""Which kernel modules drive a node's NICs, and in which order to load them.

The answer comes from the kernel's own ``modules.alias`` and ``modules.dep``
(written by ``depmod``), the way ``modprobe`` finds it: every ``alias PATTERN
MODULE`` line whose shell glob matches the device's modalias names a module,
and ``modules.dep`` lists, for each module, the modules it needs.

Virtio NICs need two steps: the PCI modalias
(``pci:v00001AF4d00001041...``) only matches the transport, ``virtio_pci``;
the network driver ``virtio_net`` matches the modalias of the virtio device
that ``virtio_pci`` then creates (``virtio:d00000001v00001AF4``). That second
modalias is derived here from the PCI IDs, as ``virtio_pci`` does it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from bootsvc.errors import ModuleIndexError

_PCI = re.compile(
    r"pci:v(?P<v>[0-9A-F]{8})d(?P<d>[0-9A-F]{8})sv(?P<sv>[0-9A-F]{8})"
    r"sd(?P<sd>[0-9A-F]{8})bc(?P<bc>[0-9A-F]{2})sc(?P<sc>[0-9A-F]{2})i(?P<i>[0-9A-F]{2})"
)
_VIRTIO_PCI_VENDOR = 0x1AF4
# Virtio PCI device IDs: 0x1000-0x103F transitional (virtio type in the
# subsystem device ID), 0x1040-0x107F modern (type = device ID - 0x1040).
_VIRTIO_FIRST, _VIRTIO_MODERN, _VIRTIO_LAST = 0x1000, 0x1040, 0x107F
_NETWORK_CLASS = 0x02


def module_name(name: str) -> str:
    """The canonical module name: ``-`` and ``_`` are the same to the kernel."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class PciModalias:
    """The IDs in a PCI modalias (all numbers as the kernel prints them, in hex)."""

    text: str
    vendor: int
    device: int
    subvendor: int
    subdevice: int
    base_class: int

    @classmethod
    def parse(cls, text: str) -> PciModalias:
        """Parse ``text`` (one line of ``/sys/bus/pci/devices/*/modalias``).

        Raises :class:`ModuleIndexError` when it is not a PCI modalias.
        """
        text = text.strip()
        found = _PCI.fullmatch(text)
        if found is None:
            raise ModuleIndexError(
                "modalias", text, "not a PCI modalias (pci:v...d...sv...sd...bc...sc...i..)"
            )
        return cls(
            text=text,
            vendor=int(found["v"], 16),
            device=int(found["d"], 16),
            subvendor=int(found["sv"], 16),
            subdevice=int(found["sd"], 16),
            base_class=int(found["bc"], 16),
        )

    @property
    def is_network(self) -> bool:
        """True for PCI class 0x02 (network controller)."""
        return self.base_class == _NETWORK_CLASS

    def virtio_modalias(self) -> str | None:
        """The modalias of the virtio device behind this PCI device, or None if it is not virtio."""
        if self.vendor != _VIRTIO_PCI_VENDOR or not _VIRTIO_FIRST <= self.device <= _VIRTIO_LAST:
            return None
        kind = self.subdevice if self.device < _VIRTIO_MODERN else self.device - _VIRTIO_MODERN
        return f"virtio:d{kind:08X}v{self.subvendor:08X}"


@dataclass(frozen=True)
class ModuleIndex:
    """A kernel's ``modules.alias`` and ``modules.dep``, parsed.

    ``aliases`` keeps the file's order; ``deps`` maps a module name to its file
    (relative to ``/lib/modules/RELEASE``) and the files it depends on, as depmod
    wrote them (the full closure, the module loaded last first).
    """

    aliases: tuple[tuple[str, str], ...]
    paths: dict[str, str]
    deps: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, alias_text: str, dep_text: str) -> ModuleIndex:
        """Parse the text of ``modules.alias`` and ``modules.dep``.

        Raises :class:`ModuleIndexError` on a line of neither format.
        """
        aliases: list[tuple[str, str]] = []
        for number, line in enumerate(alias_text.splitlines(), 1):
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if len(words) != 3 or words[0] != "alias":
                raise ModuleIndexError(
                    "modules.alias", line, f"line {number} is not 'alias PATTERN MODULE'"
                )
            aliases.append((words[1], module_name(words[2])))
        paths: dict[str, str] = {}
        deps: dict[str, tuple[str, ...]] = {}
        for number, line in enumerate(dep_text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            path, colon, rest = line.partition(":")
            if not colon or not path.strip():
                raise ModuleIndexError(
                    "modules.dep", line, f"line {number} is not 'FILE: DEPENDENCIES'"
                )
            name = _name_of(path.strip())
            paths[name] = path.strip()
            deps[name] = tuple(rest.split())
        return cls(aliases=tuple(aliases), paths=paths, deps=deps)

    @classmethod
    def from_dir(cls, directory: Path) -> ModuleIndex:
        """Read ``modules.alias`` and ``modules.dep`` from ``directory`` (``/lib/modules/RELEASE``).

        Raises :class:`ModuleIndexError` when either is missing or unreadable.
        """
        texts: list[str] = []
        for name in ("modules.alias", "modules.dep"):
            try:
                texts.append((directory / name).read_text(encoding="utf-8"))
            except OSError as exc:
                raise ModuleIndexError(
                    name, str(directory / name), f"cannot be read ({exc.strerror})"
                ) from exc
        return cls.parse(texts[0], texts[1])

    def match(self, modalias: str) -> list[str]:
        """Module names whose alias globs match ``modalias``, sorted.

        Globs as modprobe reads them: fnmatch, case-sensitive.
        """
        return sorted(
            {module for pattern, module in self.aliases if fnmatchcase(modalias, pattern)}
        )

    def load_order(self, modules: Iterable[str]) -> list[str]:
        """Files (relative to the module dir) to load for ``modules``, dependencies first.

        Each file appears once; modules are taken in the order given, and each
        one's dependencies in the reverse of depmod's order (depmod lists the
        module loaded last first). Raises :class:`ModuleIndexError` for a module
        ``modules.dep`` does not know (a built-in one has no line there: leave
        it out).
        """
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen:
                return
            if name in chain:
                raise ModuleIndexError(
                    "modules.dep", name, f"dependency loop {' -> '.join((*chain, name))}"
                )
            if name not in self.deps:
                raise ModuleIndexError(
                    "module", name, "not in modules.dep (built in, or another kernel's?)"
                )
            for dep in reversed(self.deps[name]):
                visit(_name_of(dep), (*chain, name))
            seen.add(name)
            order.append(self.paths[name])

        for module in modules:
            visit(module_name(module), ())
        return order

    def nic_modules(self, modaliases: Sequence[str]) -> list[str]:
        """Files to load, dependencies first, for the network controllers among ``modaliases``.

        Non-network PCI devices (class other than 0x02) are ignored; for a virtio
        NIC the virtio driver (``virtio_net``) follows the PCI transport. Modules
        matched by an alias but built into the kernel (no ``modules.dep`` line)
        are skipped, as modprobe does. Raises :class:`ModuleIndexError` for a
        modalias that is not PCI.
        """
        wanted: list[str] = []
        for text in sorted(set(modaliases)):
            device = PciModalias.parse(text)
            if not device.is_network:
                continue
            wanted.extend(self.match(device.text))
            virtio = device.virtio_modalias()
            if virtio is not None:
                wanted.extend(self.match(virtio))
        return self.load_order(name for name in wanted if name in self.deps)


def read_pci_modaliases(sysfs: Path = Path("/sys")) -> list[str]:
    """The modaliases of the PCI devices under ``sysfs`` (``bus/pci/devices/*/modalias``)."""
    found: list[str] = []
    for path in sorted((sysfs / "bus" / "pci" / "devices").glob("*/modalias")):
        try:
            found.append(path.read_text(encoding="ascii").strip())
        except OSError as exc:
            raise ModuleIndexError(
                "modalias", str(path), f"cannot be read ({exc.strerror})"
            ) from exc
    return found


def _name_of(path: str) -> str:
    """``kernel/drivers/net/virtio_net.ko.xz`` -> ``virtio_net``."""
    base = path.rsplit("/", 1)[-1]
    return module_name(base.split(".ko", 1)[0])
