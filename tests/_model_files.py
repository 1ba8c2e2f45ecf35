"""Model files built by hand for the tests of bad and hostile files: ZIP archives written byte by byte.

Independent of softmaxkit and of :mod:`zipfile`'s writer, so an archive can lie in any field:

* ``npy_bytes(array)``: a member's ``.npy`` bytes as :func:`numpy.save` writes them;
  ``npy_header(descr, shape)``: a ``.npy`` header alone, declaring anything;
* ``Member`` and ``zip_archive(members)``: an archive from members, each field of each member's
  local and central directory headers overridable (sizes, CRC, method, flags, offset);
* ``deflate_bomb(n_bytes)``: a raw deflate stream of an ``.npy`` header and ``n_bytes`` zeros, built
  from one compressed block repeated (a few milliseconds for any size), with its true CRC-32;
* ``header_fields(data)``: the position and width of every numeric field of the ZIP headers of an
  archive, for corruptions that change one field to any value;
* ``archive_members(path)`` and ``record_of(members)``: the raw members of a real model file and its
  metadata record, to rebuild it with changes.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

METADATA = "__softmaxkit_metadata__.npy"
STORED, DEFLATED = 0, 8


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def npy_header(descr: str, shape: tuple, *, fortran: bool = False, version: tuple[int, int] = (1, 0)) -> bytes:
    """A ``.npy`` header (magic, length, dict) declaring ``descr`` and ``shape``, padded as NumPy pads it."""
    text = "{" + f"'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {tuple(shape)!r}, " + "}"
    length_bytes = 2 if version == (1, 0) else 4
    total = 6 + 2 + length_bytes + len(text) + 1
    text += " " * ((-total) % 64) + "\n"
    length = struct.pack("<H" if length_bytes == 2 else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text.encode("latin1")


def metadata_member(record: dict) -> bytes:
    return npy_bytes(np.frombuffer(json.dumps(record).encode(), dtype=np.uint8))


@dataclass
class Member:
    """One archive member: ``data`` as stored (already compressed when ``method`` is DEFLATED).

    ``size`` and ``crc`` are of the uncompressed bytes (computed from ``data`` when stored);
    ``local`` and ``central`` override fields of the two headers by name (``flags``, ``method``,
    ``crc``, ``compressed``, ``size``, ``offset``).
    """

    name: str
    data: bytes
    method: int = STORED
    size: int | None = None
    crc: int | None = None
    local: dict = field(default_factory=dict)
    central: dict = field(default_factory=dict)


def zip_archive(members: list[Member]) -> bytes:
    out = bytearray()
    directory = bytearray()
    for member in members:
        name = member.name.encode()
        size = len(member.data) if member.size is None else member.size
        crc = zlib.crc32(member.data) if member.crc is None else member.crc
        base = {"flags": 0, "method": member.method, "crc": crc, "compressed": len(member.data), "size": size}
        local = {**base, **member.local}
        offset = len(out)
        out += struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            20,
            local["flags"],
            local["method"],
            0,
            0x21,
            local["crc"],
            local["compressed"],
            local["size"],
            len(name),
            0,
        )
        out += name + member.data
        central = {**base, "offset": offset, **member.central}
        directory += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            central["flags"],
            central["method"],
            0,
            0x21,
            central["crc"],
            central["compressed"],
            central["size"],
            len(name),
            0,
            0,
            0,
            0,
            0,
            central["offset"],
        )
        directory += name
    start = len(out)
    out += directory
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory), start, 0)
    return bytes(out)


def deflate_bomb(n_bytes: int, *, chunk: int = 1 << 22) -> tuple[bytes, int, int]:
    """``(raw deflate data, uncompressed size, CRC-32)`` of a float64 ``.npy`` of ``n_bytes`` zero bytes.

    After a full flush the compressor starts afresh, so every chunk of zeros compresses to the
    same bytes: compressed once, repeated. ``n_bytes`` is rounded down to whole chunks.
    """
    n_chunks = n_bytes // chunk
    header = npy_header("<f8", (n_chunks * chunk // 8,))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(chunk)
    piece = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert piece == again, "the compressor did not start afresh after a full flush"
    data = first + piece * n_chunks + compressor.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    for _ in range(n_chunks):
        crc = zlib.crc32(zeros, crc)
    return data, len(header) + n_chunks * chunk, crc


def archive_members(path) -> dict[str, bytes]:
    """The raw (uncompressed) bytes of each member of a real archive, by name, in order."""
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def record_of(members: dict[str, bytes]) -> dict:
    array = np.load(io.BytesIO(members[METADATA]), allow_pickle=False)
    return json.loads(array.tobytes())


def stored(members: dict[str, bytes]) -> bytes:
    """An archive of ``members`` stored as they are (what np.savez writes, without its zip64 extras)."""
    return zip_archive([Member(name, data) for name, data in members.items()])


def header_fields(data: bytes) -> list[tuple[int, int]]:
    """``(offset, width in bytes)`` of every numeric field of the local, central and end-of-directory headers."""
    fields = []
    end = data.rindex(b"PK\x05\x06")
    fields += [(end + o, w) for o, w in ((8, 2), (10, 2), (12, 4), (16, 4), (20, 2))]
    count, start = struct.unpack_from("<H", data, end + 10)[0], struct.unpack_from("<I", data, end + 16)[0]
    position = start
    for _ in range(count):
        fields += [
            (position + o, w) for o, w in ((8, 2), (10, 2), (16, 4), (20, 4), (24, 4), (28, 2), (30, 2), (42, 4))
        ]
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, position + 28)
        local = struct.unpack_from("<I", data, position + 42)[0]
        fields += [(local + o, w) for o, w in ((6, 2), (8, 2), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2))]
        position += 46 + name_length + extra_length + comment_length
    return fields
