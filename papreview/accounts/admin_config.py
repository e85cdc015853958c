from django.contrib.admin.apps import AdminConfig


class PapReviewAdminConfig(AdminConfig):
    """Django admin with a site that only the admin role may enter."""

    default_site = "papreview.accounts.admin_site.PapReviewAdminSite"
