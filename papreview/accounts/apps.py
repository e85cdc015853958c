from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "papreview.accounts"
    label = "accounts"
    verbose_name = "Accounts and roles"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from papreview.accounts.sessions import connect_session_tracking
        from papreview.accounts.signals import grant_admin_group_permissions
        from papreview.accounts.tokens import connect_token_revocation

        post_migrate.connect(grant_admin_group_permissions, dispatch_uid="papreview-admin-perms")
        connect_token_revocation()
        connect_session_tracking()
