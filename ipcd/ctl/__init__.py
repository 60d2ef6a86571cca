"""`ipcctl`: commands, rendering, and `doctor`.

Talks to ipcd only through `ipcd.client`, as any other program would.
"""
