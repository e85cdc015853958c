"""What an export is asked for: its parameters and slide filter.

`ExportParams` and `ExportFilters` are the typed, frozen values the services take; their
`__post_init__` holds the limits (the one place they are checked, whoever builds the value).
`ExportParamsSerializer` and `ExportFiltersSerializer` turn JSON-like input into them: nested in
the export API's input, and run by `from_dict` for the dicts that pages, commands and stored
exports pass, so both paths give the same errors under the same field names.
`patient_split` assigns patients to train/val/test; `split_refusal` says why a filter's patients
cannot be split (checked when an export is asked for, and again when it is built).
`PARAM_LIMITS` are the bounds of the numeric parameters: the dataclass checks them and the
Datasets page's form takes its limits from them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import serializers
from rest_framework.settings import api_settings

from inference.types import BETHESDA_CLASSES
from papreview.core.exceptions import ApplicationError

_INT32 = 2**31 - 1  # ids and sizes are 32-bit integers in the database and the old parser

# Bounds (inclusive) of the numeric parameters; the overlap's upper bound depends on the tile
# size (under half a tile) and is checked in ExportParams.
PARAM_LIMITS: dict[str, tuple[float, float]] = {
    "tile_size": (64, 8192),
    "tile_overlap": (0, 8192 // 2 - 1),
    "empty_tile_ratio": (0.0, 1.0),
    "crop_size": (16, 1024),
    "split": (0.0, 1.0),  # each fraction, before the three are normalised by their sum
}
_LIM = PARAM_LIMITS
PARAM_MESSAGES: dict[str, str] = {
    "tile_size": f"Choose a tile size between {_LIM['tile_size'][0]:g} and "
    f"{_LIM['tile_size'][1]:g} px.",
    "tile_overlap": "The overlap must be at least 0 and under half a tile.",
    "empty_tile_ratio": "Choose a share between 0 and 1.",
    "crop_size": f"Choose a crop size between {_LIM['crop_size'][0]:g} and "
    f"{_LIM['crop_size'][1]:g} px.",
    "split": "Give three train/val/test fractions between 0 and 1.",
}
# A split by patient with val and test needs one patient in each, and one for train.
MIN_SPLIT_PATIENTS = 3


class SplitRefusedError(ApplicationError):
    """The filter's patients cannot fill train, val and test (400)."""

    code = "too_few_patients"


def _within(name: str, value: float) -> bool:
    low, high = PARAM_LIMITS[name]
    return low <= value <= high


@dataclass(frozen=True)
class ExportParams:
    tile_size: int = 1024  # YOLO tiles of whole-slide images, level-0 px
    tile_overlap: int = 128
    empty_tile_ratio: float = 0.1  # share of tiles without cells that are kept
    # ImageFolder crops, level-0 px: the classifier's training patch (112 px crop x 1.5 for any
    # rotation + 2 x 16 px centre jitter); smaller crops are padded, never resized, in training.
    crop_size: int = 200
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train/val/test, by patient
    seed: int = 0
    # Undecided predictions in the training formats too, marked `pseudo_label` (off: only what a
    # person decided, plus the undecided cells of NILM sign-outs as NILM).
    include_undecided: bool = False
    # Every patient in train, val and test empty on purpose (e.g. a filter of one or two
    # patients to train on); the split is then recorded as [1, 0, 0].
    train_only: bool = False

    def __post_init__(self) -> None:
        errors: dict[str, str] = {}
        for name in ("tile_size", "empty_tile_ratio", "crop_size"):
            if not _within(name, getattr(self, name)):
                errors[name] = PARAM_MESSAGES[name]
        if not (
            _within("tile_overlap", self.tile_overlap) and self.tile_overlap < self.tile_size // 2
        ):
            errors["tile_overlap"] = PARAM_MESSAGES["tile_overlap"]
        if (
            len(self.split) != 3
            or not all(_within("split", f) for f in self.split)
            or sum(self.split) <= 0
        ):
            errors["split"] = PARAM_MESSAGES["split"]
        elif self.train_only:
            object.__setattr__(self, "split", (1.0, 0.0, 0.0))
        elif self.split[1] <= 0 or self.split[2] <= 0:
            errors["split"] = (
                "Val and test each need a fraction above 0, or the model cannot be checked on "
                "patients it has not seen; ask for a train-only export (train_only) to leave "
                "them empty on purpose."
            )
        if errors:
            raise ValidationError(errors)

    @classmethod
    def from_dict(cls, data: Any) -> ExportParams:
        """Parameters from JSON-like input; wrong names or types are a ValidationError."""
        value: ExportParams = _parse(ExportParamsSerializer, data, group="params")
        return value

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["split"] = list(self.split)
        return d


