"""Helpers shared by the API views: pagination and the documented error shape."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.validators import RegexValidator
from django.db.models import Model, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.core.pagination import PageNumberPagination


class StrictCharField(serializers.CharField):
    """A text input that is text: DRF's CharField turns a number into its digits, which hides a
    client's mistake (the schema says string)."""

    default_error_messages = {"invalid": "Give text here, not a number."}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


# Some text that is not all blank, without NUL (in the schema too: PostgreSQL refuses NUL).
NOT_BLANK_PATTERN = r"^[^\x00]*\S[^\x00]*$"


def not_blank_text(name: str, **kwargs: Any) -> StrictCharField:
    """A required text input with something in it: the schema says so (pattern), as the API
    refuses a blank one."""
    return StrictCharField(
        validators=[RegexValidator(NOT_BLANK_PATTERN, f"{name} is empty.")], **kwargs
    )


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, in words a person can act on.")
    code = serializers.CharField(help_text="Machine-readable error code.")

    class Meta:
        ref_name = "Error"

    def get_fields(self) -> dict[str, serializers.Field[Any, Any, Any, Any]]:
        # "fields" cannot be a class attribute: it would hide Serializer.fields.
        fields = super().get_fields()
        fields["fields"] = FieldErrorsField(
            required=False,
            help_text=(
                "Validation errors per input field: a list of messages, or for a list or nested"
                " input the same by position or name."
            ),
        )
        return fields


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "object"}]
        },
    }
)
class FieldErrorsField(serializers.DictField):
    """DRF's errors per field: messages, or nested by position ({"cells": {"0": [...]}})."""


def request_user(request: Request) -> User:
    """The logged-in user of an API request (the permission classes ensure there is one)."""
    user = request.user
    if not isinstance(user, User) or not user.is_authenticated:
        raise NotAuthenticated()
    return user


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


ERROR_RESPONSES: dict[int, OpenApiResponse] = {
    400: _error("Invalid input."),
    401: _error("Not logged in."),
    403: _error("The user's role may not do this."),
    404: _error("Not found."),
    409: _error("Conflicts with the current state (duplicate, illegal status change, ...)."),
}


def paginated_response(
    *,
    queryset: QuerySet[Any],
    serializer_class: type[serializers.BaseSerializer[Any]],
    request: Request,
    view: APIView,
) -> Response:
    paginator_class: type[PageNumberPagination] = (
        getattr(view, "pagination_class", None) or PageNumberPagination
    )
    paginator = paginator_class()
    page: list[Model] | None = paginator.paginate_queryset(queryset, request, view=view)
    if page is None:
        return Response(serializer_class(queryset, many=True).data)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
