"""Pages of accounts: signing in (password, code, SSO), two-factor, set-password links, users."""

from django.contrib.auth import views as auth_views
from django.urls import path

from papreview.accounts import oidc, signin, views

urlpatterns = [
    path("accounts/login/", signin.SignInView.as_view(), name="login"),
    path("accounts/login/code/", signin.login_code, name="login-code"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/two-factor/", signin.two_factor_page, name="two-factor"),
    path(
        "accounts/invite/<uidb64>/<token>/",
        signin.SetPasswordView.as_view(kind="invite"),
        name="account-invite",
    ),
    path(
        "accounts/reset/<uidb64>/<token>/",
        signin.SetPasswordView.as_view(kind="reset"),
        name="account-reset",
    ),
    path("accounts/sso/start/", oidc.oidc_authenticate, name="oidc_authentication_init"),
    path("accounts/sso/callback/", oidc.oidc_callback, name="oidc_authentication_callback"),
    path("users/", views.users_page, name="users"),
    path("users/<int:pk>/", views.user_page, name="user-detail"),
]