@dataclass(frozen=True)
class ExportFilters:
    signed_out_from: date | None = None
    signed_out_to: date | None = None
    categories: tuple[str, ...] = ()  # slide interpretation (Bethesda), any when empty
    patients: tuple[str, ...] = ()  # patient identifiers, any when empty
    slide_ids: tuple[int, ...] = ()
    reviewed_by: tuple[int, ...] = field(default=())  # user ids who signed out

    def __post_init__(self) -> None:
        unknown = [c for c in self.categories if c not in BETHESDA_CLASSES]
        if unknown:
            raise ValidationError({"categories": f"Unknown class(es): {', '.join(unknown)}."})
        start, end = self.signed_out_from, self.signed_out_to
        if start and end and start > end:
            raise ValidationError({"signed_out_to": "The end date is before the start date."})

    @classmethod
    def from_dict(cls, data: Any) -> ExportFilters:
        """Filters from JSON-like input; wrong names or types are a ValidationError."""
        value: ExportFilters = _parse(ExportFiltersSerializer, data, group="filters")
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed_out_from": self.signed_out_from.isoformat() if self.signed_out_from else None,
            "signed_out_to": self.signed_out_to.isoformat() if self.signed_out_to else None,
            "categories": list(self.categories),
            "patients": list(self.patients),
            "slide_ids": list(self.slide_ids),
            "reviewed_by": list(self.reviewed_by),
        }


# --------------------------------------------------------------------------------------------
# Serializers: types and names here, limits in the dataclasses above
# --------------------------------------------------------------------------------------------


class _ClosedSerializer(serializers.Serializer):
    """A serializer that refuses names it does not know (DRF ignores them), so that a typo in
    a parameter is an error rather than a silently different export."""

    unknown_message = "Unknown field(s): {names}."

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in data if k not in self.fields)
            if unknown:
                raise serializers.ValidationError(
                    {
                        api_settings.NON_FIELD_ERRORS_KEY: [
                            self.unknown_message.format(names=", ".join(unknown))
                        ]
                    }
                )
        return super().to_internal_value(data)


class ClosedSerializerSchema(OpenApiSerializerExtension):
    """In the API schema, a closed serializer admits no other keys (additionalProperties)."""

    target_class = _ClosedSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> Any:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["additionalProperties"] = False
        return schema


def _whole_number() -> serializers.IntegerField:
    return serializers.IntegerField(required=False, min_value=-_INT32, max_value=_INT32)


def _bounded(name: str, field_class: Any = serializers.IntegerField, **kwargs: Any) -> Any:
    """A number field within PARAM_LIMITS (so the API schema shows them), refused in the same
    words as ExportParams uses."""
    low, high = PARAM_LIMITS[name]
    message = PARAM_MESSAGES[name]
    return field_class(
        min_value=low,
        max_value=high,
        error_messages={"min_value": message, "max_value": message},
        **kwargs,
    )


def _id_list() -> serializers.ListField:
    # Null is an empty list, as it always was.
    return serializers.ListField(child=_whole_number(), required=False, allow_null=True)


