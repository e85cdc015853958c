"""Forms of the users page and of two-factor sign-in."""

from __future__ import annotations

from typing import Any

from django import forms

from papreview.accounts.roles import Role

ROLE_CHOICES = [
    (Role.VIEWER.value, "Viewer: reads slides and reports, changes nothing"),
    (Role.CYTOTECHNOLOGIST.value, "Cytotechnologist: reviews cells, signs out NILM slides"),
    (Role.PATHOLOGIST.value, "Pathologist: reviews and signs out any slide"),
    (Role.ADMIN.value, "Admin: manages users and models, may do everything"),
]


class RolesField(forms.MultipleChoiceField):
    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=ROLE_CHOICES, **kwargs)

    def clean(self, value: Any) -> list[Role]:
        return [Role(v) for v in super().clean(value)]


class InviteForm(forms.Form):
    email = forms.EmailField(label="Email", max_length=254)
    username = forms.CharField(
        label="Username", max_length=150, required=False, help_text="Empty: the email address."
    )
    first_name = forms.CharField(label="First name", max_length=150, required=False)
    last_name = forms.CharField(label="Last name", max_length=150, required=False)
    roles = RolesField(label="Roles", initial=[Role.VIEWER.value])


class RolesForm(forms.Form):
    roles = RolesField(label="Roles", required=False)


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        help_text="The 6-digit code of your authenticator app, or one of your recovery codes.",
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )
