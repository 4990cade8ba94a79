"""A job's environment root on a node: building it from the verified cache, where it
lives, what goes in it (the node's files, the mount points for site binds, late files)
and keeping it for the next job; all done by the agent, as root, before any task runs."""
