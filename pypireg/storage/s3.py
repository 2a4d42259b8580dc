"""A small S3 client: botocore signs, Twisted's pooled Agent sends.

Storage layer, I/O on the reactor. botocore is used for two things only:
resolving credentials (environment variables, shared credentials file,
instance metadata: possibly I/O, so always in a thread) and SigV4 signing
(`SigV4Auth` on an `AWSRequest`, `S3SigV4QueryAuth` for presigned URLs).
Every request goes out through one `HTTPConnectionPool`d Agent, with
`S3Config.timeout` for the connection and the response headers, and
bodies stream from an `IBodyProducer` (never read whole into memory).
Payloads are sent as `UNSIGNED-PAYLOAD` (S3 allows it; the registry
hashes every byte itself and checks sizes after each write), so a part
need not be read twice.

Errors: an answer S3 gives (404 aside) or no answer at all becomes
`S3Error`, a 503 whose reason says the object storage failed and what to
do; the S3 error code goes to the log, never the credentials.

The typed surface is what the blob backend (s3_blobs.py) needs: single
PUT, HEAD, ranged GET, DELETE, server-side copy (CopyObject up to 5 GiB,
UploadPartCopy beyond), multipart uploads, and the two listings gc uses.
"""

from __future__ import annotations

import datetime
import io
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import quote
from xml.etree import ElementTree

import botocore.session
from botocore.auth import S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse

from pypireg.config import S3Config
from pypireg.domain.errors import ServiceUnavailable

_log = Logger()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# CopyObject copies at most 5 GiB; beyond that, UploadPartCopy in parts.
MAX_COPY = 5 * 1024 ** 3
COPY_PART = 1024 ** 3
_MAX_ANSWER = 1024 * 1024


class S3Error(ServiceUnavailable):
    """The object storage refused or did not answer (a 503 to the client)."""

    def __init__(self, operation: str, detail: str, *, status: int | None = None,
                 s3_code: str | None = None) -> None:
        super().__init__(f"The registry's object storage failed ({operation}: {detail});"
                         " nothing was changed. Retry later; if it persists, tell the"
                         " registry's operators.")
        self.operation = operation
        self.status = status
        self.s3_code = s3_code


