"""The slide filters, parsed once (django-filter) for the API's slide list and the queue page.

- `status`: one status, a comma-separated list (API), `open` (everything not signed out: the
  queue's default) or `all`;
- `patient` (id), `q` (part of the patient identifier), `triage_class` (most severe AI class),
  `mine` (assigned to the user asking), `date_from` / `date_to` (upload day, inclusive);
- `ordering`: one of SLIDE_ORDERINGS.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db.models import QuerySet

from papreview.cases.models import Slide, SlideStatus
from papreview.cases.selectors import SLIDE_ORDERINGS
from papreview.core.choices import BETHESDA_CHOICES

OPEN = "open"
ALL = "all"
OPEN_STATUSES: tuple[str, ...] = tuple(s for s in SlideStatus.values if s != SlideStatus.SIGNED_OUT)
STATUS_CHOICES = [(OPEN, "Not signed out"), (ALL, "All"), *SlideStatus.choices]


class StatusField(forms.CharField):
    """`open`, `all`, or comma-separated statuses -> the list of statuses to show ([] = all)."""

    widget = forms.Select(choices=STATUS_CHOICES)

    def clean(self, value: Any) -> list[str] | None:
        text = super().clean(value)
        if not text:
            return None
        if text == OPEN:
            return list(OPEN_STATUSES)
        if text == ALL:
            return []
        statuses = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in statuses if s not in SlideStatus.values]
        if unknown:
            raise forms.ValidationError(
                f"Unknown status {', '.join(unknown)}; use {', '.join(SlideStatus.values)}, "
                f"{OPEN} or {ALL}."
            )
        return statuses


class CheckboxOrBoolean(forms.CheckboxInput):
    """A checkbox on the queue page ("on"), true/false (or 1/0) in the API; any other value is
    passed on as it came, for the field to refuse (a checkbox would read it as ticked)."""

    READS = {"true": True, "on": True, "1": True, "false": False, "0": False, "": False}

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        raw = data.get(name)
        if raw is None:
            return False
        return self.READS.get(str(raw).lower(), raw)


class StrictBooleanField(forms.NullBooleanField):
    widget = CheckboxOrBoolean

    def to_python(self, value: Any) -> bool | None:  # type: ignore[override]  # None: not given
        if value is None or isinstance(value, bool):
            return value
        raise forms.ValidationError("Give true or false.", code="invalid")

    def validate(self, value: Any) -> None:
        pass


class StrictBooleanFilter(django_filters.BooleanFilter):
    field_class = StrictBooleanField


class StatusFilter(django_filters.Filter):
    field_class = StatusField

    def filter(self, qs: QuerySet[Slide], value: list[str] | None) -> QuerySet[Slide]:
        return qs if not value else qs.filter(status__in=value)


class SlideFilter(django_filters.FilterSet):
    status = StatusFilter(label="Status", help_text="open, all, or comma-separated statuses.")
    patient = django_filters.NumberFilter(field_name="patient_id", min_value=1)
    q = django_filters.CharFilter(
        field_name="patient__identifier", lookup_expr="icontains", label="Patient", max_length=64
    )
    triage_class = django_filters.ChoiceFilter(
        choices=BETHESDA_CHOICES, empty_label="Any class", label="Most severe class"
    )
    mine = StrictBooleanFilter(method="filter_mine", label="Assigned to me")
    date_from = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__gte", label="From"
    )
    date_to = django_filters.DateFilter(
        field_name="created_at", lookup_expr="date__lte", label="To"
    )
    ordering = django_filters.ChoiceFilter(
        choices=[(o, o) for o in sorted(SLIDE_ORDERINGS)],
        method="filter_ordering",
        empty_label=None,
    )

    class Meta:
        model = Slide
        fields: list[str] = []

    def filter_mine(self, qs: QuerySet[Slide], name: str, value: bool | None) -> QuerySet[Slide]:
        user = getattr(self.request, "user", None)
        if not value or user is None or not user.is_authenticated:
            return qs
        return qs.filter(assigned_reviewer=user)

    def filter_ordering(self, qs: QuerySet[Slide], name: str, value: str) -> QuerySet[Slide]:
        return qs.order_by(*SLIDE_ORDERINGS[value]) if value else qs
