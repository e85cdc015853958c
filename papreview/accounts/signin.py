"""Signing in: the password, then (when the account has two-factor) the code; setting up
two-factor; choosing a password from an invitation or reset link.

After a right password, an account with two-factor is not signed in yet: its id waits in the
session (PENDING_KEY, for PENDING_TTL_S) until the code is given. A wrong code is a failed login
(audit), so the lockout of papreview.accounts.lockout counts it too.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from papreview.accounts import two_factor as tf
from papreview.accounts.forms import CodeForm
from papreview.accounts.links import invite_tokens, reset_tokens
from papreview.accounts.lockout import LockoutAuthenticationForm, LoginLockedError
from papreview.accounts.oidc import oidc_enabled

PENDING_KEY = "papreview_2fa_pending"
PENDING_TTL_S = 300


@method_decorator(login_not_required, name="dispatch")
class SignInView(auth_views.LoginView):
    authentication_form = LockoutAuthenticationForm
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = oidc_enabled()
        context["oidc_provider"] = settings.OIDC_PROVIDER_NAME
        context["sso_failed"] = self.request.GET.get("sso") == "failed"
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.get_user()
        if not tf.two_factor_enabled(user):
            return super().form_valid(form)
        self.request.session[PENDING_KEY] = {
            "user": user.pk,
            "backend": user.backend,
            "at": time.time(),
            "next": self.get_success_url(),
        }
        return redirect("login-code")


def _pending_user(request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
    pending = request.session.get(PENDING_KEY)
    if not pending or time.time() - pending.get("at", 0) > PENDING_TTL_S:
        return None
    user = User.objects.filter(pk=pending["user"], is_active=True).first()
    return (user, pending) if user is not None else None


@login_not_required
@never_cache
@sensitive_post_parameters("code")
def login_code(request: HttpRequest) -> HttpResponse:
    """The second step of signing in: the authenticator's code or a recovery code."""
    from papreview.accounts.lockout import login_lockout_check
    from papreview.audit.models import AuditAction
    from papreview.audit.services import audit_record

    found = _pending_user(request)
    if found is None and request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    if found is None:
        request.session.pop(PENDING_KEY, None)
        messages.info(request, "Your sign-in took too long: enter your password again.")
        return redirect("login")
    user, pending = found
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            login_lockout_check(username=user.username, request=request)
        except LoginLockedError as exc:
            form.add_error("code", exc.message)
            return render(request, "registration/login_code.html", {"form": form}, status=429)
        device = tf.two_factor_verify(user=user, code=form.cleaned_data["code"])
        if device is not None:
            del request.session[PENDING_KEY]
            login(request, user, backend=pending["backend"])
            otp_login(request, device)
            if not isinstance(device, TOTPDevice):
                left = tf.recovery_codes_left(user)
                messages.warning(
                    request,
                    f"You signed in with a recovery code; {left} left. Make new ones on the "
                    "two-factor page if you are running out.",
                )
            return HttpResponseRedirect(pending["next"])
        audit_record(
            action=AuditAction.LOGIN_FAILED,
            actor=None,
            username=user.username,
            request=request,
            data={"username": user.username, "why": "two_factor_code"},
        )
        form.add_error("code", "That code is not right (or was already used). Try the next one.")
    return render(request, "registration/login_code.html", {"form": form})


@never_cache
@require_http_methods(["GET", "POST"])
def two_factor_page(request: HttpRequest) -> HttpResponse:
    """Set up two-factor (QR code, first code, recovery codes), or see it and make new recovery
    codes; a session that has not given its code yet (signed in elsewhere) gives it here."""
    user = request.user
    assert isinstance(user, User)
    enabled = tf.two_factor_enabled(user)
    form = CodeForm(request.POST or None)
    context: dict[str, Any] = {
        "form": form,
        "enabled": enabled,
        "required": tf.two_factor_required(user),
    }
    action = request.POST.get("action", "")
    if enabled and action == "recovery":
        context["recovery_codes"] = tf.recovery_codes_regenerate(user=user)
        context["recovery_left"] = len(context["recovery_codes"])
        return render(request, "accounts/two_factor.html", context)
    if enabled and not user.is_verified():  # type: ignore[attr-defined]
        if request.method == "POST" and form.is_valid():
            device = tf.two_factor_verify(user=user, code=form.cleaned_data["code"])
            if device is not None:
                otp_login(request, device)
                return redirect("home")
            form.add_error("code", "That code is not right (or was already used).")
        context["verify"] = True
        return render(request, "accounts/two_factor.html", context)
    if enabled:
        context["recovery_left"] = tf.recovery_codes_left(user)
        return render(request, "accounts/two_factor.html", context)
    device = tf.totp_device_pending(user=user)
    if request.method == "POST" and form.is_valid():
        codes = tf.totp_device_confirm(user=user, device=device, code=form.cleaned_data["code"])
        if codes is not None:
            otp_login(request, device)
            context.update(enabled=True, recovery_codes=codes, just_enabled=True)
            return render(request, "accounts/two_factor.html", context)
        form.add_error(
            "code", "That code is not right. Check the time on your phone, then try the next code."
        )
    context.update(qr_svg=tf.totp_qr_svg(device), secret=tf.totp_secret_text(device))
    return render(request, "accounts/two_factor.html", context)


@method_decorator(login_not_required, name="dispatch")
class SetPasswordView(auth_views.PasswordResetConfirmView):
    """Choose a password from an invitation (`kind="invite"`) or reset link: one use, expires."""

    template_name = "registration/set_password.html"
    success_url = reverse_lazy("login")
    kind = "reset"
    http_method_names = ["get", "post"]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_generator = invite_tokens if self.kind == "invite" else reset_tokens
        self.reset_url_token = f"set-password-{self.kind}"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method is None or request.method.lower() not in self.http_method_names:
            return self.http_method_not_allowed(request, *args, **kwargs)
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["kind"] = self.kind
        context["account"] = self.user
        return context

    def form_valid(self, form: Any) -> HttpResponse:
        from papreview.accounts.user_admin import user_password_set

        try:
            user_password_set(
                user=form.user, password=form.cleaned_data["new_password1"], via=self.kind
            )
        except ValidationError as exc:
            form.add_error("new_password1", exc)
            return self.form_invalid(form)
        del self.request.session[auth_views.INTERNAL_RESET_SESSION_TOKEN]
        two_factor_next = tf.two_factor_required(form.user) and not tf.two_factor_enabled(form.user)
        messages.success(
            self.request,
            "Your password is set. Sign in with it"
            + (": you will then set up two-factor sign-in." if two_factor_next else "."),
        )
        return HttpResponseRedirect(self.get_success_url())
