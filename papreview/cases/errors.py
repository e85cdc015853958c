"""Errors users cause around patients and slides (turned into 4xx JSON at the API)."""

from __future__ import annotations

from rest_framework import status

from papreview.core.exceptions import ApplicationError, ConflictError, PermissionDeniedError


class DuplicatePatientError(ConflictError):
    code = "duplicate_patient"


class DuplicateSlideError(ConflictError):
    code = "duplicate_slide"


class InvalidSlideFileError(ApplicationError):
    """The upload is missing, empty, not an image we can read, or too large."""

    code = "invalid_slide_file"


class SlideTooLargeFileError(InvalidSlideFileError):
    code = "slide_too_large"
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE


class IllegalTransitionError(ConflictError):
    """A slide status change the state machine does not allow."""

    code = "illegal_transition"

    def __init__(self, message: str, *, current: str, requested: str) -> None:
        super().__init__(message, extra={"current_status": current, "requested_status": requested})
        self.current = current
        self.requested = requested


class SignOutNotAllowedError(PermissionDeniedError):
    code = "sign_out_not_allowed"
