"""The control protocol's wire format, sans-IO: bytes in, messages out.

One JSON value per line, UTF-8, ``\\n``-terminated, in both directions
(JSON-RPC 2.0, https://www.jsonrpc.org/specification)::

    client -> ipcd   {"jsonrpc":"2.0","id":1,"method":"ping"}\\n
    ipcd -> client   {"jsonrpc":"2.0","id":1,"result":{"pong":true,...}}\\n

    client -> ipcd   [{"jsonrpc":"2.0","id":1,...},{"jsonrpc":"2.0","method":...}]\\n
    ipcd -> client   [{"jsonrpc":"2.0","id":1,...}]\\n        (no reply to notifications)

    client -> ipcd   kv.get greeting\\n                       (a plain command, for socat)
    ipcd -> client   {"jsonrpc":"2.0","id":null,"result":{...}}\\n

    ipcd -> client   {"jsonrpc":"2.0","method":"logs.entry","params":{...}}\\n
                     (a stream's notifications, after the subscribing call's result)

`LineFramer` cuts a byte stream into lines and enforces the line limit;
`parse_line` turns one line into a `Request`, an `Invalid` (answered with
its error) or a batch of those; `encode` and the reply helpers build what
goes back.  The module never sees a socket, a thread or a clock: `server`
and `client` do the I/O.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NamedTuple

from ipcd.errors import InvalidRequest, LimitReached, ParseError, RpcError
from ipcd.wire import shellwords

JSONRPC = "2.0"


class LineTooLong(LimitReached):
    """A line over the limit; `lines` holds the complete lines that came before it."""

    def __init__(self, max_line_bytes: int, lines: list[bytes] | None = None) -> None:
        super().__init__(f"request line longer than {max_line_bytes} bytes", "max_request_bytes", max_line_bytes)
        self.lines = lines or []


class LineFramer:
    """Cuts a byte stream into lines; a trailing ``\\r`` is dropped (socat crlf).

    A line may hold at most `max_line_bytes` bytes, its newline (`\n` or
    `\r\n`) not counted.  Past that, `feed` raises `LineTooLong`, whether the
    newline came or not: the peer is not allowed to make ipcd buffer more.
    The complete lines before the long one ride on the exception, so that
    they are still answered.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        if not self._buf and data and data.find(b"\n") == len(data) - 1:  # the common read: one whole line
            line = data[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > self.max_line_bytes:
                raise LineTooLong(self.max_line_bytes)
            return [line]
        lines: list[bytes] = []
        start = len(self._buf)
        self._buf += data
        buf = self._buf
        begin = 0
        limit = self.max_line_bytes
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[begin:nl])
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > limit:
                raise LineTooLong(limit, lines)
            lines.append(line)
            begin = start = nl + 1
        if begin:
            del buf[:begin]
        # An unfinished line may still end in the "\r" of a CRLF: one byte of grace.
        if len(buf) > limit + (buf.endswith(b"\r")):
            raise LineTooLong(limit, lines)
        return lines


class Request(NamedTuple):
    """A call.  `notification` calls get no reply; `plain` ones came as text.

    A NamedTuple: made for every call, it costs a tuple, not a frozen class.
    """

    method: str
    params: dict[str, Any] | list[Any] | None = None
    id: Any = None
    notification: bool = False
    plain: bool = False
    # For a plain command, the args as typed, before JSON decoding: a string
    # param given `007` gets "007", not the number 7.
    raw_args: tuple[str, ...] = ()


class Invalid(NamedTuple):
    """A message that could not become a request; it is answered with `error`."""

    error: RpcError
    id: Any = None


Message = Request | Invalid
Parsed = Message | list[Message]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


# Made once: json.loads/dumps with options build a new decoder/encoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
MAX_DEPTH = 64  # DESIGN.md "Limits": JSON nesting depth


_scan = _DECODER.scan_once  # type: ignore[attr-defined]
# The C encoder itself, as json.dumps uses it, without the Python layers around it (no
# circular check: what is encoded came from JSON or from ipcd's own results).
_c_encode = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
)


