"""Exact closures, a content-addressed store, a verified node cache and job environment roots.

A library: imports nothing from launcher or bootsvc.
"""
