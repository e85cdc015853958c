"""The Bethesda System 2014 vocabulary of the structured report, defined once.

A slide's interpretation keeps the squamous result in `bethesda_category` (NILM ... SCC), the
adequacy in `specimen_adequacy`, the preparation in `specimen_type`, and everything else in its
`report` JSON, whose keys and values are the dictionaries below. `report_clean` is the only way in:
it refuses unknown keys and values with a message a person can act on and stores a normal form
(lists in vocabulary order, no duplicates, empty values left out). The labels are the wording of
Bethesda 2014 (Nayar & Wilbur, 3rd ed.); the printed report, the review page and the FHIR export
all read them from here.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from papreview.cases.models import (
    Interpretation,
    Slide,
    SlideStatus,
    SpecimenAdequacy,
    SpecimenType,
)
from papreview.workflow.models import InterpretationDraft

SPECIMEN_TYPES: dict[str, str] = dict(SpecimenType.choices)
ADEQUACY: dict[str, str] = dict(SpecimenAdequacy.choices)

# The squamous cell result (our `bethesda_category`): NILM or the squamous abnormality.
CATEGORIES: dict[str, str] = {
    "NILM": "Negative for intraepithelial lesion or malignancy",
    "ASC-US": "Atypical squamous cells of undetermined significance (ASC-US)",
    "LSIL": "Low-grade squamous intraepithelial lesion (LSIL)",
    "ASC-H": "Atypical squamous cells, cannot exclude HSIL (ASC-H)",
    "HSIL": "High-grade squamous intraepithelial lesion (HSIL)",
    "SCC": "Squamous cell carcinoma",
}

GENERAL_CATEGORIES: dict[str, str] = {
    "nilm": "Negative for intraepithelial lesion or malignancy",
    "epithelial_abnormality": "Epithelial cell abnormality: see interpretation",
    "other": "Other: see interpretation (endometrial cells in a woman ≥ 45 years)",
}

TRANSFORMATION_ZONE: dict[str, str] = {
    "present": "Endocervical/transformation zone component present",
    "absent": "Endocervical/transformation zone component absent",
    "not_assessable": "Transformation zone component not assessable",
}

# Quality indicators that qualify a satisfactory specimen ("partially obscured by ...").
OBSCURING_FACTORS: dict[str, str] = {
    "blood": "Partially obscuring blood",
    "inflammation": "Partially obscuring inflammation",
    "thick_areas": "Thick areas",
    "air_drying": "Air-drying artefact",
    "other": "Other quality indicator",
}

ORGANISMS: dict[str, str] = {
    "trichomonas": "Trichomonas vaginalis",
    "candida": "Fungal organisms morphologically consistent with Candida spp.",
    "shift_in_flora": "Shift in flora suggestive of bacterial vaginosis",
    "actinomyces": "Bacteria morphologically consistent with Actinomyces spp.",
    "hsv": "Cellular changes consistent with herpes simplex virus",
}

NON_NEOPLASTIC: dict[str, str] = {
    "reactive_inflammation": "Reactive cellular changes associated with inflammation "
    "(includes typical repair)",
    "reactive_radiation": "Reactive cellular changes associated with radiation",
    "reactive_iud": "Reactive cellular changes associated with an intrauterine device (IUD)",
    "atrophy": "Atrophy",
    "glandular_post_hysterectomy": "Glandular cells status post hysterectomy",
    "squamous_metaplasia": "Squamous metaplasia",
    "keratotic_changes": "Keratotic changes",
    "tubal_metaplasia": "Tubal metaplasia",
    "pregnancy_changes": "Pregnancy-associated changes",
}

GLANDULAR: dict[str, str] = {
    "agc_endocervical": "Atypical endocervical cells, not otherwise specified",
    "agc_endometrial": "Atypical endometrial cells, not otherwise specified",
    "agc_nos": "Atypical glandular cells, not otherwise specified",
    "agc_favour_neoplastic_endocervical": "Atypical endocervical cells, favour neoplastic",
    "agc_favour_neoplastic_nos": "Atypical glandular cells, favour neoplastic",
    "ais": "Endocervical adenocarcinoma in situ (AIS)",
    "adenocarcinoma_endocervical": "Adenocarcinoma, endocervical",
    "adenocarcinoma_endometrial": "Adenocarcinoma, endometrial",
    "adenocarcinoma_extrauterine": "Adenocarcinoma, extrauterine",
    "adenocarcinoma_nos": "Adenocarcinoma, not otherwise specified",
}

ENDOMETRIAL_CELLS_LABEL = "Endometrial cells (in a woman ≥ 45 years of age)"

# High-risk HPV testing reported with the cytology (an ancillary test, not a Bethesda category).
HPV: dict[str, str] = {
    "not_done": "HPV test not done",
    "negative": "High-risk HPV negative",
    "positive_16": "HPV 16 positive",
    "positive_18": "HPV 18 positive",
    "positive_16_18": "HPV 16 and HPV 18 positive",
    "positive_other": "Other high-risk HPV positive (not 16/18)",
    "positive_nos": "High-risk HPV positive, genotype not reported",
}

CHOICE_KEYS: dict[str, dict[str, str]] = {
    "transformation_zone": TRANSFORMATION_ZONE,
    "glandular": GLANDULAR,
    "hpv": HPV,
}
LIST_KEYS: dict[str, dict[str, str]] = {
    "obscuring_factors": OBSCURING_FACTORS,
    "organisms": ORGANISMS,
    "non_neoplastic": NON_NEOPLASTIC,
}
TEXT_KEYS: dict[str, int] = {"unsatisfactory_reason": 500, "recommendation": 2000}
BOOL_KEYS: tuple[str, ...] = ("endometrial_cells_45_plus",)
REPORT_KEYS: tuple[str, ...] = (*CHOICE_KEYS, *LIST_KEYS, *TEXT_KEYS, *BOOL_KEYS)

# Line breaks and tabs are text; other control characters are not (PostgreSQL's jsonb refuses
# NUL outright, and the rest would print as nothing or garbage on the report).
_ALLOWED_CONTROLS = frozenset("\n\t")


def _error(key: str, message: str) -> ValidationError:
    return ValidationError({f"report.{key}": message})


def _clean_text(key: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise _error(key, "Must be text.")
    text = unicodedata.normalize("NFC", value.replace("\r\n", "\n").replace("\r", "\n")).strip()
    for char in text:
        if "\ud800" <= char <= "\udfff":
            raise _error(key, "Contains an invalid character (a lone UTF-16 surrogate).")
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            raise _error(key, f"Contains a control character (U+{ord(char):04X}); remove it.")
    if len(text) > limit:
        raise _error(key, f"At most {limit} characters (this has {len(text)}).")
    return text


def _clean_choice(key: str, value: Any, vocabulary: dict[str, str]) -> str:
    if not isinstance(value, str) or (value and value not in vocabulary):
        raise _error(key, f"Choose one of {', '.join(vocabulary)} (or leave it empty).")
    return value


def _clean_list(key: str, value: Any, vocabulary: dict[str, str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _error(key, f"Must be a list of {', '.join(vocabulary)}.")
    unknown = [item for item in value if item not in vocabulary]
    if unknown:
        raise _error(key, f"Unknown {', '.join(map(repr, unknown))}: use {', '.join(vocabulary)}.")
    return [code for code in vocabulary if code in value]  # vocabulary order, no duplicates


def report_clean(data: Any) -> dict[str, Any]:
    """The structured report in its stored form, or a ValidationError keyed `report.<key>`.

    Every key is optional; an empty value ("", [], false, null) is the same as a missing key and
    is left out, so two equal reports are equal dictionaries.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValidationError({"report": "Must be an object of Bethesda report fields."})
    unknown = [str(key) for key in data if key not in REPORT_KEYS]
    if unknown:
        raise ValidationError(
            {
                f"report.{unknown[0]}": f"Unknown report field(s) {', '.join(map(repr, unknown))}; "
                f"the fields are {', '.join(REPORT_KEYS)}."
            }
        )
    report: dict[str, Any] = {}
    for key in REPORT_KEYS:  # one order for the stored form
        value = data.get(key)
        if value is None:
            continue
        cleaned: Any
        if key in CHOICE_KEYS:
            cleaned = _clean_choice(key, value, CHOICE_KEYS[key])
        elif key in LIST_KEYS:
            cleaned = _clean_list(key, value, LIST_KEYS[key])
        elif key in TEXT_KEYS:
            cleaned = _clean_text(key, value, TEXT_KEYS[key])
        else:
            if not isinstance(value, bool):
                raise _error(key, "Must be true or false.")
            cleaned = value
        if cleaned:
            report[key] = cleaned
    return report


