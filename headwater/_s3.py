"""The S3-compatible object store: clients, listings and object bodies, through boto3.

Credentials and endpoint come from an ``ObjectSource``'s ``storage_options`` or the standard
AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...); a plain-http
endpoint such as a local S3-compatible server works. boto3 is imported only when an object
source is used.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from headwater.definitions import ObjectSource

__all__ = [
    "ObjectEntry", "client_for", "client_kwargs", "get_object", "head_etag", "is_missing",
    "is_store_failure", "list_objects",
]  # fmt: skip

ObjectEntry = tuple[str, int]
"""(ETag without quotes, size)"""

# fsspec/s3fs spellings accepted besides boto3's own keyword names
_ALIASES = {
    "key": "aws_access_key_id",
    "secret": "aws_secret_access_key",
    "token": "aws_session_token",
}
_clients: dict[int, Any] = {}
_lock = threading.Lock()


def client_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """``storage_options`` as boto3 client arguments."""
    kwargs: dict[str, Any] = {}
    for name, value in options.items():
        if name == "client_kwargs" and isinstance(value, Mapping):
            kwargs.update(value)
        else:
            kwargs[_ALIASES.get(name, name)] = value
    return kwargs


def client_for(source: ObjectSource) -> Any:
    """One boto3 S3 client per source (boto3 clients are safe to share between threads)."""
    with _lock:
        client = _clients.get(id(source))
        if client is None:
            import boto3  # imported here: heavy, and only projects with object sources need it

            session = boto3.session.Session()
            client = session.client("s3", **client_kwargs(source.storage_options))
            _clients[id(source)] = client
        return client


def list_objects(source: ObjectSource) -> dict[str, ObjectEntry]:
    """Every object under the source's prefix, across all pages (raises on any error)."""
    paginator = client_for(source).get_paginator("list_objects_v2")
    found: dict[str, ObjectEntry] = {}
    for page in paginator.paginate(Bucket=source.bucket, Prefix=source.static_prefix):
        for item in page.get("Contents", ()):
            found[item["Key"]] = (str(item["ETag"]).strip('"'), int(item["Size"]))
    return found


def get_object(source: ObjectSource, key: str) -> tuple[bytes, str]:
    """The object's bytes and the ETag of exactly those bytes (its version)."""
    response = client_for(source).get_object(Bucket=source.bucket, Key=key)
    body = response["Body"]
    try:
        data: bytes = body.read()
    finally:
        body.close()
    return data, str(response["ETag"]).strip('"')


def is_missing(exc: BaseException) -> bool:
    """Did the store answer that the object is not there (as opposed to any other failure)?"""
    response = getattr(exc, "response", None)  # botocore's ClientError carries the answer
    if not isinstance(response, Mapping):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


def is_store_failure(exc: BaseException) -> bool:
    """Did talking to the store fail (down, refusing, timing out, an error it answered), as
    opposed to what was read being wrong? botocore's own errors, by module: boto3 is imported
    only when an object source is used."""
    return any(
        c.__module__.split(".")[0] in ("botocore", "urllib3") for c in type(exc).__mro__[:-2]
    ) and not is_missing(exc)


def head_etag(source: ObjectSource, key: str) -> str | None:
    """The object's ETag now, None if it is not there (raises on any other error)."""
    try:
        response = client_for(source).head_object(Bucket=source.bucket, Key=key)
    except Exception as exc:
        if is_missing(exc):
            return None
        raise
    return str(response["ETag"]).strip('"')
