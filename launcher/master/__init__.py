"""The master daemon: control, object, log and user services, and the embedded scheduler."""
