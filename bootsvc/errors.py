"""Errors raised by the boot services package.

Every error bootsvc raises derives from :class:`BootsvcError`; the console
scripts turn it into ``prog: message`` and its exit code in one place
(:mod:`launcher.cli.entry`), as they do launcher's own errors. bootsvc imports
nothing from launcher: this module is its only error vocabulary. Subclasses
carry the bad input as attributes so callers can act on it without parsing
messages.
"""

from __future__ import annotations

from pathlib import Path


class BootsvcError(Exception):
    """Base of every error the boot services report to a user."""

    exit_code = 1


# --- the [boot] table (bootsvc.settings) ---


class BootSettingsError(BootsvcError):
    """A bad value in the ``[boot]`` table: ``key`` is dotted (``boot.pool_last``),
    ``problem`` says what was expected. The config reader adds the file."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"key '{key}': {problem}")


# --- the dnsmasq configuration and its supervisor (bootsvc.dhcp, bootsvc.dnsmasq) ---


class DhcpConfigError(BootsvcError):
    """The DHCP input ``what`` (of node ``node``, or of the settings) is ``value``: bad."""

    def __init__(self, node: str | None, what: str, value: object, problem: str) -> None:
        self.node = node
        self.what = what
        self.value = value
        self.problem = problem
        owner = f"node {node}" if node is not None else "DHCP settings"
        super().__init__(f"{owner}: {what} {value!r}: {problem}")


class DnsmasqError(BootsvcError):
    """dnsmasq (``command``) could not be started or reloaded: ``problem``."""

    def __init__(self, command: str, problem: str) -> None:
        self.command = command
        self.problem = problem
        super().__init__(f"{command}: {problem}")


# --- TFTP (bootsvc.tftp) ---


class TftpPathRefusedError(BootsvcError):
    """The TFTP name ``name`` is refused under the root ``root``: ``problem``."""

    def __init__(self, root: Path, name: str, problem: str) -> None:
        self.root = root
        self.name = name
        self.problem = problem
        super().__init__(
            f"TFTP request {name!r}: {problem}; only regular files under {root} are served"
        )


class TftpServiceError(BootsvcError):
    """The TFTP server on ``address``:``port`` could not be started: ``problem``."""

    def __init__(self, address: str, port: int, problem: str) -> None:
        self.address = address
        self.port = port
        self.problem = problem
        super().__init__(
            f"TFTP server on {address}:{port}: {problem}; check the address and that the "
            "port is free (port 69 needs root or CAP_NET_BIND_SERVICE)"
        )


# --- NIC modules (bootsvc.modalias) and the stage-2 initramfs (bootsvc.stage2) ---


class ModuleIndexError(BootsvcError):
    """The kernel module input ``what`` (``value``) cannot be used: ``problem``."""

    def __init__(self, what: str, value: str, problem: str) -> None:
        self.what = what
        self.value = value
        self.problem = problem
        super().__init__(f"{what} {value!r}: {problem}")


class Stage2BuildError(BootsvcError):
    """The stage-2 initramfs input ``what`` (``value``) cannot be used: ``problem``."""

    def __init__(self, what: str, value: str, problem: str) -> None:
        self.what = what
        self.value = value
        self.problem = problem
        super().__init__(f"{what} {value!r}: {problem}")


# --- router advertisements (bootsvc.ra) ---


class RouterAdvertError(BootsvcError):
    """Router advertisements cannot be sent on ``interface``: ``problem``."""

    def __init__(self, interface: str, problem: str) -> None:
        self.interface = interface
        self.problem = problem
        super().__init__(f"router advertisements on {interface}: {problem}")


# --- the stage-3 image (bootsvc.stage3) ---


class Stage3BuildError(BootsvcError):
    """The stage-3 image input ``what`` (``value``) cannot be used: ``problem``."""

    def __init__(self, what: str, value: str, problem: str) -> None:
        self.what = what
        self.value = value
        self.problem = problem
        super().__init__(f"stage 3: {what} {value!r}: {problem}")


# --- boot image files (bootsvc.images) and kernel import (bootsvc.kernel) ---


class BootImageError(BootsvcError):
    """Boot image ``image`` (a name, sha256 or file) cannot be stored, chosen or removed:
    ``problem`` (what to do included)."""

    def __init__(self, image: str, problem: str) -> None:
        self.image = image
        self.problem = problem
        super().__init__(f"boot image {image}: {problem}")


class KernelImportError(BootsvcError):
    """The kernel at ``source`` (a linux-image .deb or a directory) cannot be imported:
    ``problem``. Nothing of it was kept."""

    def __init__(self, source: Path, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"kernel import from {source}: {problem}")
