"""Image endpoints for the viewer: the Deep Zoom descriptor, its tiles, and cell crops.

They answer images (not JSON) but go through DRF for the same authentication and error handling
as the rest of the API. Slide pixels never change once stored, so tiles are cacheable by the
browser (private: they are patient data); a crop's URL carries the cell's version.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from papreview.audit.services import audit_read
from papreview.core.api import ERROR_RESPONSES
from papreview.core.exceptions import NotFoundError
from papreview.imaging.selectors import (
    TILE_FORMATS,
    TILE_GEOMETRY,
    cell_crop,
    cell_crop_at_magnification,
    deepzoom_dzi,
    deepzoom_tile,
    slide_for_tiles,
)
from papreview.review.selectors import cell_get

# Tiles and crops are patient data: kept by the browser for one working hour at most (private,
# never by a shared cache), and cleared on logout (Clear-Site-Data, papreview.core.headers).
TILE_MAX_AGE = 3600


def _image_response(data: bytes, content_type: str, *, etag: str, max_age: int) -> HttpResponse:
    response = HttpResponse(data, content_type=content_type)
    response["ETag"] = f'"{etag}"'
    patch_cache_control(response, private=True, max_age=max_age)
    if max_age >= TILE_MAX_AGE:
        patch_cache_control(response, immutable=True)
    return response


def _plane(request: Request) -> int:
    """The focal plane asked for (`?z=`, 0 by default); a plane the slide lacks is a 404."""
    raw = request.query_params.get("z", "0")
    if not raw.isdigit() or len(raw) > 3:
        raise NotFoundError(f"No focal plane {raw!r}: z is a plane number (0, 1, ...).")
    return int(raw)


Z_PARAMETER = OpenApiParameter(
    "z",
    {"type": "integer", "minimum": 0, "maximum": 999},
    description="Focal plane of a Z stack (0 by default).",
)


class SlideDeepZoomApi(APIView):
    """The Deep Zoom descriptor (DZI XML) of a slide; tiles are under `deepzoom_files/` (the
    viewer adds the descriptor's `?z=` to every tile, so one plane's tiles come with it)."""

    @extend_schema(
        parameters=[Z_PARAMETER],
        responses={(200, "application/xml"): OpenApiTypes.STR, **ERROR_RESPONSES},
    )
    def get(self, request: Request, slide_id: int) -> HttpResponse:
        slide = slide_for_tiles(slide_id=slide_id)
        plane = _plane(request)
        return _image_response(
            deepzoom_dzi(slide=slide, plane=plane).encode(),
            "application/xml",
            etag=f"{slide.sha256[:32]}-dzi-z{plane}-g{TILE_GEOMETRY}",
            max_age=TILE_MAX_AGE,
        )


class SlideDeepZoomTileApi(APIView):
    """One Deep Zoom tile: level, column and row as in the Deep Zoom file layout."""

    @extend_schema(
        parameters=[Z_PARAMETER],
        responses={
            (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY, description="Tile."),
            **ERROR_RESPONSES,
        },
    )
    def get(
        self, request: Request, slide_id: int, level: int, col: int, row: int, fmt: str
    ) -> HttpResponse:
        if fmt not in TILE_FORMATS:
            raise NotFoundError(f"Tiles are served as {' or '.join(TILE_FORMATS)}, not {fmt}.")
        slide = slide_for_tiles(slide_id=slide_id)  # cached per process: no query
        plane = _plane(request)
        data = deepzoom_tile(slide=slide, level=level, col=col, row=row, fmt=fmt, plane=plane)
        # A viewer asks for hundreds of tiles: the cache answers all but one a minute per slide.
        audit_read(request=request, what="slide_tiles", target=slide)
        return _image_response(
            data,
            TILE_FORMATS[fmt],
            etag=f"{slide.sha256[:32]}-{level}-{col}-{row}-{fmt}-z{plane}-g{TILE_GEOMETRY}",
            max_age=TILE_MAX_AGE,
        )


class CellCropApi(APIView):
    """The cell's box at full resolution (JPEG), with some context around it; or, with `fov`, a
    square crop of `fov` micrometres at `size` px (one physical magnification for a gallery)."""

    class FilterSerializer(serializers.Serializer):
        pad = serializers.IntegerField(required=False, default=16, min_value=0, max_value=512)
        v = serializers.IntegerField(required=False, help_text="Cell version (cache key).")
        fov = serializers.FloatField(
            required=False,
            min_value=5,
            max_value=400,
            help_text="Micrometres across a square crop centred on the cell (with `size`): "
            "every crop at one physical magnification; `pad` is then ignored.",
        )
        size = serializers.IntegerField(required=False, default=160, min_value=32, max_value=512)

        class Meta:
            ref_name = "CellCropFilter"

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            (200, "image/jpeg"): OpenApiResponse(OpenApiTypes.BINARY, description="Crop."),
            **ERROR_RESPONSES,
        },
    )
    def get(self, request: Request, cell_id: int) -> HttpResponse:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        cell = cell_get(cell_id=cell_id)
        slide = slide_for_tiles(slide_id=cell.slide_id)
        pad = filters.validated_data["pad"]
        fov = filters.validated_data.get("fov")
        size = filters.validated_data["size"]
        if fov is not None:
            data = cell_crop_at_magnification(cell=cell, slide=slide, fov_um=fov, size=size)
            variant = f"f{fov:g}-s{size}"
        else:
            data = cell_crop(cell=cell, slide=slide, pad=pad)
            variant = f"p{pad}"
        audit_read(request=request, what="cell_crops", target=slide)  # once a minute per slide
        # The URL names the version when the page asks for it: then the crop never changes.
        versioned = filters.validated_data.get("v") == cell.version
        return _image_response(
            data,
            "image/jpeg",
            etag=f"cell-{cell.pk}-v{cell.version}-{variant}",
            max_age=TILE_MAX_AGE if versioned else 0,
        )