class ExportParamsSerializer(_ClosedSerializer):
    """`ExportParams` from JSON; validated_data is the ExportParams value."""

    default_error_messages = {"invalid": "Give the parameters as an object."}
    unknown_message = "Unknown parameter(s): {names}."
    _three = "Give three train/val/test fractions, e.g. [0.7, 0.15, 0.15]."

    tile_size = _bounded("tile_size", required=False)
    tile_overlap = _bounded("tile_overlap", required=False)
    empty_tile_ratio = _bounded("empty_tile_ratio", serializers.FloatField, required=False)
    crop_size = _bounded("crop_size", required=False)
    split = serializers.ListField(
        child=_bounded("split", serializers.FloatField),
        min_length=3,
        max_length=3,
        required=False,
        error_messages={"not_a_list": _three, "min_length": _three, "max_length": _three},
    )
    seed = _whole_number()
    include_undecided = serializers.BooleanField(required=False)
    train_only = serializers.BooleanField(required=False)

    class Meta:
        ref_name = "ExportParams"

    def validate(self, attrs: dict[str, Any]) -> ExportParams:
        if "tile_size" in attrs and "tile_overlap" not in attrs:
            # the default overlap, made to fit a small tile rather than refused for it
            default = ExportParams.tile_overlap
            attrs["tile_overlap"] = max(0, min(default, attrs["tile_size"] // 2 - 1))
        if "split" in attrs:
            attrs["split"] = tuple(attrs["split"])
        return ExportParams(**attrs)


_CLASS_ERRORS: dict[str, Any] = {
    "invalid_choice": "Unknown class {input}; the classes are " + ", ".join(BETHESDA_CLASSES) + "."
}


class ExportFiltersSerializer(_ClosedSerializer):
    """`ExportFilters` from JSON; validated_data is the ExportFilters value."""

    default_error_messages = {"invalid": "Give the filters as an object."}
    unknown_message = "Unknown filter(s): {names}."

    signed_out_from = serializers.DateField(required=False, allow_null=True)
    signed_out_to = serializers.DateField(required=False, allow_null=True)
    categories = serializers.ListField(
        child=serializers.ChoiceField(choices=BETHESDA_CLASSES, error_messages=_CLASS_ERRORS),
        required=False,
        allow_null=True,
    )
    patients = serializers.ListField(child=serializers.CharField(), required=False, allow_null=True)
    slide_ids = _id_list()
    reviewed_by = _id_list()

    class Meta:
        ref_name = "ExportFilters"

    def validate(self, attrs: dict[str, Any]) -> ExportFilters:
        lists = ("categories", "patients", "slide_ids", "reviewed_by")
        values: dict[str, Any] = {k: tuple(v or ()) if k in lists else v for k, v in attrs.items()}
        return ExportFilters(**values)


# Groups whose fields are reported under their own names (as the export page and clients have
# always seen them: "crop_size", not "params.crop_size").
_GROUPS = ("filters", "params")


def export_errors(detail: Mapping[str, Any]) -> dict[str, list[str]]:
    """Serializer errors as {field: [messages]}: the fields of `filters` and `params` under
    their own names, an error about a group as a whole under the group's name."""
    out: dict[str, list[str]] = {}
    for key, value in detail.items():
        if key in _GROUPS and isinstance(value, Mapping):
            for inner, messages in value.items():
                name = key if inner == api_settings.NON_FIELD_ERRORS_KEY else str(inner)
                out.setdefault(name, []).extend(_messages(messages))
        else:
            out.setdefault(str(key), []).extend(_messages(value))
    return out


def _messages(detail: Any) -> list[str]:
    """The messages of a nested error detail (list items' errors come keyed by index)."""
    if isinstance(detail, Mapping):
        return [m for value in detail.values() for m in _messages(value)]
    if isinstance(detail, list):
        return [m for value in detail for m in _messages(value)]
    return [str(detail)]


def _parse(serializer_class: type[serializers.Serializer], data: Any, *, group: str) -> Any:
    serializer = serializer_class(data={} if data is None else data)
    if not serializer.is_valid():
        raise ValidationError(export_errors({group: serializer.errors}))
    return serializer.validated_data


def split_refusal(*, patients: int, params: ExportParams) -> str | None:
    """Why `patients` distinct patients cannot be split as `params` asks (None: they can)."""
    if params.train_only or patients >= MIN_SPLIT_PATIENTS:
        return None
    return (
        f"The filter matches {patients} patient(s); a split by patient into train, val and test "
        f"needs at least {MIN_SPLIT_PATIENTS} (at least one each in val and test, every slide of "
        "a patient in the same split). Widen the filter, or ask for a train-only export "
        "(train_only) to put every patient in train on purpose."
    )


def patient_split(
    identifiers: list[str], *, fractions: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """Patient identifier -> train/val/test; deterministic in `seed`.

    Val and test (when their fraction is not 0) get at least one patient each, and train (when
    its fraction is not 0) keeps at least one; fewer than 3 patients with val and test asked for
    is a SplitRefusedError. Fractions [1, 0, 0] (a train-only export) put everyone in train.
    """
    names = sorted(set(identifiers))
    random.Random(seed).shuffle(names)
    total = sum(fractions)
    n = len(names)
    wants_val, wants_test = fractions[1] > 0, fractions[2] > 0
    if (wants_val or wants_test) and n < MIN_SPLIT_PATIENTS:
        raise SplitRefusedError(
            f"{n} patient(s) cannot be split into train, val and test: at least "
            f"{MIN_SPLIT_PATIENTS} are needed (or a train-only export).",
            extra={"patients": n, "needed": MIN_SPLIT_PATIENTS},
        )
    n_val = max(round(n * fractions[1] / total), 1) if wants_val else 0
    n_test = max(round(n * fractions[2] / total), 1) if wants_test else 0
    room = n - (1 if fractions[0] > 0 and n >= MIN_SPLIT_PATIENTS else 0)
    while n_val + n_test > room:  # rounding up may leave no patient for the others
        if n_test >= n_val and n_test > 1:
            n_test -= 1
        elif n_val > 1:
            n_val -= 1
        else:
            break
    out: dict[str, str] = {}
    for i, name in enumerate(names):
        out[name] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out
