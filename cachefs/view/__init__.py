"""The job's environment root: a manifest's paths backed by verified cache objects.

:mod:`cachefs.view.tree` is the FUSE-free core; :mod:`cachefs.view.fuse` mounts
it read-only with FUSE; :mod:`cachefs.view.farm` builds it as a hardlink farm on
hosts without FUSE.
"""
