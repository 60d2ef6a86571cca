"""The `ipcd` process: its command line, the order things start and stop
in, signals, health, systemd's side (activation, notify, watchdog, units)
and the socket files it binds.  Everything else is wired together here.
"""
