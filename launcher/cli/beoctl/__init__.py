"""``beoctl``: the administrator's command (init, database, nodes)."""

from __future__ import annotations

from collections.abc import Sequence

from launcher.cli.beoctl import (
    boot,
    closure,
    cluster,
    db,
    init,
    kill,
    master,
    nfs,
    node,
    slurm,
    store,
)
from launcher.cli.context import script_group
from launcher.cli.entry import run

cli = script_group(
    "Administer a Beolaunch cluster: state, database, nodes, closures, store, cluster, "
    "master, Slurm, boot images, NFS."
)


cli.add_command(init.init)
cli.add_command(closure.closure)
cli.add_command(db.db)
cli.add_command(node.node)
cli.add_command(store.store)
cli.add_command(cluster.cluster)
cli.add_command(master.master)
cli.add_command(kill.kill)
cli.add_command(slurm.slurm)
cli.add_command(boot.boot)
cli.add_command(nfs.nfs)


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beoctl")
