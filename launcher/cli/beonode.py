"""``beonode``: the node side (the agent that runs in the stage-3 root)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from launcher.cli.entry import run
from launcher.cli.output import emit
from launcher.node.hardware import hardware_report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Node agent commands."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as sent to the master.")
def hwreport(as_json: bool) -> None:
    """Print this machine's hardware report (what the agent sends at registration)."""
    report = hardware_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    mem_gib = report["memory_bytes"] / 2**30
    click.echo(
        f"{report['hostname']}: {report['cpus_logical']} CPUs, {mem_gib:.1f} GiB, "
        f"{report['machine']}, Linux {report['kernel']}"
    )
    emit(report["nics"], ("name", "mac", "ipv4", "up", "speed_mbps", "mtu", "driver"), "table")


def main(argv: Sequence[str] | None = None) -> int:
    return run(cli, argv, "beonode")