def loads(data: bytes | str) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no float overflow to inf."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    try:
        value, end = _scan(data, 0)  # the common case: a value with nothing around it
        if end == len(data):
            return value
    except StopIteration:
        pass
    return _DECODER.decode(data)  # whitespace around it, or the error with its position


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 (not \\u-escaped), no NaN."""
    if _c_encode is None:  # an interpreter without the C accelerator
        return _ENCODER.encode(value)
    return "".join(_c_encode(value, 0))


# A JSON string, escapes and all (the unrolled form: no alternation per character; possessive, so
# that the engine keeps no backtracking record per escape: 150 bytes each, a MiB line's worth of them).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"')
# Everything but the brackets, deleted; what is left: "(" for [ and {, ")" for ] and }.
_BRACKETS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[{]}"))


def too_deep(text: bytes | str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON `text` (valid JSON) nests more than `limit` arrays and objects deep.

    Read from the text, never from the objects it decodes to (a walk over
    `[{},{},...]` costs a second per MiB): strings out, brackets kept, then
    the innermost pairs taken out once per level, each pass a `bytes.replace`.
    At most `limit` passes over at most the text's length.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case: too few brackets to be that deep
    if b'"' in data:
        data = _JSON_STRING.sub(b"", data)
    left = data.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(limit):
        if not left:
            return False
        shorter = left.replace(b"()", b"")
        if len(shorter) == len(left):
            break  # not balanced: not valid JSON, which the caller has already read
        left = shorter
    return bool(left)


def parse_line(line: bytes) -> Parsed | None:
    """One line in; None for a blank line, else what to dispatch or answer."""
    stripped = line.strip()
    if not stripped:
        return None
    if stripped[:1] not in (b"{", b"["):
        return _parse_plain(stripped)
    try:
        value = loads(stripped)
    except RecursionError:
        return Invalid(ParseError("parse error: nesting too deep"))
    except UnicodeDecodeError:
        return Invalid(ParseError("parse error: not UTF-8"))
    except ValueError as e:
        return Invalid(ParseError(f"parse error: {_short(e)}"))
    if len(stripped) > 2 * MAX_DEPTH and too_deep(stripped):  # shorter, it cannot nest that deep
        return Invalid(ParseError(f"parse error: nested more than {MAX_DEPTH} deep"))
    if b"\\" in stripped and _SURROGATE_ESCAPE.search(stripped) and has_lone_surrogate(value):
        # "\ud800" is valid JSON syntax but not Unicode: no UTF-8 form, no SQLite text.
        return Invalid(ParseError("parse error: a lone surrogate (\\ud800-\\udfff) is not Unicode"))
    if isinstance(value, list):
        if not value:
            return Invalid(InvalidRequest("invalid request: empty batch"))
        return [to_message(item) for item in value]
    return to_message(value)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# Each argument of a plain command is tried as JSON, and a failed try costs an exception: the
# words are bounded, so that a MiB of `a a a ...` costs milliseconds, not seconds.  No method
# takes more than a dozen params; a plain `subscribe` takes its channels as the rest.
MAX_PLAIN_ARGS = 1024


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in a decoded JSON value (keys included) has no UTF-8 form."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "..."


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


_new = tuple.__new__  # Request(...) goes through a Python-level __new__: made for every call, skipped


def to_message(obj: Any) -> Message:
    """Validate one decoded request object (JSON-RPC 2.0 §4)."""
    if type(obj) is dict and obj.get("jsonrpc") == JSONRPC:  # the common case first, checked as below
        method, params, req_id = obj.get("method"), obj.get("params"), obj.get("id")
        if (
            type(method) is str
            and (type(params) in (dict, list) or ("params" not in obj))
            and (req_id is None or type(req_id) in (int, str))
        ):
            return _new(Request, (method, params, req_id, "id" not in obj, False, ()))
    if not isinstance(obj, dict):
        return Invalid(InvalidRequest("invalid request: not an object"))
    has_id = "id" in obj
    req_id = obj.get("id")
    if has_id and not _valid_id(req_id):
        return Invalid(InvalidRequest("invalid request: id must be a string, a number or null"))
    if obj.get("jsonrpc") != JSONRPC:
        return Invalid(InvalidRequest('invalid request: "jsonrpc" must be "2.0"'), req_id)
    method = obj.get("method")
    if not isinstance(method, str):
        return Invalid(InvalidRequest('invalid request: "method" must be a string'), req_id)
    params = obj.get("params")
    if "params" in obj and not isinstance(params, (dict, list)):
        return Invalid(InvalidRequest('invalid request: "params" must be an object or an array'), req_id)
    return Request(method, params, req_id, not has_id)


def _parse_plain(line: bytes) -> Message:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Invalid(ParseError("parse error: not UTF-8"))
    try:
        words = shellwords.split(text, MAX_PLAIN_ARGS + 2)  # the method, the arguments, one too many
    except ValueError as e:
        return Invalid(ParseError(f"parse error: {e}"))
    if not words:
        return Invalid(ParseError("parse error: empty command"))
    if len(words) > MAX_PLAIN_ARGS + 1:
        return Invalid(ParseError(f"parse error: a plain command takes at most {MAX_PLAIN_ARGS} arguments; send JSON"))
    method, args = words[0], words[1:]
    values = []
    for word in args:
        value = _plain_arg(word)
        if isinstance(value, (list, dict)) and too_deep(word):
            return Invalid(ParseError(f"parse error: {method} argument nested more than {MAX_DEPTH} deep"))
        if "\\" in word and has_lone_surrogate(value):
            return Invalid(ParseError(f"parse error: {method} argument has a lone surrogate (\\ud800-\\udfff)"))
        values.append(value)
    return Request(method, values, None, plain=True, raw_args=tuple(args))


def _plain_arg(word: str) -> Any:
    # Each ARG is read as JSON when it is valid JSON, else taken as a string:
    # `kv.set n 42` stores a number, `kv.set name alice` a string.  The same
    # limits as a JSON line's hold: nesting, and no lone surrogates.
    try:
        return loads(word)
    except (ValueError, RecursionError):
        return word


def encode(message: Any) -> bytes:
    """One message (or batch) as one line."""
    return to_bytes(_ENCODER.encode(message))


class Raw:
    """JSON text to go out as it is: a value kept as text (a kv value) is not parsed to be sent."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text!r})"


