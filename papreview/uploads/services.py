"""Writes for resumable uploads.

A client announces a file (`upload_create`), then sends it in chunks (`upload_append`), each
at the offset the server holds; after a dropped connection it asks for that offset and goes on
from there. Chunks are streamed to a private temporary file in small pieces, so server memory
does not grow with the chunk or the file. When the last byte is in, the file goes through
`slide_create`, the same checks and creation path as a direct upload (type from the bytes,
pixel limits, duplicate checksum); a refusal is kept on the upload with its message.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import transaction
from django.utils import timezone
from rest_framework import status

from papreview.accounts.roles import user_can_write
from papreview.analysis.services import analysis_request
from papreview.cases.models import Patient, Slide
from papreview.cases.services import slide_create
from papreview.core.exceptions import ApplicationError, ConflictError, PermissionDeniedError
from papreview.core.filenames import hostile_filename_reason
from papreview.uploads.models import Upload, UploadStatus

logger = logging.getLogger(__name__)

# Bytes read from the request and written to disk at a time.
PIECE = 1024 * 1024


class UploadTooLargeError(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "upload_too_large"


class UploadOffsetMismatchError(ConflictError):
    """The chunk does not start where the server's copy ends: resume from `offset`."""

    code = "upload_offset_mismatch"

    def __init__(self, message: str, *, offset: int) -> None:
        super().__init__(message, extra={"offset": offset})
        self.offset = offset


class UploadClosedError(ConflictError):
    code = "upload_closed"


class UploadLostError(ConflictError):
    code = "upload_lost"


class IncompleteChunkError(ApplicationError):
    """The connection ended before the announced chunk length arrived."""

    code = "incomplete_chunk"


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def upload_size_check(filename: str, size: int) -> None:
    """The one upload limit (UPLOAD_MAX_BYTES) of every upload path: 413 above it."""
    if size > settings.UPLOAD_MAX_BYTES:
        raise UploadTooLargeError(
            f"{filename}: {_size_text(size)} is above the upload limit of "
            f"{_size_text(settings.UPLOAD_MAX_BYTES)}."
        )