def general_category(bethesda_category: str, report: dict[str, Any]) -> str:
    """Bethesda's general categorisation: an epithelial cell abnormality (squamous or glandular)
    outranks "other" (endometrial cells in a woman of 45 or more), which outranks NILM."""
    if (bethesda_category and bethesda_category != "NILM") or report.get("glandular"):
        return "epithelial_abnormality"
    if report.get("endometrial_cells_45_plus"):
        return "other"
    return "nilm"


# Shorter wording where a full label does not fit a select in the review page's side panel
# (the printed report and FHIR always use the full labels).
PANEL_LABELS: dict[str, str] = {
    "conventional": "Conventional smear",
    "liquid_based": "Liquid-based",
    "present": "Present",
    "absent": "Absent",
    "not_assessable": "Not assessable",
    "agc_endocervical": "Atypical endocervical cells, NOS",
    "agc_endometrial": "Atypical endometrial cells, NOS",
    "agc_nos": "Atypical glandular cells, NOS",
    "agc_favour_neoplastic_endocervical": "Atyp. endocervical, favour neoplastic",
    "agc_favour_neoplastic_nos": "Atyp. glandular, favour neoplastic",
    "ais": "Endocervical adenocarcinoma in situ",
    "adenocarcinoma_nos": "Adenocarcinoma, NOS",
    "positive_other": "Other high-risk HPV (not 16/18)",
    "positive_nos": "High-risk HPV, genotype not given",
}


