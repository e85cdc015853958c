"""The slide's Bethesda report for other systems: a FHIR R4 DiagnosticReport (see
papreview.workflow.fhir). The printable page of the same report is
`papreview.web.views.slide_report`."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from papreview.audit.services import audit_slide_opened
from papreview.cases.selectors import slide_get
from papreview.core.api import ERROR_RESPONSES
from papreview.workflow.fhir import diagnostic_report


class FhirJsonRenderer(JSONRenderer):
    """FHIR's own JSON media type (what a FHIR client asks for); plain JSON stays available."""

    media_type = "application/fhir+json"
    format = "fhir"


class SlideReportApi(APIView):
    """The slide's Bethesda 2014 report as a FHIR R4 `DiagnosticReport` with contained
    Observations: `final` once signed out, `preliminary` from the draft before. 409 while the
    slide has no Bethesda category chosen. Answers `application/fhir+json` (or `application/json`
    when asked for)."""

    renderer_classes = [FhirJsonRenderer, JSONRenderer]

    @extend_schema(
        responses={
            200: OpenApiResponse(
                response=OpenApiTypes.OBJECT, description="FHIR R4 DiagnosticReport (JSON)."
            ),
            **ERROR_RESPONSES,
        }
    )
    def get(self, request: Request, slide_id: int) -> Response:
        slide = slide_get(slide_id=slide_id)
        body = diagnostic_report(slide)
        # Reading a report is reading the patient's result: in the audit trail like opening it.
        audit_slide_opened(slide=slide, user=request.user, via="fhir_report")
        return Response(body)
