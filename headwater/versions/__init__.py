"""Content fingerprints of data and code. Pure."""

from headwater.versions._callables import callable_version
from headwater.versions._code import code_version
from headwater.versions._data import (
    bytes_version,
    chunks_version,
    data_version,
    file_version,
    files_version,
)

__all__ = [
    "bytes_version",
    "callable_version",
    "chunks_version",
    "code_version",
    "data_version",
    "file_version",
    "files_version",
]
