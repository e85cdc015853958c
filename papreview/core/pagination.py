from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request


class PageNumberPagination(pagination.PageNumberPagination):
    """`?page=N&page_size=M`; lists answer {count, next, previous, results}."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Request) -> int | None:
        # DRF falls back to the default for a page size it cannot read; say so instead.
        asked = request.query_params.get(self.page_size_query_param, "")
        if asked and not (asked.isdigit() and int(asked) >= 1):
            raise ValidationError({"page_size": ["Give the page size as a whole number from 1."]})
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:  # pages and sizes count from 1
            parameter["schema"]["minimum"] = 1
        return parameters
