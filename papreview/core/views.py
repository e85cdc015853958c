from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from papreview.cases.models import SlideStatus
from papreview.cases.selectors import slide_list
from papreview.core.health import health_report


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability: 200 when both answer, 503 otherwise. No login needed."""
    ok, report = health_report()
    return JsonResponse(report, status=200 if ok else 503)


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """The review queue in its simplest form: slides waiting for review, most suspicious first."""
    queue = slide_list(
        statuses=[SlideStatus.ANALYSED, SlideStatus.IN_REVIEW], ordering="-triage_score"
    )[:50]
    recent = slide_list(ordering="-created_at")[:20]
    return render(request, "home.html", {"queue": queue, "recent": recent})
