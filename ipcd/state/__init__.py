"""Shared state between local processes: key/value with versions and TTLs,
message channels, and their methods on the control socket.
"""
