"""ipcd: a Unix-domain IPC daemon for Linux, with first-class systemd integration."""

__version__ = "0.1.0"
