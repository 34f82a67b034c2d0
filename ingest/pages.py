"""The page headers of an uploaded Parquet file, read before any page is decompressed.

The footer's sizes are written by the sender and are not what the decoder allocates: each
page's own header says how large it inflates (``uncompressed_page_size``) and how many
values it decodes to (``num_values``). A file can keep both small in the footer and large
in its pages, or keep a page tiny and its value count huge (RLE and dictionary indices
repeat one value millions of times). So the pages are walked here, in pure Python over the
Thrift compact protocol, and every size is bounded before pyarrow touches the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow.parquet as pq

from edgeloop.errors import BatchRejected

__all__ = ["ALLOWED_ENCODINGS", "ColumnPages", "scan_pages"]

# Encodings whose decoded size is bounded by the page's inflated bytes or its value count.
# DELTA_BYTE_ARRAY is left out on purpose: its shared prefixes let one page decode to far
# more bytes than it holds (a 1 MB string repeated by prefix length alone).
ALLOWED_ENCODINGS = {0: "PLAIN", 2: "PLAIN_DICTIONARY", 3: "RLE", 4: "BIT_PACKED", 8: "RLE_DICTIONARY", 9: "BYTE_STREAM_SPLIT"}
DATA_PAGE, INDEX_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 1, 2, 3


@dataclass(slots=True)
class ColumnPages:
    """What one column chunk's pages inflate and decode to, from their headers."""

    path: str
    pages: int = 0
    inflated_bytes: int = 0  # sum of uncompressed_page_size: what decompression allocates
    dictionary_bytes: int = 0  # inflated bytes of dictionary pages
    values: int = 0  # sum of num_values over data pages: levels and values decoded


class _Corrupt(Exception):
    pass


