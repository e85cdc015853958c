"""API tokens that expire and are revoked when the account changes.

DRF's tokens (one per user, `Authorization: Token <key>`) never expired and outlived a password
change or the loss of every role. Here:

* `ExpiringTokenAuthentication` refuses a token older than API_TOKEN_TTL_S (401, "expired": ask
  for a new one), and deletes it;
* `auth_token_obtain` (services) hands out a fresh token when the old one expired (rotation);
* `api_tokens_revoke` deletes a user's tokens; the signals below call it when the password
  changes, the account is deactivated, or a role is taken away (re-granting needs a new login).

A maintained library (django-rest-knox) would add several tokens per user and hashing; we keep
DRF's single token table (no new dependency, no migration of the clients' header format) and add
the two rules the probe found missing.

Every API call with a token is authenticated by ONE query (token, user and role names joined,
`_token_row`), never cached: a revoked token (deleted row) or a deactivated user fails on the
very next request, in every process. The role names fill the per-request roles cache
(`roles.user_roles`), so the permission checks that follow make no query of their own (a tile
request: this query and the slide's cached facts, issue 15).
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.models.signals import m2m_changed, pre_save
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from papreview.accounts.roles import roles_preload


def token_expired(token: Token) -> bool:
    return token.created < timezone.now() - timedelta(seconds=settings.API_TOKEN_TTL_S)


@functools.cache
def _token_query() -> tuple[str, list[str], list[str]]:
    """The SQL of `_token_row` and the token's and user's field names it selects, made once
    from the models' metadata: the ORM's query building cost about 0.6 ms of a tile request's
    4 ms of CPU (benchmarks/tile_server.py)."""
    qn = connection.ops.quote_name

    def col(model: Any, name: str) -> str:
        column = model._meta.get_field(name).column
        assert column is not None
        return qn(str(column))

    through = User.groups.through
    columns = [f"t.{col(Token, f.name)}" for f in Token._meta.concrete_fields]
    columns += [f"u.{col(User, f.name)}" for f in User._meta.concrete_fields]
    sql = (
        f"SELECT {', '.join(columns)}, g.{col(Group, 'name')}"
        f" FROM {qn(Token._meta.db_table)} t"
        f" JOIN {qn(User._meta.db_table)} u ON u.{col(User, 'id')} = t.{col(Token, 'user')}"
        f" LEFT JOIN {qn(through._meta.db_table)} ug"
        f" ON ug.{col(through, 'user')} = u.{col(User, 'id')}"
        f" LEFT JOIN {qn(Group._meta.db_table)} g"
        f" ON g.{col(Group, 'id')} = ug.{col(through, 'group')}"
        f" WHERE t.{col(Token, 'key')} = %s"
    )
    token_fields = [f.attname for f in Token._meta.concrete_fields]
    return sql, token_fields, [f.attname for f in User._meta.concrete_fields]


def _token_row(key: str) -> tuple[Token, User] | None:
    """The token with its user (roles preloaded) in one query, or None when there is none: one
    row per role (a LEFT JOIN through the user's groups), the user selected alongside."""
    sql, token_fields, user_fields = _token_query()
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        rows = cursor.fetchall()
    if not rows:
        return None
    first = rows[0]
    token = Token.from_db(connection.alias, token_fields, first[: len(token_fields)])
    user = User.from_db(connection.alias, user_fields, first[len(token_fields) : -1])
    token.user = user
    roles_preload(user, {row[-1] for row in rows if row[-1] is not None})
    return token, user


class ExpiringTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        found = _token_row(key)
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        token, user = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if token_expired(token):
            token.delete()
            raise exceptions.AuthenticationFailed(
                "Your API token has expired; ask for a new one (POST /api/auth/token/)."
            )
        return user, token


def api_tokens_revoke(*, user: User) -> int:
    """Delete the user's API tokens (they must ask for a new one). Returns how many."""
    deleted, _per_model = Token.objects.filter(user=user).delete()
    return deleted


def _revoke_on_password_or_deactivation(sender: Any, instance: User, **kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    if instance.pk is None or kwargs.get("raw"):
        return
    if fields is not None and not {"password", "is_active"} & set(fields):
        return  # e.g. last_login at every sign-in
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    if before["password"] != instance.password or (before["is_active"] and not instance.is_active):
        api_tokens_revoke(user=instance)


def _revoke_on_role_removal(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    if action not in ("post_remove", "post_clear"):
        return
    if isinstance(instance, User):
        api_tokens_revoke(user=instance)
    elif isinstance(instance, Group) and kwargs.get("pk_set"):  # users removed from a group
        Token.objects.filter(user_id__in=kwargs["pk_set"]).delete()


def connect_token_revocation() -> None:
    pre_save.connect(
        _revoke_on_password_or_deactivation, sender=User, dispatch_uid="papreview-token-user"
    )
    m2m_changed.connect(
        _revoke_on_role_removal, sender=User.groups.through, dispatch_uid="papreview-token-role"
    )
