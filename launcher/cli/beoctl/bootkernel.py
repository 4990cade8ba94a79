"""The kernel a ``beoctl boot build-stage*`` command builds for (shared by both)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from bootsvc.errors import Stage2BuildError, Stage3BuildError
from launcher.cli.context import CliContext
from launcher.state.bootimages import kernel_modules_dir
from launcher.state.db import transaction
from launcher.state.models import BootImage


def kernel_modules(
    cli: CliContext, name: str | None, error: type[Stage2BuildError | Stage3BuildError]
) -> tuple[str, Path]:
    """(name, module tree) of kernel image ``name``, or of the newest kernel.

    Raises ``error`` naming the kernel and saying to import one when there is none.
    """
    with transaction(cli.engine(), readonly=True) as session:
        query = select(BootImage).where(BootImage.kind == "kernel")
        if name is not None:
            query = query.where(BootImage.name == name)
        kernel = session.scalars(query.order_by(BootImage.created_at.desc())).first()
        if kernel is None:
            what = f"no kernel image named {name!r}" if name else "no kernel image yet"
            raise error(
                "kernel", name or "(newest)", f"{what}; run beoctl boot import-kernel DEB first"
            )
        return kernel.name, kernel_modules_dir(cli.config().state_dir, kernel)
