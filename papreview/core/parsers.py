"""A multipart parser that refuses hostile file names (path traversal, bytes that are not
UTF-8, control characters) with a 400, instead of silently reducing them to a base name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from django.http.multipartparser import MultiPartParserError
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from papreview.core.filenames import hostile_filename_reason


class _StrictDjangoMultiPartParser(DjangoMultiPartParser):
    def sanitize_file_name(self, file_name: str) -> str | None:
        # Django decoded the name with errors="replace": undecodable bytes are U+FFFD here.
        reason = hostile_filename_reason(file_name)
        if reason is not None:
            raise MultiPartParserError(reason)
        return super().sanitize_file_name(file_name)


class StrictMultiPartParser(parsers.MultiPartParser):
    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> parsers.DataAndFiles[Any, Any]:
        context = parser_context or {}
        request = context["request"]
        encoding = context.get("encoding", settings.DEFAULT_CHARSET)
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        try:
            parser = _StrictDjangoMultiPartParser(meta, stream, request.upload_handlers, encoding)
            data, files = parser.parse()
        except MultiPartParserError as exc:
            raise ParseError(str(exc)) from exc
        return parsers.DataAndFiles(data, files)
