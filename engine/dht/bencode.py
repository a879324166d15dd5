"""Strict, bounded bencode (BEP 3) for KRPC messages.

`decode` accepts only what a DHT message can be: at most 4 KiB of input,
nesting at most 8 deep, at most 512 items in one list or dictionary, integers
that fit in 64 bits, byte strings only (nothing is turned into `str`). It
rejects leading zeros (``i03e``, ``03:abc``), negative zero, empty integers,
duplicate dictionary keys, non-string keys and trailing bytes. Dictionary
keys need not be sorted (some clients do not sort them; with duplicates
rejected the order changes nothing). Any malformed input raises
`BencodeError` and nothing else; decoding is linear in the input size.

`encode` writes canonical bencode (keys sorted by their raw bytes) from
bytes, int, list/tuple and dict with bytes keys, and raises `BencodeError`
for anything else (str, bool, float, None, nesting deeper than 8).
"""

from __future__ import annotations

__all__ = ["BencodeError", "decode", "encode", "looks_like_krpc", "MAX_INPUT", "MAX_DEPTH", "MAX_ITEMS"]

MAX_INPUT = 4096
MAX_DEPTH = 8
MAX_ITEMS = 512
INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1
_MAX_INT_DIGITS = 20          # '-' plus 19 digits covers the 64-bit range
_MAX_LEN_DIGITS = len(str(MAX_INPUT))

_I, _L, _D, _E, _COLON = 0x69, 0x6C, 0x64, 0x65, 0x3A
_ZERO, _NINE, _MINUS = 0x30, 0x39, 0x2D


class BencodeError(ValueError):
    """The input is not bencode this decoder accepts (or cannot be encoded)."""


def decode(data: bytes, *, max_size: int = MAX_INPUT) -> object:
    """The value encoded in `data` (bytes, int, list or dict with bytes keys)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BencodeError("bencode input must be bytes")
    data = bytes(data)
    if not data:
        raise BencodeError("empty input")
    if len(data) > max_size:
        raise BencodeError(f"input longer than {max_size} bytes")
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value")
    return value


def _digits(data: bytes, start: int, end: int) -> int:
    """The non-negative decimal number in data[start:end], no leading zeros."""
    if end <= start:
        raise BencodeError("missing number")
    if data[start] == _ZERO and end - start > 1:
        raise BencodeError("leading zero")
    for i in range(start, end):
        if not _ZERO <= data[i] <= _NINE:
            raise BencodeError("not a digit")
    return int(data[start:end])


def _decode(data: bytes, i: int, depth: int) -> tuple[object, int]:
    n = len(data)
    if i >= n:
        raise BencodeError("truncated input")
    c = data[i]
    if _ZERO <= c <= _NINE:
        j = data.find(b":", i, i + _MAX_LEN_DIGITS + 1)
        if j < 0:
            raise BencodeError("bad string length")
        length = _digits(data, i, j)
        start = j + 1
        if length > n - start:
            raise BencodeError("string runs past the end")
        return data[start:start + length], start + length
    if c == _I:
        j = data.find(b"e", i + 1, i + 2 + _MAX_INT_DIGITS)
        if j < 0:
            raise BencodeError("bad integer")
        neg = data[i + 1] == _MINUS
        value = _digits(data, i + 2 if neg else i + 1, j)
        if neg:
            if value == 0:
                raise BencodeError("negative zero")
            value = -value
        if not INT_MIN <= value <= INT_MAX:
            raise BencodeError("integer out of range")
        return value, j + 1
    if c == _L or c == _D:
        depth += 1
        if depth > MAX_DEPTH:
            raise BencodeError("nested too deeply")
        i += 1
        if c == _L:
            items: list = []
            while True:
                if i >= n:
                    raise BencodeError("unterminated list")
                if data[i] == _E:
                    return items, i + 1
                if len(items) >= MAX_ITEMS:
                    raise BencodeError("list too long")
                value, i = _decode(data, i, depth)
                items.append(value)
        d: dict = {}
        while True:
            if i >= n:
                raise BencodeError("unterminated dictionary")
            if data[i] == _E:
                return d, i + 1
            if len(d) >= MAX_ITEMS:
                raise BencodeError("dictionary too long")
            if not _ZERO <= data[i] <= _NINE:
                raise BencodeError("dictionary key is not a string")
            key, i = _decode(data, i, depth)
            if key in d:
                raise BencodeError("duplicate dictionary key")
            d[key], i = _decode(data, i, depth)
    raise BencodeError("unexpected byte")


def encode(value: object) -> bytes:
    """Canonical bencode of `value` (bytes, int, list/tuple, dict with bytes keys)."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _encode(value: object, out: list[bytes], depth: int) -> None:
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        out.append(b"%d:" % len(b))
        out.append(b)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not INT_MIN <= value <= INT_MAX:
            raise BencodeError("integer out of range")
        out.append(b"i%de" % value)
    elif isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            raise BencodeError("nested too deeply")
        out.append(b"l")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"e")
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise BencodeError("nested too deeply")
        for key in value:
            if not isinstance(key, bytes):
                raise BencodeError("dictionary keys must be bytes")
        out.append(b"d")
        for key in sorted(value):
            out.append(b"%d:" % len(key))
            out.append(key)
            _encode(value[key], out, depth + 1)
        out.append(b"e")
    else:
        raise BencodeError(f"cannot bencode {type(value).__name__}")


def looks_like_krpc(data: bytes) -> bool:
    """Cheap, strict test for the socket demultiplexer: a bencoded dictionary
    of at most 4 KiB with 't' and 'y' keys. Never raises."""
    try:
        if not 2 <= len(data) <= MAX_INPUT or data[0] != _D or data[-1] != _E:
            return False
        msg = decode(data)
    except (BencodeError, TypeError):
        return False
    return isinstance(msg, dict) and b"t" in msg and b"y" in msg
