"""Streaming one big JSON array (Visual Genome's files) item by item, in about a chunk of memory."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator, TextIO

from ..errors import DataError
from .common import open_text

_CHUNK = 1 << 20  # characters read at a time
_MAX_ITEM = 64 << 20  # an item that does not parse within this many characters is malformed, not just long
_BLANKS = re.compile(r"[ \t\r\n]*")
_SEPARATOR = re.compile(r"[,\]]")


class _ArrayReader:
    """Yields the items of a file that holds one JSON array, keeping only about one chunk in memory.

    json's own decoder parses each item (`raw_decode`); this class only finds where items start and
    reads more of the file when an item runs past what has been read so far.
    """

    def __init__(self, f: TextIO, path: Path):
        self.f, self.path = f, path
        self.decoder = json.JSONDecoder()
        self.buf, self.pos, self.eof = "", 0, False

    def _read_more(self) -> None:
        try:
            chunk = self.f.read(_CHUNK)
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: not UTF-8 text") from None
        self.buf, self.pos, self.eof = self.buf[self.pos:] + chunk, 0, not chunk

    def _peek(self) -> str:
        """The next non-blank character, or "" at the end of the file."""
        while True:
            self.pos = _BLANKS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or self.eof:
                return self.buf[self.pos:self.pos + 1]
            self._read_more()

    def _decode(self, n: int) -> Any:
        if self._peek() == "":
            raise DataError(f"{self.path}: file ends inside the array, at item {n}")
        while True:
            try:
                item, end = self.decoder.raw_decode(self.buf, self.pos)
                # An item is only known to be whole once a ',' or ']' follows it: what was read so
                # far may end inside a number ("-6." of "-6.5e3" decodes as -6).
                if self.eof or _SEPARATOR.search(self.buf, end):
                    self.pos = end
                    return item
            except json.JSONDecodeError as e:
                if self.eof or len(self.buf) - self.pos > _MAX_ITEM:
                    raise DataError(f"{self.path}: item {n}: not valid JSON ({e.msg})") from None
            self._read_more()

    def __iter__(self) -> Iterator[Any]:
        if self._peek() != "[":
            raise DataError(f"{self.path}: expected a JSON array")
        self.pos += 1
        if self._peek() == "]":
            return
        n = 0
        while True:
            yield self._decode(n)
            sep = self._peek()
            if sep == "]":
                return
            if sep != ",":
                raise DataError(f"{self.path}: after item {n}: expected ',' or ']'")
            self.pos += 1
            n += 1


def stream_json_array(path: Path) -> Iterator[Any]:
    """The items of a file holding one JSON array, one at a time."""
    with open_text(path) as f:
        yield from _ArrayReader(f, path)
