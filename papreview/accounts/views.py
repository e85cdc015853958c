"""The users page (administrators only): the list, invitations, and one page per user with its
roles, deactivation, password reset and two-factor removal. Thin: forms in, services out."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from papreview.accounts import selectors, user_admin
from papreview.accounts.forms import InviteForm, RolesForm
from papreview.accounts.roles import Role, user_is_admin
from papreview.accounts.two_factor import two_factor_reset
from papreview.core.exceptions import ApplicationError

View = Callable[..., HttpResponse]


def admin_required(view: View) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not user_is_admin(request.user):
            raise PermissionDenied("Only administrators manage users.")
        return view(request, *args, **kwargs)

    return wrapped


def _form_errors(form: Any, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


@admin_required
@require_http_methods(["GET", "POST"])
def users_page(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        by = request.user
        assert isinstance(by, User)
        try:
            invited = user_admin.user_invite(**form.cleaned_data, by=by, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(
                request,
                f"Invitation sent to {invited.email}. The link works once and expires; "
                "the account waits for its password until then.",
            )
            return redirect("users")
    search = request.GET.get("q", "").strip()
    status = request.GET.get("status", "")
    users = list(selectors.user_admin_list(search=search, status=status))
    for u in users:
        u.roles = selectors.user_roles_of(u)  # type: ignore[attr-defined]
    return render(
        request,
        "accounts/users.html",
        {
            "users": users,
            "form": form,
            "q": search,
            "status": status,
            "roles": [r.value for r in Role],
            "invite_ttl_days": max(1, settings.ACCOUNT_INVITE_TTL_S // 86400),
        },
        status=400 if request.method == "POST" else 200,
    )


ACTIONS = {"roles", "deactivate", "reactivate", "reset_password", "reset_two_factor"}


@admin_required
@require_http_methods(["GET", "POST"])
def user_page(request: HttpRequest, pk: int) -> HttpResponse:
    account = selectors.user_admin_get(pk=pk)
    if account is None:
        raise Http404("No such user.")
    by = request.user
    assert isinstance(by, User)
    roles_now = selectors.user_roles_of(account)
    form = RolesForm(initial={"roles": [r.value for r in roles_now]})
    if request.method == "POST":
        action = request.POST.get("action", "")
        if action not in ACTIONS:
            return HttpResponse("Unknown action.", status=400)
        if action == "roles":
            form = RolesForm(request.POST)
        try:
            done = _apply(request, action, account=account, by=by, form=form)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            if done:
                messages.success(request, done)
                return redirect("user-detail", pk=account.pk)
        if action != "roles":
            return redirect("user-detail", pk=account.pk)
    return render(
        request,
        "accounts/user_detail.html",
        {
            "account": account,
            "account_roles": roles_now,
            "form": form,
            "events": selectors.user_audit_events(user=account),
            "is_self": account.pk == by.pk,
        },
    )


def _apply(request: HttpRequest, action: str, *, account: User, by: User, form: RolesForm) -> str:
    """Run the action; the message for the administrator ('' when the form has errors)."""
    name = account.username
    if action == "roles":
        if not form.is_valid():
            return ""
        roles = form.cleaned_data["roles"]
        user_admin.user_roles_change(user=account, roles=roles, by=by)
        shown = ", ".join(r.value for r in roles) or "no role"
        return f"{name} now has: {shown}."
    if action == "deactivate":
        ended = user_admin.user_deactivate(user=account, by=by)
        return (
            f"{name} is deactivated: signed out of {ended} session{'s' if ended != 1 else ''}, "
            "API tokens revoked."
        )
    if action == "reactivate":
        user_admin.user_reactivate(user=account, by=by)
        return f"{name} is active again."
    if action == "reset_password":
        user_admin.user_password_reset_force(user=account, by=by, request=request)
        return (
            f"{name}'s password no longer works; a link to choose a new one was sent to "
            f"{account.email}."
        )
    user_admin._check_may_change(user=account, by=by)
    two_factor_reset(user=account)
    return f"{name}'s two-factor sign-in was removed; they set it up again at their next sign-in."
