"""The Beolaunch execution system: state, master, node agent, Slurm glue and the CLI."""
