"""Typed errors that users cause, and the API's exception handler.

Services raise `ApplicationError` subclasses (or Django's `ValidationError`); the API turns every
error into JSON `{"detail": "<a message a person can act on>", "code": "<machine code>"}` with a
4xx status. Validation errors add `"fields": {field: [messages]}`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, TooManyFieldsSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from inference.errors import InputError, SlideTooLargeError, UnreadableSlideError


class ApplicationError(Exception):
    """An error the user caused; its message is shown to them as is."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code: str = "invalid"

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra: dict[str, Any] = extra or {}


class NotFoundError(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class PermissionDeniedError(ApplicationError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "permission_denied"


class ConflictError(ApplicationError):
    """The request is valid but clashes with the current state of the data."""

    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


logger = logging.getLogger(__name__)

# Connection-level database failures (server restarting, network): retried by the client.
DatabaseUnavailable = (DatabaseOperationalError, InterfaceError)

_INPUT_ERROR_CODES: dict[type[InputError], str] = {
    UnreadableSlideError: "unreadable_slide",
    SlideTooLargeError: "slide_too_large",
}


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    """Turn DRF's nested validation detail into 'field: message' lines."""
    if isinstance(detail, dict):
        lines: list[str] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            lines.extend(_flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name))
        return lines
    if isinstance(detail, list):
        return [line for item in detail for line in _flatten(item, prefix)]
    return [_for_a_person(prefix, detail)]


# DRF's stock phrasing ("Ensure this value is greater than or equal to 1.") rewritten for a
# person, the field named first; messages of our own serializers and services pass unchanged.
_PHRASES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), text)
    for pattern, text in (
        (r"^Ensure this value is greater than or equal to (.+)\.$", "must be at least {0}"),
        (r"^Ensure this value is less than or equal to (.+)\.$", "must be at most {0}"),
        (
            r"^Ensure this field has no more than (\d+) characters\.$",
            "is too long: at most {0} characters",
        ),
        (
            r"^Ensure this field has at least (\d+) characters\.$",
            "is too short: at least {0} characters",
        ),
        (
            r"^Ensure this field has no more than (\d+) elements\.$",
            "has too many items: at most {0}",
        ),
        (r"^This field is required\.$", "is missing"),
        (r"^This field may not be null\.$", "is missing"),
        (r"^This field may not be blank\.$", "is empty"),
        (r"^A valid integer is required\.$", "must be a whole number"),
        (r"^A valid number is required\.$", "must be a number"),
        (r"^Must be a valid boolean\.$", "must be true or false"),
        (r"^Not a valid string\.$", "must be text"),
        (r'^Expected a list of items but got type "(\w+)"\.$', "must be a list, not {0}"),
        (r'^Expected a dictionary of items but got type "(\w+)"\.$', "must be an object, not {0}"),
        (r"^Null characters are not allowed\.$", "contains a NUL character, which is not allowed"),
        (r"^Datetime has wrong format\..*$", "must be a date and time like 2026-12-07T09:30:00Z"),
        (r"^Date has wrong format\..*$", "must be a date like 2026-12-07"),
    )
)


def _for_a_person(field: str, detail: Any) -> str:
    text = str(detail)
    for pattern, phrase in _PHRASES:
        match = pattern.match(text)
        if match:
            said = phrase.format(*match.groups())
            return f"{field.replace('_', ' ') or 'The request'} {said}."
    return f"{field}: {text}" if field else text


def _view_name(context: dict[str, Any]) -> str:
    view = context.get("view")
    return type(view).__name__ if view else "API view"


def error_body(detail: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "code": code, **extra}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_body(exc.message, exc.code, **exc.extra), status=exc.status_code)
    if isinstance(exc, TooManyFieldsSent):
        # Django's DATA_UPLOAD_MAX_NUMBER_FIELDS guard on form bodies: the client's input.
        return Response(
            error_body(
                f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} form fields; "
                "send long lists as JSON.",
                "too_many_fields",
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, InputError):
        set_rollback()
        code = next((c for t, c in _INPUT_ERROR_CODES.items() if isinstance(exc, t)), "bad_input")
        return Response(error_body(str(exc), code), status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, DatabaseUnavailable):
        # The database restarted or is unreachable: nothing of this request was saved (its
        # transaction rolled back). A clear 503 the client may retry, not a 500.
        set_rollback()
        logger.warning("database unavailable in %s: %s", _view_name(context), exc)
        unavailable = Response(
            error_body(
                "The database could not be reached or did not finish (it may be restarting); "
                "your change was not saved. Try again in a few seconds.",
                "database_unavailable",
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
        unavailable["Retry-After"] = "2"
        return unavailable
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(as_serializer_error(exc))
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        if settings.DEBUG:
            return None  # Django's debug page shows the traceback
        view = context.get("view")
        logger.exception("unhandled error in %s", type(view).__name__ if view else "API view")
        set_rollback()
        return Response(
            error_body(
                "Something went wrong on our side; it has been logged. Try again, and tell an "
                "administrator if it keeps happening.",
                "server_error",
            ),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if not isinstance(exc, drf_exceptions.APIException):
        return response

    if isinstance(exc, drf_exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        message = "; ".join(_flatten(exc.detail)) or "Invalid input."
        # the fields and DRF's codes, not the messages: those may repeat what was typed
        logger.info("input refused in %s: %s", _view_name(context), exc.get_codes())
        response.data = error_body(message, "invalid", fields=fields)
    else:
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        response.data = error_body(str(exc.detail), code)
    return response
