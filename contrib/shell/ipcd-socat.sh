#!/bin/sh
# Talk to ipcd's control socket with socat: plain commands and JSON-RPC lines.
#
#   ipcd-socat.sh [SOCKET]      (default: $IPCD_SOCKET, else /run/ipcd/ipcd.sock)
#
# A line that does not start with "{" or "[" is a plain command, METHOD ARG...
# (each ARG is JSON if it parses, else a string); the reply is one JSON line.
# Needs socat(1); jq(1) makes the replies easier to read but is not needed.
set -eu

sock=${1:-${IPCD_SOCKET:-/run/ipcd/ipcd.sock}}
if [ ! -S "$sock" ]; then
    echo "ipcd-socat.sh: no socket at $sock: is ipcd running? (or pass the path)" >&2
    exit 3
fi

# One request per connection: socat sends the line, shuts down its write
# side, and prints what ipcd answers until ipcd closes (-t: wait at most 5 s).
call() {
    printf '%s\n' "$1" | socat -t 5 - "UNIX-CONNECT:$sock"
}

call 'ping'
call 'status'
call 'kv.set greeting "hello from socat"'
call '{"jsonrpc":"2.0","id":1,"method":"kv.get","params":{"key":"greeting"}}'

# Several requests on one connection are answered in order.
printf '%s\n' 'kv.set counter 41' 'kv.get counter' | socat -t 5 - "UNIX-CONNECT:$sock"
