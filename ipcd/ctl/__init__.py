"""`ipcctl`: commands, rendering, and `doctor`.

`cli` is the root group and adds every command; the commands are in `admin`
(status, ping, call, shutdown, reload, clients), `logs` (logs, send), `ipc`
(kv, publish, subscribe) and `doctor` (with its checks in `checkup`,
`checks_sockets`, `checks_service`); they share `common` (options, output)
and `errors` (exit codes).  Talks to ipcd only through `ipcd.client`, as any
other program would.
"""