def _size_text(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB" if size >= 1024**3 else f"{size / 1024**2:.0f} MiB"


def upload_create(*, patient: Patient, filename: str, size: int, by: User) -> Upload:
    if not user_can_write(by):
        raise PermissionDeniedError("Your role can read slides but not upload them.")
    filename = filename.strip()
    if not filename:
        raise ValidationError({"filename": "Give the file's name."})
    reason = hostile_filename_reason(filename)
    if reason is not None:
        raise ValidationError({"filename": reason})
    if size <= 0:
        raise ValidationError({"size": f"{filename}: the file is empty."})
    upload_size_check(filename, size)
    upload = Upload.objects.create(
        patient=patient, filename=filename[:255], size=size, created_by=by
    )
    Path(settings.UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
    upload.part_path.touch()
    return upload


def _fail(upload: Upload, exc: ApplicationError) -> Upload:
    upload.status = UploadStatus.FAILED
    upload.error = exc.message
    upload.error_code = exc.code
    upload.error_status = exc.status_code
    upload.save(update_fields=["status", "error", "error_code", "error_status", "updated_at"])
    upload.part_path.unlink(missing_ok=True)
    # The code, not the message: a message may name the patient (duplicate upload).
    logger.info("upload %s refused: %s", upload.pk, exc.code)
    return upload


def slide_upload(
    *,
    patient: Patient,
    file: File,
    uploaded_by: User | None = None,
    original_filename: str | None = None,
) -> Slide:
    """Store an uploaded slide (`slide_create`: checked, hashed, stored) and queue its analysis in
    the same transaction: the run row now, the job on the broker when it commits (an outbox: if
    the broker is down the slide stays saved and the sweeper sends it)."""
    upload_size_check(original_filename or Path(file.name or "file").name, file.size or 0)
    with transaction.atomic():
        slide = slide_create(
            patient=patient,
            file=file,
            uploaded_by=uploaded_by,
            original_filename=original_filename,
        )
        requested_by = uploaded_by if user_can_write(uploaded_by) else None
        analysis_request(slide=slide, requested_by=requested_by)
    return slide


def _finalise(upload: Upload) -> Upload:
    """Hand the complete file to slide_upload; keep its refusal on the upload."""
    try:
        with upload.part_path.open("rb") as fh:
            slide = slide_upload(
                patient=upload.patient,
                file=File(fh, name=upload.filename),
                uploaded_by=upload.created_by,
                original_filename=upload.filename,
            )
    except ApplicationError as exc:
        return _fail(upload, exc)
    upload.status = UploadStatus.COMPLETE
    upload.slide = slide
    upload.save(update_fields=["status", "slide", "updated_at"])
    upload.part_path.unlink(missing_ok=True)
    return upload


def upload_append(
    *, upload: Upload, offset: int, length: int, stream: Readable, by: User
) -> Upload:
    """Write `length` bytes read from `stream` at `offset`; finalise after the last byte.

    The upload row is locked for the chunk, so two clients cannot interleave. A chunk that does
    not start at the server's offset is refused with that offset (409). If the connection drops
    mid-chunk nothing of that chunk counts: the next chunk at the old offset overwrites it.
    An empty chunk at the end retries the finalisation.
    """
    if length < 0:
        raise ValidationError({"Content-Length": "Send the chunk's length."})
    if length > settings.UPLOAD_CHUNK_MAX_BYTES:
        raise UploadTooLargeError(
            f"Chunks may be at most {settings.UPLOAD_CHUNK_MAX_BYTES // 1024**2} MiB; "
            f"this one is {length / 1024**2:.1f} MiB."
        )
    with transaction.atomic():
        locked = Upload.objects.select_for_update().select_related("patient").get(pk=upload.pk)
        if locked.created_by_id != by.pk:
            raise PermissionDeniedError("This upload was started by another user.")
        if locked.status != UploadStatus.RECEIVING:
            raise UploadClosedError(
                f"{locked.filename}: this upload is already {locked.get_status_display().lower()}."
            )
        if offset != locked.offset:
            raise UploadOffsetMismatchError(
                f"{locked.filename}: the server has {locked.offset} bytes; send the chunk that "
                f"starts there (this one starts at {offset}).",
                offset=locked.offset,
            )
        if offset + length > locked.size:
            raise ValidationError(
                {"Content-Length": f"The chunk ends after the announced size ({locked.size})."}
            )
        if not locked.part_path.exists():
            if locked.offset:
                return _fail(
                    locked,
                    UploadLostError(
                        f"{locked.filename}: the part received so far is no longer on the "
                        "server (expired or cleaned up). Upload the file again."
                    ),
                )
            locked.part_path.parent.mkdir(parents=True, exist_ok=True)
            locked.part_path.touch()
        if length:
            with locked.part_path.open("r+b") as out:
                out.seek(offset)
                out.truncate(offset)
                remaining = length
                while remaining:
                    try:
                        piece = stream.read(min(PIECE, remaining))
                    except OSError:  # the client went away (e.g. gunicorn's NoMoreData)
                        piece = b""
                    if not piece:
                        raise IncompleteChunkError(
                            f"{locked.filename}: the connection ended {remaining} bytes before "
                            "the end of the chunk. Resume the upload."
                        )
                    out.write(piece)
                    remaining -= len(piece)
            locked.offset = offset + length
            locked.updated_at = timezone.now()
            Upload.objects.filter(pk=locked.pk).update(
                offset=locked.offset, updated_at=locked.updated_at
            )
        if locked.offset == locked.size:
            return _finalise(locked)
    return locked


def upload_cancel(*, upload: Upload, by: User) -> None:
    if upload.created_by_id != by.pk:
        raise PermissionDeniedError("This upload was started by another user.")
    upload.part_path.unlink(missing_ok=True)
    if upload.status == UploadStatus.RECEIVING:
        upload.delete()


def uploads_expire(*, older_than: timedelta) -> int:
    """Delete uploads still receiving after `older_than` without a chunk, and their partial
    files; refused or complete uploads older than that lose their row (their file is gone
    already). Returns how many uploads were removed."""
    cutoff = timezone.now() - older_than
    stale = list(Upload.objects.filter(updated_at__lt=cutoff))
    for upload in stale:
        upload.part_path.unlink(missing_ok=True)
    Upload.objects.filter(pk__in=[u.pk for u in stale]).delete()
    if stale:
        logger.info("removed %d uploads idle since before %s", len(stale), cutoff.isoformat())
    return len(stale)
