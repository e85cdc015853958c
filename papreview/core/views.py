from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

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
