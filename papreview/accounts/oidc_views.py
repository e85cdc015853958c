"""The OIDC callback view, marking the session as signed in through SSO (see oidc.py)."""

from __future__ import annotations

from django.http import HttpResponse
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView

from papreview.accounts.oidc import SIGNED_IN_VIA_KEY


class SignedInViaCallbackView(OIDCAuthenticationCallbackView):
    def login_success(self) -> HttpResponse:
        response: HttpResponse = super().login_success()
        self.request.session[SIGNED_IN_VIA_KEY] = "oidc"
        return response
