"""Writes for patients and slides (signing out and reopening are papreview.workflow.services)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from inference.errors import SlideTooLargeError, UnreadableSlideError
from inference.slides import probe_slide, slide_file
from inference.types import suspicion
from papreview.audit.models import AuditAction
from papreview.audit.services import audit_record
from papreview.cases.errors import (
    DuplicatePatientError,
    DuplicateSlideError,
    IllegalTransitionError,
    InvalidSlideFileError,
    SlideTooLargeFileError,
)
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.cases.transitions import can_transition
from papreview.core.choices import SEVERITY
from papreview.core.storage import local_path_of

logger = logging.getLogger(__name__)

_MAX_NAME = 150


# --- Patients -------------------------------------------------------------------------------------


@transaction.atomic
def patient_create(
    *,
    identifier: str,
    birth_year: int | None = None,
    notes: str = "",
    created_by: User | None = None,
) -> Patient:
    identifier = identifier.strip()
    if Patient.objects.filter(identifier=identifier).exists():
        raise DuplicatePatientError(
            f"A patient with identifier {identifier!r} already exists. "
            "Open that patient or choose another identifier."
        )
    patient = Patient(
        identifier=identifier, birth_year=birth_year, notes=notes, created_by=created_by
    )
    patient.full_clean(validate_unique=False, validate_constraints=True)
    try:
        with transaction.atomic():
            patient.save()
            audit_record(action=AuditAction.PATIENT_CREATED, actor=created_by, target=patient)
    except IntegrityError as exc:  # a concurrent create of the same identifier
        raise DuplicatePatientError(
            f"A patient with identifier {identifier!r} already exists."
        ) from exc
    return patient


# --- Slides ---------------------------------------------------------------------------------------


def _safe_name(name: str) -> tuple[str, str]:
    """A filesystem-safe version of an uploaded file's name, and its lower-case suffix."""
    base = Path(name.replace("\\", "/")).name
    try:
        safe = get_valid_filename(base)
    except Exception:  # Django refuses names like "..": fall back to a neutral name
        safe = "slide"
    suffix = Path(safe).suffix.lower()[:12]
    stem = Path(safe).stem[: _MAX_NAME - len(suffix)] or "slide"
    return f"{stem}{suffix}", suffix


def _storage_name(safe_name: str) -> str:
    now = timezone.now()
    return f"slides/{now:%Y/%m}/{uuid.uuid4().hex}/{safe_name}"


def _unpack_in_place(stored_name: str) -> None:
    """A zip of DICOM levels stored on local disk is unpacked beside itself now, so that the
    first tile does not wait for it (object storage: on each host's first read)."""
    local = local_path_of(stored_name)
    if local is None:
        return
    try:
        slide_file(local)
    except UnreadableSlideError:  # probed fine a moment ago; the first read will say why
        logger.exception("slide file %s could not be unpacked in place", stored_name)


def _duplicate_message(patient: Patient, existing: Slide) -> str:
    return (
        f"This file was already uploaded for patient {patient.identifier} as slide {existing.pk} "
        f"({existing.original_filename}). Open that slide instead of uploading it again."
    )


def _on_local_disk(file: File) -> Path | None:
    """The upload's own file when it already lies on local disk: Django's temporary upload file,
    or a resumable upload's assembled part file (a File over an open disk file)."""
    if hasattr(file, "temporary_file_path"):
        return Path(file.temporary_file_path())
    inner = getattr(file, "file", None)
    name = getattr(inner, "name", None)
    if isinstance(inner, io.BufferedReader) and isinstance(name, str) and Path(name).is_file():
        return Path(name)
    return None


def _local_copy(file: File, safe_name: str, stack: contextlib.ExitStack) -> tuple[Path, str, int]:
    """A local file with the upload's bytes, its SHA-256 and size. The upload's own file is used
    in place where it is on disk (no second copy, a link in a private temporary folder that
    `stack` removes); else it is streamed into that folder."""
    digest = hashlib.sha256()
    size = 0
    if hasattr(file, "seek"):
        file.seek(0)
    tmp_dir = stack.enter_context(
        tempfile.TemporaryDirectory(prefix="papreview-upload-", dir=settings.FILE_UPLOAD_TEMP_DIR)
    )
    tmp_path = Path(tmp_dir) / safe_name
    in_place = _on_local_disk(file)
    if in_place is not None:  # a link under the upload's name (readers go by its suffix)
        tmp_path.symlink_to(in_place.resolve())
        with in_place.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        return tmp_path, digest.hexdigest(), size
    with tmp_path.open("wb") as out:
        for chunk in file.chunks():
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return tmp_path, digest.hexdigest(), size


