"""The control socket: the stream server, its connections and streams, the
method registry with the core methods, and who may call what (access).

Subsystems (`logs`, `state`) register their methods here; the daemon wires
their services in.  Uses `wire` for the protocol, never the layers above.
"""