def result_line(req_id: Any, value: Any) -> str:
    """A result reply as one line of text (no newline), a `Raw` value spliced in.

    Only the id and the result go through the encoder: the envelope around
    them is text (the same bytes `dumps` of the whole reply gives, 0.7 us
    sooner, since no dict is made and encoded for it).
    """
    rid = str(req_id) if type(req_id) is int else dumps(req_id)  # the common id, without the encoder
    body = value.text if isinstance(value, Raw) else dumps(value)
    return f'{{"jsonrpc":"2.0","id":{rid},"result":{body}}}'


def notification_line(method: str, params: Any) -> str:
    """A notification as one line of text (no newline), `Raw` params spliced in."""
    body = params.text if isinstance(params, Raw) else dumps(params)
    return f'{{"jsonrpc":"2.0","method":{dumps(method)},"params":{body}}}'


def to_bytes(line: str) -> bytes:
    """A line of text out, newline added; a lone surrogate goes escaped, as it came."""
    try:
        return line.encode() + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800" in a client's JSON) has no UTF-8 form: send it escaped, as it came.
        return _ASCII_ENCODER.encode(json.loads(line)).encode() + b"\n"


def result(req_id: Any, value: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": req_id, "result": value}


def error(req_id: Any, err: RpcError) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": req_id, "error": err.to_json()}


def notification(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "method": method, "params": params}


def request(method: str, params: Any = None, req_id: Any = None) -> dict[str, Any]:
    """A request object; `req_id=None` makes a notification."""
    msg: dict[str, Any] = {"jsonrpc": JSONRPC, "method": method}
    if params is not None:
        msg["params"] = params
    if req_id is not None:
        msg["id"] = req_id
    return msg
