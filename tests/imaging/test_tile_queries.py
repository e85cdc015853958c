"""A tile request costs one query (the token with its user and roles); revocation still holds
at once (issue 15, tile server throughput)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from papreview.accounts.roles import Role, user_roles
from papreview.accounts.tokens import _token_row
from papreview.cases.models import Slide
from papreview.core.exceptions import NotFoundError
from papreview.imaging.selectors import slide_facts_forget, slide_for_tiles


def _tile(client, slide: Slide) -> int:
    return client.get(f"/api/slides/{slide.pk}/deepzoom_files/8/0_0.jpeg").status_code


def test_a_tile_request_makes_one_query_once_the_slide_is_known(
    api, pathologist, stored_slide
) -> None:
    slide = stored_slide(cells=0)
    client = api(pathologist)
    assert _tile(client, slide) == 200  # slide facts read, tile read audited
    with CaptureQueriesContext(connection) as queries:
        assert _tile(client, slide) == 200
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert "authtoken_token" in queries[0]["sql"]


def test_the_token_query_loads_the_user_as_the_orm_does(pathologist) -> None:
    admin_group = Group.objects.get(name=Role.ADMIN.value)
    pathologist.groups.add(admin_group)
    token = Token.objects.create(user=pathologist)
    found = _token_row(token.key)
    assert found is not None
    got_token, user = found
    expected = User.objects.get(pk=pathologist.pk)
    for field in User._meta.concrete_fields:
        assert getattr(user, field.attname) == getattr(expected, field.attname), field.name
    assert got_token.created == Token.objects.get(pk=token.key).created
    assert user_roles(user) == {Role.PATHOLOGIST, Role.ADMIN}  # preloaded: no query
    assert _token_row("0" * 40) is None


def test_revocation_holds_on_the_very_next_tile(api, pathologist, stored_slide) -> None:
    slide = stored_slide(cells=0)
    client = api(pathologist)
    assert _tile(client, slide) == 200
    pathologist.groups.clear()  # the role taken away: tokens revoked
    assert _tile(client, slide) == 401
    client = api(pathologist)  # a new token, but no role
    assert _tile(client, slide) == 403
    pathologist.groups.add(Group.objects.get(name=Role.VIEWER.value))
    pathologist.is_active = False
    pathologist.save()
    assert _tile(client, slide) == 401


def test_slide_facts_are_forgotten_when_the_slide_changes_or_goes(stored_slide) -> None:
    slide = stored_slide(cells=0)
    slide_facts_forget()
    assert slide_for_tiles(slide_id=slide.pk).sha256 == slide.sha256
    slide.mpp = 0.5
    slide.save()
    assert slide_for_tiles(slide_id=slide.pk).mpp == 0.5
    Slide.objects.filter(pk=slide.pk).delete()
    with pytest.raises(NotFoundError):
        slide_for_tiles(slide_id=slide.pk)
