"""The slide status machine: every legal move passes, every other one raises and changes nothing."""

from __future__ import annotations

import itertools

import pytest
from django.core.exceptions import ValidationError

from papreview.cases.errors import IllegalTransitionError
from papreview.cases.models import Slide, SlideStatus
from papreview.cases.services import slide_transition
from papreview.cases.transitions import ALLOWED_TRANSITIONS
from tests.factories import SlideFactory

pytestmark = pytest.mark.django_db

S = SlideStatus
PAIRS = list(itertools.product(S.values, S.values))


def test_the_main_path_is_allowed() -> None:
    path = [S.QUEUED, S.ANALYSING, S.ANALYSED, S.IN_REVIEW, S.SIGNED_OUT]
    slide = SlideFactory.create(status=S.UPLOADED)
    for status in path:
        slide_transition(slide=slide, to=status)
        assert Slide.objects.get(pk=slide.pk).status == status


@pytest.mark.parametrize(("current", "target"), PAIRS)
def test_every_pair(current: str, target: str) -> None:
    reason = "stage 1 crashed" if current == S.FAILED else ""
    slide = SlideFactory.create(status=current, failure_reason=reason)
    if target in ALLOWED_TRANSITIONS[current]:
        slide_transition(slide=slide, to=target, reason="worker lost the file")
        assert Slide.objects.get(pk=slide.pk).status == target
    else:
        with pytest.raises(IllegalTransitionError) as excinfo:
            slide_transition(slide=slide, to=target, reason="x")
        assert excinfo.value.current == current
        assert Slide.objects.get(pk=slide.pk).status == current


def test_illegal_jump_from_uploaded_to_signed_out() -> None:
    slide = SlideFactory.create(status=S.UPLOADED)
    with pytest.raises(IllegalTransitionError, match="cannot go from 'uploaded' to 'signed out'"):
        slide_transition(slide=slide, to=S.SIGNED_OUT)


def test_failed_needs_a_reason_and_leaving_failed_clears_it() -> None:
    slide = SlideFactory.create(status=S.ANALYSING)
    with pytest.raises(ValidationError):
        slide_transition(slide=slide, to=S.FAILED)
    slide_transition(slide=slide, to=S.FAILED, reason="out of memory")
    assert Slide.objects.get(pk=slide.pk).failure_reason == "out of memory"
    slide_transition(slide=slide, to=S.QUEUED)
    fresh = Slide.objects.get(pk=slide.pk)
    assert (fresh.status, fresh.failure_reason) == (S.QUEUED, "")


def test_transition_checks_the_stored_status_not_a_stale_instance() -> None:
    slide = SlideFactory.create(status=S.UPLOADED)
    stale = Slide.objects.get(pk=slide.pk)
    slide_transition(slide=slide, to=S.QUEUED)
    slide_transition(slide=slide, to=S.ANALYSING)
    slide_transition(slide=slide, to=S.ANALYSED)
    with pytest.raises(IllegalTransitionError):
        # uploaded -> failed is legal, but the row says analysed
        slide_transition(slide=stale, to=S.FAILED, reason="bad")
