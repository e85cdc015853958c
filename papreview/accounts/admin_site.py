from django.contrib import admin
from django.http import HttpRequest

from papreview.accounts.lockout import LockoutAdminAuthenticationForm
from papreview.accounts.roles import user_is_admin


class PapReviewAdminSite(admin.AdminSite):
    site_header = "PapReview administration"
    site_title = "PapReview admin"
    index_title = "Users, roles, patients, slides and model versions"
    login_form = LockoutAdminAuthenticationForm  # same lockout as the login page

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(user.is_active and user.is_staff and user_is_admin(user))
