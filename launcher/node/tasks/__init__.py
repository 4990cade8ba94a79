"""Putting a process into an environment root and running it: the agent's task start
(as root, the embedded scheduler) and a Slurm step's own way in (as the job's user).
Runs under ``python -I -S`` at every task start: keep this package import-free."""
