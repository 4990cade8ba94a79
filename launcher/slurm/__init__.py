"""Slurm for Beolaunch: slurm.conf generation, the prolog/epilog hooks and the
scheduler adapter. See docs/slurm.md. The virtual cluster's Slurm daemons are
:mod:`launcher.cluster.slurmdaemons`.

Modules: :mod:`~launcher.slurm.settings` (the ``[slurm]`` config table),
:mod:`~launcher.slurm.paths` (files under ``STATE/slurm``),
:mod:`~launcher.slurm.conf` (slurm.conf text, pure),
:mod:`~launcher.slurm.adapter` (one Scheduler interface, two backends),
:mod:`~launcher.slurm.parse` and :mod:`~launcher.slurm.types` (what they answer).
"""
