"""What ``beoctl boot build-stage2`` and ``build-stage3`` share: the busybox they
pack, the options naming the kernel, busybox and output, and where the built
image goes (a file, or the master's images, reported in one line either way)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from bootsvc import stage2
from bootsvc.errors import Stage2BuildError, Stage3BuildError
from launcher.cli.context import CliContext
from launcher.state.bootimages import store_image
from launcher.state.db import transaction

Stage = Literal["stage2", "stage3"]
_LABEL: dict[Stage, str] = {"stage2": "stage 2", "stage3": "stage 3"}
F = TypeVar("F", bound=Callable[..., Any])


def progress(command: str) -> Callable[[str], None]:
    """What a build says as it goes: each line on stderr, after ``COMMAND: ``."""

    def say(line: str) -> None:
        click.echo(f"{command}: {line}", err=True)

    return say


#: ``--kernel``: the imported kernel image whose modules a build takes.
kernel_option = click.option(
    "--kernel", "kernel_name", default=None, help="Kernel image [default: the newest]."
)


def output_options(stage: Stage) -> Callable[[F], F]:
    """``--busybox``, ``--name`` and ``--out``, in that order, for a build command."""
    options = (
        click.option(
            "--busybox",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="A static busybox [default: busybox on $PATH].",
        ),
        click.option("--name", default=None, help=f"Image name [default: {stage}-KERNEL-SHA12]."),
        click.option(
            "--out",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Write the image to FILE instead of adding it to the master's images.",
        ),
    )

    def apply(command: F) -> F:
        for option in reversed(options):  # click lists options in decorator order
            command = option(command)
        return command

    return apply


def find_busybox(given: Path | None, error: type[Stage2BuildError | Stage3BuildError]) -> Path:
    """``given``, else busybox on $PATH. Raises ``error`` saying what to install."""
    found = given or (Path(p) if (p := shutil.which("busybox")) else None)
    if found is None:
        raise error("busybox", "(not found)", "apt-get install busybox-static")
    return found


def store_or_write(
    cli: CliContext,
    image: bytes,
    *,
    stage: Stage,
    release: str,
    name: str | None,
    built_from: dict[str, Any],
    out: Path | None,
) -> None:
    """Write ``image`` to ``out``, or (``out`` None) add it to the master's images
    as ``name`` (default ``STAGE-RELEASE-SHA12``); say which in one line."""
    if out is not None:
        sha = stage2.write(out, image)
        click.echo(f"wrote {out}: {len(image)} bytes, sha256 {sha}")
        return
    with transaction(cli.engine()) as session:
        digest = hashlib.sha256(image).hexdigest()
        row = store_image(
            session,
            cli.config().state_dir,
            image,
            kind=stage,
            name=name or f"{stage}-{release}-{digest[:12]}",
            built_from=built_from,
        )
        click.echo(f"{_LABEL[stage]} image {row.name}: {row.size} bytes, sha256 {row.sha256}")
