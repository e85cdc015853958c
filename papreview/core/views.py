from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from django.views.defaults import page_not_found

from papreview.core.health import health_report


@login_not_required
@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability: 200 when both answer, 503 otherwise. No login needed;
    only staff see the details (vendor, broker, timings, errors): they name internal hosts."""
    ok, report = health_report()
    if not _is_staff(request):
        report = {"status": report["status"]}
    return JsonResponse(report, status=200 if ok else 503)


def _is_staff(request: HttpRequest) -> bool:
    try:
        return bool(request.user.is_authenticated and request.user.is_staff)
    except DatabaseError:  # the database is down: nobody can be recognised
        return False


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """An address nothing answers: JSON under /api/ (what an API client reads, as the API's
    own 404s), the site's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"detail": f"Nothing in the API answers at {request.path}.", "code": "not_found"},
            status=404,
        )
    return page_not_found(request, exception or Http404())
