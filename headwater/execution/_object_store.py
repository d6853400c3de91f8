"""``hw.ObjectStore("s3://bucket/prefix")``: values in an S3-compatible bucket.

One object per asset partition, ``<prefix>/<asset key>/<partition name>``, in the same formats
as the filesystem store (Parquet for tables, else a pickle), the format in the object's
metadata, and with it the data version the log records for the value: a load given another
version raises :class:`StaleValue`, so an object left from an earlier run (the asset stored
elsewhere in between, or the object written over by someone else) counts as gone, never as the
current value. A PUT replaces an object atomically (readers get the old or the new one, never part
of either), and it happens under the run's publishing guard: a superseded attempt never
publishes. The store pickles as its URL and options (a Dask worker builds its own client).
Credentials and endpoint come from ``storage_options`` or the standard AWS environment
variables, as for object sources.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from headwater._errors import DefinitionError
from headwater.execution._publishing import guarded
from headwater.execution._store import (
    NoValueError,
    StaleValue,
    decode_value,
    encode_value,
    prepare,
)
from headwater.versions import data_version

__all__ = ["ObjectStore"]

_FORMAT = "headwater-format"
_VERSION = "headwater-version"
_NAME_MAX = 255


class ObjectStore:
    """An :class:`~headwater.IOManager` on an S3-compatible bucket."""

    def __init__(self, url: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or not url.startswith("s3://"):
            raise DefinitionError(
                f"ObjectStore({url!r}): the url must look like s3://bucket/prefix"
            )
        self.url = url
        self.bucket, _, prefix = url[len("s3://") :].partition("/")
        if not self.bucket:
            raise DefinitionError(f"ObjectStore({url!r}) names no bucket")
        self.prefix = prefix.strip("/")
        self.storage_options = dict(storage_options or {})
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """Where it keeps values (recorded with each materialization)."""
        return self.url

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], storage_options=state["storage_options"])  # type: ignore[misc]

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3

                from headwater._s3 import client_kwargs

                session = boto3.session.Session()
                self._client = session.client("s3", **client_kwargs(self.storage_options))
            return self._client

    def key(self, asset: str, partition: str | None) -> str:
        if partition is None:
            name = "value"
        else:
            name = "p=" + quote(partition, safe="-_.:")
            if len(name.encode()) > _NAME_MAX:
                name = "h=" + hashlib.blake2b(partition.encode(), digest_size=20).hexdigest()
        return "/".join(p for p in (self.prefix, asset, name) if p)

    def save(self, asset: str, partition: str | None, value: Any) -> None:
        fmt, write = encode_value(value)
        buffer = io.BytesIO()
        write(buffer)
        self._put(asset, partition, fmt, buffer.getvalue(), None)

    def store(self, asset: str, partition: str | None, value: Any, version: str | None) -> str:
        """Save ``value`` with its data version (``version`` if the function gave one, else
        the fingerprint of the value as readers will load it: a table as read back from
        Parquet); return that version."""
        fmt, table, data, loaded, parquet = prepare(value)
        if table is not None:
            data = parquet  # the bytes its version is of, as read back
        version = version or data_version(value if table is None else loaded)
        self._put(asset, partition, fmt, data, version)
        return version

    def _put(
        self, asset: str, partition: str | None, fmt: str, data: bytes, version: str | None
    ) -> None:
        metadata = {_FORMAT: fmt}
        if version is not None:
            metadata[_VERSION] = _digest(version)
        with guarded():
            self._s3().put_object(
                Bucket=self.bucket, Key=self.key(asset, partition), Body=data, Metadata=metadata
            )

    def holds(self, asset: str, partition: str | None, version: str) -> bool:
        """Whether the object is there and holds ``version`` (as :meth:`load` would take
        it), from its metadata alone. Raises when the store does not answer."""
        from headwater._s3 import is_missing

        try:
            head = self._s3().head_object(Bucket=self.bucket, Key=self.key(asset, partition))
        except Exception as exc:
            if is_missing(exc):
                return False
            raise
        return _not_holding(head.get("Metadata", {}), version) is None

    def load(self, asset: str, partition: str | None, version: str | None = None) -> Any:
        """The stored value; given the ``version`` the log records, :class:`StaleValue` for an
        object that holds another one, or that headwater did not write (no metadata: a plain
        upload over it). One stored before versions were recorded says nothing, and is taken."""
        client = self._s3()
        label = asset if partition is None else f"{asset}[{partition}]"
        try:
            response = client.get_object(Bucket=self.bucket, Key=self.key(asset, partition))
        except client.exceptions.NoSuchKey:
            raise NoValueError(f"no stored value for {label} under {self.url}") from None
        metadata = response.get("Metadata", {})
        if version is not None and (why := _not_holding(metadata, version)) is not None:
            response["Body"].close()
            other = metadata.get(_VERSION) or ""  # another value, not damage
            raise StaleValue(f"the object for {label} under {self.url} {why}", found=other)
        body = response["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        fmt = metadata.get(_FORMAT, "pickle")
        return decode_value(fmt, io.BytesIO(data))


def _not_holding(metadata: Mapping[str, str], version: str) -> str | None:
    """Why an object with ``metadata`` does not hold ``version``; None if it does (or was
    stored before versions were recorded: its format alone, it says nothing)."""
    found = metadata.get(_VERSION)
    if found == _digest(version):
        return None
    if found is not None:
        return "holds another version than the log records (an earlier run's, or another's)"
    if _FORMAT not in metadata:
        return "was written over by something else (it has no headwater metadata)"
    return None


def _digest(version: str) -> str:
    """A data version as object metadata: ASCII and short whatever the version (one a
    function gives may be any text; S3 metadata is ASCII and at most 2 KB)."""
    return hashlib.blake2b(version.encode(), digest_size=16).hexdigest()
