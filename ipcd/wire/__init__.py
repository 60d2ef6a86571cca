"""Sans-IO wire formats: bytes in, values out.

`jsonrpc` frames and parses the control protocol, `logparse` turns one log
datagram into an entry, `priority` is the one table of syslog severities and
facilities.  Nothing here sees a socket, a thread, a database
or a clock (a test checks the imports); the servers and the client do the I/O.
"""