class NoCredentials(Exception):
    """botocore found no AWS credentials in the environment or credentials file."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime.datetime


@dataclass(frozen=True)
class MultipartInfo:
    key: str
    upload_id: str
    initiated: datetime.datetime


class _Signer(SigV4Auth):  # type: ignore[misc]
    """SigV4 for S3: the path is signed as sent (S3 does not normalise key paths)."""

    def _normalize_url_path(self, path: str) -> str:
        return path


class S3Client:
    """Typed S3 requests against one bucket."""

    def __init__(self, reactor: Any, config: S3Config, *, agent: IAgent | None = None) -> None:
        self._reactor = reactor
        self.config = config
        self._pool: HTTPConnectionPool | None = None
        if agent is None:
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            # Several parts go up at once, and downloads share the pool.
            self._pool.maxPersistentPerHost = max(8, config.parts_in_flight * 2)
            agent = Agent(reactor, pool=self._pool, connectTimeout=config.timeout)
        self._agent = agent
        self._credentials: Credentials | None = None
        self._lock = threading.Lock()
        if config.endpoint_url is not None:
            self._base = config.endpoint_url
        elif config.region == "us-east-1":
            self._base = "https://s3.amazonaws.com"
        else:
            self._base = f"https://s3.{config.region}.amazonaws.com"

    def url_for(self, key: str, query: str = "") -> str:
        """The object's URL, in the configured addressing style."""
        path = quote(key, safe="/-_.~")
        if self.config.path_style:
            url = f"{self._base}/{self.config.bucket}/{path}"
        else:
            scheme, host = self._base.split("://", 1)
            url = f"{scheme}://{self.config.bucket}.{host}/{path}"
        return f"{url}?{query}" if query else url

    # -- credentials ------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the credentials (in a thread: the resolver may do I/O)."""
        await self._frozen_credentials()

    async def _frozen_credentials(self) -> ReadOnlyCredentials:
        credentials = self._credentials
        if credentials is None or getattr(credentials, "refresh_needed", lambda: False)():
            # Refreshable credentials (a role, SSO) refresh inside
            # get_frozen_credentials: I/O, so in a thread too.
            return cast(ReadOnlyCredentials, await deferToThread(self._resolve_sync))
        return credentials.get_frozen_credentials()

    def _resolve_sync(self) -> ReadOnlyCredentials:
        with self._lock:
            if self._credentials is None:
                found = botocore.session.get_session().get_credentials()
                if found is None:
                    raise NoCredentials(
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                        " (or AWS_PROFILE with a shared credentials file) in the"
                        " environment of pypireg")
                self._credentials = found
            return self._credentials.get_frozen_credentials()

    # -- signing ------------------------------------------------------------------

    async def _signed(self, method: str, url: str, headers: dict[str, str]) -> Headers:
        credentials = await self._frozen_credentials()
        request = AWSRequest(method=method, url=url, headers={
            **headers, "X-Amz-Content-SHA256": UNSIGNED_PAYLOAD})
        _Signer(credentials, "s3", self.config.region).add_auth(request)
        out = Headers()
        for name, value in request.headers.items():
            out.addRawHeader(name.encode("ascii"), str(value).encode("latin-1"))
        return out

    async def presigned_get(self, key: str, ttl: float, *,
                            response_headers: Sequence[tuple[str, str]] = ()) -> str:
        """A URL that GETs *key* without credentials for *ttl* seconds."""
        credentials = await self._frozen_credentials()
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                         for k, v in response_headers)
        request = AWSRequest(method="GET", url=self.url_for(key, query))
        S3SigV4QueryAuth(credentials, "s3", self.config.region,
                         expires=int(ttl)).add_auth(request)
        url: str = request.url
        return url

    # -- transport ----------------------------------------------------------------

    async def request(self, operation: str, method: str, key: str, *, query: str = "",
                      headers: dict[str, str] | None = None,
                      body: IBodyProducer | None = None, ok: Sequence[int] = (200,),
                      missing_ok: bool = False) -> IResponse | None:
        """One signed request; the response (body unread) if its status is in *ok*.

        A 404 gives None when *missing_ok*. Any other status, or no answer,
        raises S3Error (the body is read for S3's error code, then dropped).
        """
        url = self.url_for(key, query)
        signed = await self._signed(method, url, dict(headers or {}))
        d = self._agent.request(method.encode("ascii"), url.encode("ascii"), signed, body)
        d.addTimeout(self.config.timeout, self._reactor)
        try:
            response = await d
        except CancelledError:
            raise S3Error(operation, f"no answer within {self.config.timeout:g}s") from None
        except Exception as e:  # connection refused, reset, TLS: no answer
            raise S3Error(operation, f"no answer ({type(e).__name__})") from None
        if response.code in ok:
            return response
        if response.code == 404 and missing_ok:
            await self._drop(response)
            return None
        code = await self._error_code(response)
        _log.warn("S3 {operation} {key} answered {status} {code}", operation=operation,
                  key=key, status=response.code, code=code)
        raise S3Error(operation, f"HTTP {response.code} {code or ''}".rstrip(),
                      status=response.code, s3_code=code)

    async def _read(self, operation: str, response: IResponse, limit: int = _MAX_ANSWER
                    ) -> bytes:
        collect = _Collect(limit)
        response.deliverBody(collect)
        d = collect.done
        d.addTimeout(self.config.timeout, self._reactor)
        try:
            body: bytes = await d
            return body
        except CancelledError:
            raise S3Error(operation, "the answer stalled") from None
        except Exception as e:
            raise S3Error(operation, f"the answer broke off ({type(e).__name__})") from None

    async def _drop(self, response: IResponse) -> None:
        try:
            await self._read("read", response)
        except S3Error:
            pass

    async def _error_code(self, response: IResponse) -> str | None:
        try:
            body = await self._read("error", response)
            return _text(_parse_xml(body), "Code")
        except (S3Error, ElementTree.ParseError):
            return None

    async def _xml(self, operation: str, response: IResponse) -> ElementTree.Element:
        body = await self._read(operation, response)
        try:
            root = _parse_xml(body)
        except ElementTree.ParseError:
            raise S3Error(operation, "an answer that is not XML") from None
        # CompleteMultipartUpload and CopyObject may answer 200 with an error.
        if _local(root.tag) == "Error":
            code = _text(root, "Code")
            _log.warn("S3 {operation} failed after a 200: {code}", operation=operation,
                      code=code)
            raise S3Error(operation, code or "an error", s3_code=code)
        return root

    def close(self) -> Deferred[None]:
        if self._pool is None:
            return Deferred.fromCoroutine(_nothing())
        return cast(Deferred[None], self._pool.closeCachedConnections())

    # -- operations ---------------------------------------------------------------

    async def put(self, key: str, body: IBodyProducer, *, content_type: str | None = None
                  ) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        response = await self.request("PutObject", "PUT", key, body=body, headers=headers)
        assert response is not None
        await self._drop(response)

    async def head(self, key: str) -> int | None:
        """The object's size, or None if there is no such object."""
        info = await self.stat(key)
        return None if info is None else info.size

    async def stat(self, key: str) -> ObjectInfo | None:
        """The object's size and Last-Modified, or None if there is no such object."""
        response = await self.request("HeadObject", "HEAD", key, missing_ok=True)
        if response is None:
            return None
        await self._drop(response)
        modified = _header(response, b"last-modified")
        return ObjectInfo(key, int(_header(response, b"content-length") or 0),
                          parsedate_to_datetime(modified) if modified
                          else datetime.datetime.now(datetime.UTC))

    async def get(self, key: str, *, first: int | None = None, last: int | None = None,
                  missing_ok: bool = False) -> IResponse | None:
        """GET the object (bytes *first* to *last* inclusive, if given); body unread."""
        headers = {}
        if first is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        return await self.request("GetObject", "GET", key, headers=headers, ok=(200, 206),
                                  missing_ok=missing_ok)

    async def get_bytes(self, key: str, first: int, last: int) -> bytes:
        response = await self.get(key, first=first, last=last)
        assert response is not None
        return await self._read("GetObject", response, last - first + 1)

    async def delete(self, key: str) -> None:
        response = await self.request("DeleteObject", "DELETE", key, ok=(200, 204),
                                      missing_ok=True)
        if response is not None:
            await self._drop(response)

    async def copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy of *source* to *target* (UploadPartCopy beyond 5 GiB)."""
        copy_source = quote(f"{self.config.bucket}/{source}", safe="/-_.~")
        if size <= MAX_COPY:
            response = await self.request("CopyObject", "PUT", target,
                                          headers={"x-amz-copy-source": copy_source})
            assert response is not None
            await self._xml("CopyObject", response)
            return
        upload_id = await self.create_multipart(target)
        try:
            parts = []
            for number, start in enumerate(range(0, size, COPY_PART), 1):
                end = min(start + COPY_PART, size) - 1
                response = await self.request(
                    "UploadPartCopy", "PUT", target,
                    query=f"partNumber={number}&uploadId={quote(upload_id, safe='')}",
                    headers={"x-amz-copy-source": copy_source,
                             "x-amz-copy-source-range": f"bytes={start}-{end}"})
                assert response is not None
                root = await self._xml("UploadPartCopy", response)
                parts.append((number, _text(root, "ETag") or ""))
            await self.complete_multipart(target, upload_id, parts)
        except BaseException:
            await self.abort_multipart(target, upload_id)
            raise

    async def create_multipart(self, key: str) -> str:
        response = await self.request("CreateMultipartUpload", "POST", key, query="uploads")
        assert response is not None
        root = await self._xml("CreateMultipartUpload", response)
        upload_id = _text(root, "UploadId")
        if not upload_id:
            raise S3Error("CreateMultipartUpload", "no UploadId in the answer")
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: IBodyProducer
                          ) -> str:
        """Send one part; its ETag."""
        response = await self.request(
            "UploadPart", "PUT", key, body=body,
            query=f"partNumber={number}&uploadId={quote(upload_id, safe='')}")
        assert response is not None
        await self._drop(response)
        etag = _header(response, b"etag")
        if not etag:
            raise S3Error("UploadPart", "no ETag in the answer")
        return etag

    async def complete_multipart(self, key: str, upload_id: str,
                                 parts: Sequence[tuple[int, str]]) -> None:
        xml = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{_escape(etag)}</ETag></Part>"
                      for n, etag in parts)
        body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
        response = await self.request(
            "CompleteMultipartUpload", "POST", key, body=FileBodyProducer(io.BytesIO(body)),
            query=f"uploadId={quote(upload_id, safe='')}",
            headers={"Content-Type": "application/xml"})
        assert response is not None
        await self._xml("CompleteMultipartUpload", response)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        response = await self.request(
            "AbortMultipartUpload", "DELETE", key, query=f"uploadId={quote(upload_id, safe='')}",
            ok=(200, 204), missing_ok=True)
        if response is not None:
            await self._drop(response)

    async def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under *prefix* (ListObjectsV2, page by page)."""
        found: list[ObjectInfo] = []
        token: str | None = None
        while True:
            query = f"list-type=2&prefix={quote(prefix, safe='')}"
            if token:
                query += f"&continuation-token={quote(token, safe='')}"
            response = await self.request("ListObjectsV2", "GET", "", query=query)
            assert response is not None
            root = await self._xml("ListObjectsV2", response)
            for item in _children(root, "Contents"):
                found.append(ObjectInfo(_text(item, "Key") or "",
                                        int(_text(item, "Size") or 0),
                                        _when(_text(item, "LastModified"))))
            token = _text(root, "NextContinuationToken")
            if _text(root, "IsTruncated") != "true" or not token:
                return found

    async def list_multipart(self, prefix: str) -> list[MultipartInfo]:
        """Multipart uploads in progress under *prefix* (ListMultipartUploads)."""
        found: list[MultipartInfo] = []
        markers = ""
        while True:
            response = await self.request("ListMultipartUploads", "GET", "",
                                          query=f"uploads&prefix={quote(prefix, safe='')}"
                                          + markers)
            assert response is not None
            root = await self._xml("ListMultipartUploads", response)
            for item in _children(root, "Upload"):
                found.append(MultipartInfo(_text(item, "Key") or "",
                                           _text(item, "UploadId") or "",
                                           _when(_text(item, "Initiated"))))
            if _text(root, "IsTruncated") != "true":
                return found
            markers = (f"&key-marker={quote(_text(root, 'NextKeyMarker') or '', safe='')}"
                       f"&upload-id-marker="
                       f"{quote(_text(root, 'NextUploadIdMarker') or '', safe='')}")


class _Collect(Protocol):
    """A response body, whole, up to *limit* bytes (S3's XML answers; ranges we asked for)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            if self.transport is not None:
                self.transport.stopProducing()  # type: ignore[attr-defined]
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if self._size > self._limit:
            self.done.errback(ValueError(f"an answer over {self._limit} bytes"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


async def _nothing() -> None:
    return None


def _parse_xml(body: bytes) -> ElementTree.Element:
    """S3's XML answer. No DTD at all: S3 never sends one, and entities are how XML bombs go."""
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise ElementTree.ParseError("a DTD in an S3 answer")
    return ElementTree.fromstring(body)  # noqa: S314 - no DTD, checked above


def _header(response: IResponse, name: bytes) -> str:
    values: list[bytes] = response.headers.getRawHeaders(name) or [b""]
    return values[0].decode("latin-1")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(root: ElementTree.Element, name: str) -> Iterator[ElementTree.Element]:
    return (child for child in root if _local(child.tag) == name)


def _text(root: ElementTree.Element, name: str) -> str | None:
    for child in _children(root, name):
        return child.text
    return None


def _when(text: str | None) -> datetime.datetime:
    if not text:
        return datetime.datetime.now(datetime.UTC)
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