def slide_create(
    *,
    patient: Patient,
    file: File,  # an UploadedFile from a request, or any Django File opened for reading
    uploaded_by: User | None = None,
    original_filename: str | None = None,
) -> Slide:
    """Store an uploaded slide after checking it, and create its row (status `uploaded`).

    The upload is read once for its SHA-256 (in place when it is already on local disk, else
    streamed into a private temporary file); the file is then probed from its bytes
    (`inference.slides.probe_slide`: type, dimensions, pixel limit). Only a valid, new file is
    streamed to storage (multipart to object storage); if the row cannot be written the stored
    file is deleted again, so a failure leaves neither an orphan file nor a row.

    Raises InvalidSlideFileError (empty, unreadable, not an image), SlideTooLargeFileError, or
    DuplicateSlideError (the same bytes already uploaded for this patient).

    Nothing is queued here: `papreview.uploads.services.slide_upload` stores and queues.
    """
    name = original_filename or Path(file.name or "").name
    if not name:
        raise InvalidSlideFileError("The upload has no file name. Choose a slide image to upload.")
    safe_name, _suffix = _safe_name(name)

    with contextlib.ExitStack() as stack:
        tmp_path, sha256, size = _local_copy(file, safe_name, stack)
        if size == 0:
            raise InvalidSlideFileError(
                f"{name}: the file is empty. Choose a slide image to upload."
            )

        existing = Slide.objects.filter(patient=patient, sha256=sha256).first()
        if existing is not None:
            raise DuplicateSlideError(_duplicate_message(patient, existing))

        try:
            info = probe_slide(tmp_path, max_pixels=settings.SLIDE_MAX_PIXELS)
        except SlideTooLargeError as exc:
            raise SlideTooLargeFileError(str(exc)) from exc
        except UnreadableSlideError as exc:
            raise InvalidSlideFileError(str(exc)) from exc

        # Streamed from the local file: object storage gets it in parts (S3 multipart upload,
        # AWS_S3_TRANSFER_CONFIG), local storage a copy; nothing is held in memory.
        with tmp_path.open("rb") as fh:
            stored_name = default_storage.save(_storage_name(safe_name), File(fh))

    try:
        with transaction.atomic():
            slide = Slide(
                patient=patient,
                original_filename=name[:255],
                format=info.format[:32],
                kind=info.kind.value,
                width=info.width,
                height=info.height,
                mpp=info.mpp,
                level_count=info.level_count,
                focal_planes=info.planes,
                size_bytes=size,
                sha256=sha256,
                status=SlideStatus.UPLOADED,
                uploaded_by=uploaded_by,
                status_changed_at=timezone.now(),
            )
            slide.file.name = stored_name
            slide.save()
            audit_record(
                action=AuditAction.UPLOAD,
                actor=uploaded_by,
                target=slide,
                data={
                    "format": info.format,
                    "width": info.width,
                    "height": info.height,
                    "size_bytes": size,
                    "sha256": sha256,
                },
            )
    except IntegrityError as exc:
        default_storage.delete(stored_name)
        existing = Slide.objects.filter(patient=patient, sha256=sha256).first()
        if existing is not None:  # a concurrent upload of the same file won the race
            raise DuplicateSlideError(_duplicate_message(patient, existing)) from exc
        raise
    except BaseException:
        default_storage.delete(stored_name)
        raise
    _unpack_in_place(stored_name)  # after the row: a refused upload leaves no folder behind
    # No file names in logs: they often carry the patient's identifier.
    logger.info(
        "slide %s of patient %s stored: %s %dx%d, %d bytes",
        slide.pk,
        patient.pk,
        info.format,
        info.width,
        info.height,
        size,
    )
    return slide


def slide_transition(
    *,
    slide: Slide,
    to: SlideStatus | str,
    reason: str = "",
) -> Slide:
    """Move a slide to another status, or raise IllegalTransitionError.

    The current status is re-read under a row lock, so two workers cannot both move the same
    slide. Moving to `failed` needs a reason; leaving `failed` clears it. The passed instance is
    updated in place and returned.
    """
    target = SlideStatus(to)
    reason = reason.strip()
    if target == SlideStatus.FAILED and not reason:
        raise ValidationError({"reason": "Say why the slide failed."})
    with transaction.atomic():
        locked = Slide.objects.select_for_update().only("pk", "status").get(pk=slide.pk)
        if not can_transition(locked.status, target):
            raise IllegalTransitionError(
                f"Slide {slide.pk} cannot go from {SlideStatus(locked.status).label.lower()!r} to "
                f"{target.label.lower()!r}.",
                current=locked.status,
                requested=target.value,
            )
        now = timezone.now()
        failure_reason = reason if target == SlideStatus.FAILED else ""
        Slide.objects.filter(pk=slide.pk).update(
            status=target, failure_reason=failure_reason, status_changed_at=now, updated_at=now
        )
    slide.status = target
    slide.failure_reason = failure_reason
    slide.status_changed_at = now
    slide.updated_at = now
    return slide


def slide_start_review(*, slide: Slide, by: User) -> Slide:
    """The first review action on an analysed slide moves it to `in_review` and assigns it."""
    if slide.status == SlideStatus.ANALYSED:
        slide_transition(slide=slide, to=SlideStatus.IN_REVIEW)
    if slide.assigned_reviewer_id is None and by.pk:
        Slide.objects.filter(pk=slide.pk, assigned_reviewer__isnull=True).update(
            assigned_reviewer=by
        )
        slide.assigned_reviewer_id = by.pk
    return slide


def triage_score_for(triage_class: str, confidence: float) -> float:
    """Score used to order the review queue: `inference.types.suspicion`, the same suspicion
    the review page ranks cells by."""
    if triage_class not in SEVERITY:
        raise ValidationError({"triage_class": f"Unknown class {triage_class!r}."})
    return suspicion(triage_class, confidence)


def slide_set_triage(*, slide: Slide, triage_class: str, confidence: float) -> Slide:
    """Record the most severe class found on the slide and its confidence."""
    slide.triage_class = triage_class
    slide.triage_score = triage_score_for(triage_class, confidence)
    Slide.objects.filter(pk=slide.pk).update(
        triage_class=slide.triage_class, triage_score=slide.triage_score, updated_at=timezone.now()
    )
    return slide
