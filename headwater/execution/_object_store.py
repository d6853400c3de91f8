"""``hw.ObjectStore("s3://bucket/prefix")``: values in an S3-compatible bucket.

One object per asset partition, ``<prefix>/<asset key>/<partition name>``, in the same formats
as the filesystem store (Parquet for tables, else a pickle), the format in the object's
metadata. A PUT replaces an object atomically (readers get the old or the new one, never part
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
from headwater.execution._store import NoValueError, decode_value, encode_value, may_change

__all__ = ["ObjectStore"]

_FORMAT = "headwater-format"
_NAME_MAX = 255


class ObjectStore:
    """An :class:`~headwater.IOManager` on an S3-compatible bucket."""

    may_change = staticmethod(may_change)

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
        with guarded():
            self._s3().put_object(
                Bucket=self.bucket,
                Key=self.key(asset, partition),
                Body=buffer.getvalue(),
                Metadata={_FORMAT: fmt},
            )

    def load(self, asset: str, partition: str | None) -> Any:
        client = self._s3()
        try:
            response = client.get_object(Bucket=self.bucket, Key=self.key(asset, partition))
        except client.exceptions.NoSuchKey:
            label = asset if partition is None else f"{asset}[{partition}]"
            raise NoValueError(f"no stored value for {label} under {self.url}") from None
        body = response["Body"]
        try:
            data = body.read()
        finally:
            body.close()
        fmt = response.get("Metadata", {}).get(_FORMAT, "pickle")
        return decode_value(fmt, io.BytesIO(data))