class _Reader:
    """Just enough of the Thrift compact protocol to read a PageHeader and skip the rest."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: memoryview, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise _Corrupt("page header runs past its column chunk")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise _Corrupt("varint too long")

    def zigzag(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 16:
            raise _Corrupt("page header nested too deep")
        if kind in (1, 2):  # bools live in the field header
            return
        if kind == 3:
            self.byte()
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.advance(8)
        elif kind == 8:
            self.advance(self.varint())
        elif kind in (9, 10):
            header = self.byte()
            size, element = header >> 4, header & 0x0F
            if size == 15:
                size = self.varint()
            for _ in range(size):
                if element in (1, 2):
                    self.byte()
                else:
                    self.skip(element, depth + 1)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == 12:
            self.struct(lambda field, kind_: self.skip(kind_, depth + 1))
        else:
            raise _Corrupt(f"unknown Thrift type {kind}")

    def advance(self, count: int) -> None:
        if count < 0 or self.pos + count > self.end:
            raise _Corrupt("page header runs past its column chunk")
        self.pos += count

    def struct(self, on_field) -> None:
        field = 0
        while True:
            header = self.byte()
            if header == 0:
                return
            kind, delta = header & 0x0F, header >> 4
            field = field + delta if delta else self.zigzag()
            on_field(field, kind)


def _page_header(reader: _Reader) -> dict[str, int]:
    """The fields of a PageHeader that size the work: type, sizes, value count and encodings."""
    header: dict[str, int] = {}

    def nested(prefix: str, wanted: dict[int, str]):
        def on_field(field: int, kind: int) -> None:
            if field in wanted and kind == 5:
                header[prefix + wanted[field]] = reader.zigzag()
            else:
                reader.skip(kind)
        return on_field

    def top(field: int, kind: int) -> None:
        if field in (1, 2, 3) and kind == 5:
            header[("type", "uncompressed", "compressed")[field - 1]] = reader.zigzag()
        elif field == 5 and kind == 12:  # DataPageHeader
            reader.struct(nested("", {1: "num_values", 2: "encoding", 3: "def_encoding", 4: "rep_encoding"}))
        elif field == 7 and kind == 12:  # DictionaryPageHeader
            reader.struct(nested("", {1: "num_values", 2: "encoding"}))
        elif field == 8 and kind == 12:  # DataPageHeaderV2
            reader.struct(nested("", {1: "num_values", 4: "encoding"}))
        else:
            reader.skip(kind)

    reader.struct(top)
    return header


@dataclass(slots=True)
class _Chunk:
    path: str = ""
    compressed: int = -1  # total_compressed_size
    data_offset: int = -1
    dictionary_offset: int | None = None


def _column_chunks(view: memoryview, footer_start: int, footer_end: int) -> list[_Chunk]:
    """Every column chunk's path, offsets and size, read from the footer's Thrift here.

    Not through pyarrow's ``RowGroupMetaData.column``: a chunk whose metadata does not hold
    together (a level histogram of the wrong size) throws a C++ exception there that nothing
    catches, and the process aborts.
    """
    reader = _Reader(view, footer_start, footer_end)
    chunks: list[_Chunk] = []

    def column_meta(chunk: _Chunk):
        def on_field(field: int, kind: int) -> None:
            if field == 3 and kind == 9:  # path_in_schema: list<string>
                header = reader.byte()
                size = header >> 4 if header >> 4 != 15 else reader.varint()
                if header & 0x0F != 8:
                    raise _Corrupt("a column path that is not a list of strings")
                parts = []
                for _ in range(size):
                    length = reader.varint()
                    start = reader.pos
                    reader.advance(length)
                    parts.append(bytes(view[start:reader.pos]).decode("utf-8"))
                chunk.path = ".".join(parts)
            elif field in (7, 9, 11) and kind == 6:
                value = reader.zigzag()
                if field == 7:
                    chunk.compressed = value
                elif field == 9:
                    chunk.data_offset = value
                else:
                    chunk.dictionary_offset = value
            else:
                reader.skip(kind)
        return on_field

    def column_chunk(field: int, kind: int) -> None:
        if field == 3 and kind == 12:
            reader.struct(column_meta(chunks[-1]))
        else:
            reader.skip(kind)

    def each(kind_wanted: int, on_element) -> None:
        header = reader.byte()
        size = header >> 4 if header >> 4 != 15 else reader.varint()
        if header & 0x0F != kind_wanted:
            raise _Corrupt("a footer list of the wrong type")
        for _ in range(size):
            on_element()

    def chunk_element() -> None:
        chunks.append(_Chunk())
        reader.struct(column_chunk)

    def row_group(field: int, kind: int) -> None:
        if field == 1 and kind == 9:  # columns
            each(12, chunk_element)
        else:
            reader.skip(kind)

    def file_meta(field: int, kind: int) -> None:
        if field == 4 and kind == 9:  # row_groups
            each(12, lambda: reader.struct(row_group))
        else:
            reader.skip(kind)

    reader.struct(file_meta)
    return chunks


def scan_pages(body: bytes, meta: pq.FileMetaData, *, max_pages: int) -> list[ColumnPages]:
    """Walk every column chunk's page headers; a file that cannot be walked is a 400, an unsafe one a 422."""
    view = memoryview(body)
    footer_start = len(body) - 8 - int.from_bytes(body[-8:-4], "little")
    try:
        chunks = _column_chunks(view, footer_start, len(body) - 8)
    except (_Corrupt, UnicodeDecodeError) as exc:
        raise BatchRejected(400, "corrupt_parquet", f"the Parquet footer cannot be read: {exc}") from None
    if len(chunks) != meta.num_row_groups * meta.num_columns:
        raise BatchRejected(400, "corrupt_parquet", "the Parquet footer's row groups do not hold every column")
    columns: dict[str, ColumnPages] = {}
    pages = 0
    for chunk in chunks:
        path = chunk.path
        column = columns.setdefault(path, ColumnPages(path))
        # Where pyarrow starts reading the chunk (it prefers an earlier dictionary page).
        start = chunk.data_offset
        if chunk.dictionary_offset is not None and 0 < chunk.dictionary_offset < start:
            start = chunk.dictionary_offset
        end = start + chunk.compressed
        if start < 4 or chunk.compressed <= 0 or end > footer_start:
            raise BatchRejected(400, "corrupt_parquet", f"column {path!r}: its pages lie outside the file")
        reader = _Reader(view, start, end)
        try:
            while reader.pos < end:
                header = _page_header(reader)
                compressed, inflated = header.get("compressed", -1), header.get("uncompressed", -1)
                if compressed < 0 or inflated < 0:
                    raise _Corrupt("a page header without its sizes")
                reader.advance(compressed)
                pages += 1
                column.pages += 1
                if pages > max_pages:
                    raise BatchRejected(
                        413, "too_many_pages", f"the batch has more than {max_pages} Parquet pages",
                        {"limit": max_pages},
                    )
                column.inflated_bytes += inflated
                kind = header.get("type")
                for key in ("encoding", "def_encoding", "rep_encoding"):
                    if key in header and header[key] not in ALLOWED_ENCODINGS:
                        raise BatchRejected(
                            422, "unsupported_encoding",
                            f"column {path!r} uses Parquet encoding {header[key]}; accepted: "
                            + ", ".join(sorted(ALLOWED_ENCODINGS.values())),
                            {"column": path, "encoding": header[key]},
                        )
                if kind == DICTIONARY_PAGE:
                    column.dictionary_bytes += inflated
                elif kind in (DATA_PAGE, DATA_PAGE_V2):
                    values = header.get("num_values", -1)
                    if values < 0:
                        raise _Corrupt("a data page without its value count")
                    column.values += values
                elif kind != INDEX_PAGE:
                    raise _Corrupt(f"unknown page type {kind}")
        except _Corrupt as exc:
            raise BatchRejected(400, "corrupt_parquet", f"column {path!r}: {exc}") from None
    return list(columns.values())
