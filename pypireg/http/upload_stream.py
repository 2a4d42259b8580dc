"""Receiving one upload body: token check first, then stream to a temp file.

HTTP layer, a state machine driven by the request (site.RegistryRequest):

    headers ──► checking token (transport paused) ──► receiving ──► complete
                    │                                   │
                    └──────────► refused ◄──────────────┘

While the Deferred token check runs the transport is paused and the few
bytes already read are held back. A refusal (401/403/404, 413 on a too
large Content-Length or a body that grows past the limit, 400 on a
malformed form) is answered at once, before the rest of the body is read.

No temp file outlives its request: a refusal removes it, and the site
calls `abort()` once the request is over, whether the upload route
committed the file, something else answered, or the connection went away.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypireg.access import Authorizer, Grant
from pypireg.domain.access_policy import Credentials
from pypireg.domain.errors import BadUpload, RegistryError, TooLarge
from pypireg.http.multipart import MAX_FIELD_BYTES, FormReader, boundary_from
from pypireg.storage.blob_backend import BlobBackend, PendingBlob

if TYPE_CHECKING:
    from twisted.internet.interfaces import IPushProducer

_log = Logger()
# Room for the form's text fields and multipart framing on top of the file.
FORM_OVERHEAD = MAX_FIELD_BYTES + 64 * 1024
# Bytes that may arrive between pausing the transport and the token check's
# answer (one read's worth, normally); more is a protocol error.
MAX_HELD_BACK = 1024 * 1024


class State(Enum):
    CHECKING = auto()
    RECEIVING = auto()
    COMPLETE = auto()
    REFUSED = auto()


@dataclass(frozen=True)
class UploadContext:
    authorizer: Authorizer
    blobs: BlobBackend
    max_size: int


@dataclass(frozen=True)
class ReceivedUpload:
    """What the route handler gets once the whole body is on disk."""

    grant: Grant
    fields: dict[str, list[str]]
    filename: str | None
    blob: PendingBlob | None


class UploadReceiver:
    def __init__(
        self,
        context: UploadContext,
        project_ref: str,
        *,
        content_length: int | None,
        content_type: bytes | None,
        credentials: Callable[[], Credentials | None],
        client: str,
        producer: IPushProducer,
        refuse: Callable[[RegistryError], None],
        send_continue: Callable[[], None] | None,
    ) -> None:
        self._context = context
        self._project_ref = project_ref
        self._content_length = content_length
        self._content_type = content_type
        self._credentials = credentials
        self._client = client
        self._producer = producer
        self._refuse = refuse
        self._send_continue = send_continue
        self.state = State.CHECKING
        self.received = 0
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._grant: Grant | None = None
        self._reader: FormReader | None = None
        self._blob: PendingBlob | None = None
        self.error: RegistryError | None = None
        self._checking: Deferred[None] | None = None

    def start(self) -> None:
        """Headers are in: refuse early, or pause and check the token."""
        limit = self._context.max_size + FORM_OVERHEAD
        if self._content_length is not None and self._content_length > limit:
            self._fail(TooLarge(
                f"Upload too large: {self._content_length} bytes; this registry accepts files "
                f"of up to {self._context.max_size} bytes (uploads.max_size)."
            ))
            return
        try:
            boundary = boundary_from(self._content_type)
        except RegistryError as e:
            self._fail(e)
            return
        self._producer.pauseProducing()
        self._checking = Deferred.fromCoroutine(self._check(boundary))
        self._checking.addErrback(self._unexpected)

    async def _check(self, boundary: str) -> None:
        try:
            secret = self._credentials()
            grant = await self._context.authorizer.authorize(
                self._project_ref, secret, "write", self._client)
        except RegistryError as e:
            self._producer.resumeProducing()
            self._fail(e)
            return
        if self.state is State.REFUSED:  # the client went away meanwhile
            return
        self._grant = grant
        self._reader = FormReader(boundary, max_file_size=self._context.max_size,
                                  open_file=self._open_file)
        self.state = State.RECEIVING
        held, self._held = self._held, []
        self._held_bytes = 0
        for chunk in held:
            self._feed(chunk)
        self._producer.resumeProducing()
        if self._send_continue is not None and self.state is State.RECEIVING:
            self._send_continue()

    def _open_file(self, filename: str) -> PendingBlob:
        # twine sends the digest fields before the file: hash only those.
        sent = self._reader.fields if self._reader is not None else {}
        self._blob = self._context.blobs.open_temp(
            self._producer, md5="md5_digest" in sent, blake2="blake2_256_digest" in sent)
        return self._blob

    def data_received(self, data: bytes) -> None:
        """A body chunk; never raises (the channel cannot handle it)."""
        self.received += len(data)
        if self.state is State.CHECKING:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > MAX_HELD_BACK:
                self._fail(BadUpload("Too much data before the token check finished."))
        elif self.state is State.RECEIVING:
            try:
                self._feed(data)
            except Exception:
                # A bug, not the client's doing: refused here rather than by the
                # site's catch-all, so the temp file goes with the refusal.
                self._unexpected(Failure())

    def _feed(self, data: bytes) -> None:
        assert self._reader is not None
        if self._content_length is None and self.received > self._context.max_size + FORM_OVERHEAD:
            self._fail(TooLarge(
                f"Upload too large: this registry accepts files of up to "
                f"{self._context.max_size} bytes (uploads.max_size)."
            ))
            return
        try:
            self._reader.feed(data)
        except RegistryError as e:
            self._fail(e)

    async def finish(self) -> ReceivedUpload:
        """The body is complete: close the form and wait for the file to be on disk."""
        if self.state is State.CHECKING and self._checking is not None:
            # A small body can be complete before the token check answers.
            checked: Deferred[None] = Deferred()

            def passthrough(result: object) -> object:
                checked.callback(None)
                return result

            self._checking.addBoth(passthrough)
            await checked
        if self.error is not None:
            raise self.error
        assert self._reader is not None and self._grant is not None
        try:
            self._reader.close()
        except RegistryError as e:
            await self.abort()
            raise e from None
        self.state = State.COMPLETE
        blob = self._blob
        if blob is not None:
            try:
                await blob.finish()
            except Exception:
                await blob.discard()
                raise
        return ReceivedUpload(self._grant, self._reader.fields, self._reader.filename, blob)

    async def abort(self) -> None:
        """The upload failed or its request is over: drop the temp file.

        The site calls it when the connection goes away and when the answer
        is sent, whatever answered; a no-op for a file that was committed or
        is gone already.
        """
        self.state = State.REFUSED
        if self._blob is not None:
            await self._blob.discard()

    def _fail(self, error: RegistryError) -> None:
        if self.state in (State.REFUSED, State.COMPLETE):
            return
        self.error = error
        self.state = State.REFUSED
        self._held.clear()
        if self._blob is not None:
            Deferred.fromCoroutine(self._blob.discard())
        self._refuse(error)

    def _unexpected(self, failure: Failure) -> None:
        _log.failure("upload to {project} failed", failure, project=self._project_ref)
        self._fail(RegistryError("Internal error while receiving the upload; it was not stored."))