def page_vocabulary() -> dict[str, Any]:
    """The vocabulary for the review page's interpretation panel (its template and script):
    `[code, label in the panel, full label]` per choice."""

    def pairs(vocabulary: dict[str, str]) -> list[list[str]]:
        return [[code, PANEL_LABELS.get(code, label), label] for code, label in vocabulary.items()]

    return {
        "specimen_types": pairs(SPECIMEN_TYPES),
        "categories": CATEGORIES,
        "general_categories": GENERAL_CATEGORIES,
        **{key: pairs(vocabulary) for key, vocabulary in {**CHOICE_KEYS, **LIST_KEYS}.items()},
        "endometrial_cells_45_plus": ENDOMETRIAL_CELLS_LABEL,
        "limits": TEXT_KEYS,
        "list_keys": list(LIST_KEYS),
    }


@dataclass(frozen=True)
class SlideReport:
    """What a slide's report shows: the signed-out interpretation (final), or before sign-out the
    draft being edited (preliminary; the interpretation of a reopened slide when it has none)."""

    final: bool
    bethesda_category: str
    specimen_adequacy: str
    specimen_type: str
    comment: str
    report: dict[str, Any] = field(default_factory=dict)
    by: str = ""  # who signed it out, or who last edited the draft
    at: dt.datetime | None = None  # when


def _report_of(source: Interpretation | InterpretationDraft, *, final: bool) -> SlideReport:
    if isinstance(source, Interpretation):
        by, at = source.signed_out_by.username, source.signed_out_at
    else:
        by, at = (source.updated_by.username if source.updated_by else ""), source.updated_at
    return SlideReport(
        final=final,
        bethesda_category=source.bethesda_category,
        specimen_adequacy=source.specimen_adequacy,
        specimen_type=source.specimen_type,
        comment=source.comment,
        report=dict(source.report or {}),
        by=by,
        at=at,
    )


def slide_report_get(*, slide: Slide) -> SlideReport | None:
    """The slide's report, or None while nobody has chosen a Bethesda category for it."""
    interpretation: Interpretation | None = getattr(slide, "interpretation", None)
    if slide.status == SlideStatus.SIGNED_OUT and interpretation is not None:
        return _report_of(interpretation, final=True)
    draft = InterpretationDraft.objects.select_related("updated_by").filter(slide=slide).first()
    if draft is not None and draft.bethesda_category:
        return _report_of(draft, final=False)
    if interpretation is not None:  # reopened, and the draft was emptied since
        return _report_of(interpretation, final=False)
    return None


def report_labels(rep: SlideReport) -> dict[str, Any]:
    """The report's codes turned into the Bethesda wording, for the printed page."""
    r = rep.report
    return {
        "category": CATEGORIES.get(rep.bethesda_category, rep.bethesda_category),
        "general": GENERAL_CATEGORIES[general_category(rep.bethesda_category, r)],
        "adequacy": ADEQUACY.get(rep.specimen_adequacy, rep.specimen_adequacy),
        "satisfactory": rep.specimen_adequacy == SpecimenAdequacy.SATISFACTORY,
        "specimen_type": SPECIMEN_TYPES.get(rep.specimen_type, ""),
        "transformation_zone": TRANSFORMATION_ZONE.get(r.get("transformation_zone", ""), ""),
        "obscuring_factors": [OBSCURING_FACTORS[c] for c in r.get("obscuring_factors", [])],
        "unsatisfactory_reason": r.get("unsatisfactory_reason", ""),
        "organisms": [ORGANISMS[c] for c in r.get("organisms", [])],
        "non_neoplastic": [NON_NEOPLASTIC[c] for c in r.get("non_neoplastic", [])],
        "glandular": GLANDULAR.get(r.get("glandular", ""), ""),
        "endometrial": ENDOMETRIAL_CELLS_LABEL if r.get("endometrial_cells_45_plus") else "",
        "hpv": HPV.get(r.get("hpv", ""), ""),
        "recommendation": r.get("recommendation", ""),
    }
