"""A slide's Bethesda report as a FHIR R4 DiagnosticReport with contained Observations.

Codes, and where they come from:
- LOINC (http://loinc.org), only these: 47528-5 and 47527-7 (the report of a conventional smear /
  a thin-layer liquid-based preparation), 19764-0 (statement of adequacy) and 19762-4 (general
  categories).
- HL7 v2 table 0074 (diagnostic service section): LAB and CP (cytopathology) as the category.
- Everything else is local, ours: `BETHESDA_SYSTEM` codes the squamous result (NILM ... SCC) and
  the report fields an Observation is about (its `code`: "interpretation", "organisms", "hpv",
  ...); each field's values are coded in `BETHESDA_SYSTEM/<field>` with our vocabulary keys as
  codes and the Bethesda 2014 labels as displays (papreview.workflow.bethesda). A value system per
  field because two vocabularies share a key ("other").

The patient is referenced by the pseudonymous identifier only (we hold no names). The report is
built from `slide_report_get`: final once signed out, preliminary from the draft before.
"""

from __future__ import annotations

from typing import Any

from papreview.cases.models import Slide
from papreview.core.exceptions import ConflictError
from papreview.workflow import bethesda
from papreview.workflow.bethesda import SlideReport, slide_report_get

LOINC = "http://loinc.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
BETHESDA_SYSTEM = "https://papreview.example/fhir/CodeSystem/bethesda-2014"
PATIENT_SYSTEM = "https://papreview.example/fhir/NamingSystem/patient-identifier"
SLIDE_SYSTEM = "https://papreview.example/fhir/NamingSystem/slide"

REPORT_CODES: dict[str, tuple[str, str]] = {
    "conventional": (
        "47528-5",
        "Cytology report of Cervical or vaginal smear or scraping Cyto stain",
    ),
    "liquid_based": (
        "47527-7",
        "Cytology report of Cervical or vaginal smear or scraping Cyto stain.thin prep",
    ),
}
ADEQUACY_CODE = (
    "19764-0",
    "Statement of adequacy [Interpretation] of Cervical or vaginal smear or scraping by Cyto stain",
)
GENERAL_CATEGORY_CODE = (
    "19762-4",
    "General categories [Interpretation] of Cervical or vaginal smear or scraping by Cyto stain",
)
# Our codes for what each contained Observation reports (in BETHESDA_SYSTEM).
FIELD_LABELS: dict[str, str] = {
    "interpretation": "Squamous cell interpretation",
    "organisms": "Organisms",
    "non_neoplastic": "Other non-neoplastic findings",
    "glandular": "Glandular cell abnormality",
    "endometrial_cells_45_plus": "Endometrial cells in a woman 45 years or older",
    "hpv": "High-risk HPV test",
    "recommendation": "Recommendation",
    "comment": "Comment",
    "transformation_zone": "Transformation zone component",
    "obscuring_factors": "Quality indicator",
    "unsatisfactory_reason": "Reason the specimen is unsatisfactory",
}


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], "text": display}


def _field(key: str) -> dict[str, Any]:
    return _concept(BETHESDA_SYSTEM, key, FIELD_LABELS[key])


def _value(key: str, code: str, vocabulary: dict[str, str]) -> dict[str, Any]:
    return _concept(f"{BETHESDA_SYSTEM}/{key}", code, vocabulary[code])


def _category_concept(category: str) -> dict[str, Any]:
    return _concept(BETHESDA_SYSTEM, category, bethesda.CATEGORIES[category])


def _observations(rep: SlideReport) -> list[dict[str, Any]]:
    """The contained Observations, without the parts they share (status, subject)."""
    r = rep.report
    adequacy: dict[str, Any] = {
        "code": _concept(LOINC, *ADEQUACY_CODE),
        "valueCodeableConcept": _value(
            "specimen_adequacy", rep.specimen_adequacy, bethesda.ADEQUACY
        ),
    }
    components: list[dict[str, Any]] = []
    if "transformation_zone" in r:
        components.append(
            {
                "code": _field("transformation_zone"),
                "valueCodeableConcept": _value(
                    "transformation_zone", r["transformation_zone"], bethesda.TRANSFORMATION_ZONE
                ),
            }
        )
    for factor in r.get("obscuring_factors", []):
        components.append(
            {
                "code": _field("obscuring_factors"),
                "valueCodeableConcept": _value(
                    "obscuring_factors", factor, bethesda.OBSCURING_FACTORS
                ),
            }
        )
    if "unsatisfactory_reason" in r:
        components.append(
            {"code": _field("unsatisfactory_reason"), "valueString": r["unsatisfactory_reason"]}
        )
    if components:
        adequacy["component"] = components

    general = bethesda.general_category(rep.bethesda_category, r)
    found: list[tuple[str, dict[str, Any]]] = [
        ("adequacy", adequacy),
        (
            "general-category",
            {
                "code": _concept(LOINC, *GENERAL_CATEGORY_CODE),
                "valueCodeableConcept": _value(
                    "general_category", general, bethesda.GENERAL_CATEGORIES
                ),
            },
        ),
        (
            "interpretation",
            {
                "code": _field("interpretation"),
                "valueCodeableConcept": _category_concept(rep.bethesda_category),
            },
        ),
    ]
    for key in ("organisms", "non_neoplastic"):
        for code in r.get(key, []):
            found.append(
                (
                    f"{key.replace('_', '-')}-{code.replace('_', '-')}",
                    {
                        "code": _field(key),
                        "valueCodeableConcept": _value(key, code, bethesda.LIST_KEYS[key]),
                    },
                )
            )
    if "glandular" in r:
        found.append(
            (
                "glandular",
                {
                    "code": _field("glandular"),
                    "valueCodeableConcept": _value("glandular", r["glandular"], bethesda.GLANDULAR),
                },
            )
        )
    if r.get("endometrial_cells_45_plus"):
        found.append(
            (
                "endometrial-cells",
                {
                    "code": _field("endometrial_cells_45_plus"),
                    "valueCodeableConcept": _concept(
                        BETHESDA_SYSTEM,
                        "endometrial_cells_45_plus",
                        bethesda.ENDOMETRIAL_CELLS_LABEL,
                    ),
                },
            )
        )
    if "hpv" in r:
        found.append(
            (
                "hpv",
                {
                    "code": _field("hpv"),
                    "valueCodeableConcept": _value("hpv", r["hpv"], bethesda.HPV),
                },
            )
        )
    if "recommendation" in r:
        found.append(
            (
                "recommendation",
                {"code": _field("recommendation"), "valueString": r["recommendation"]},
            )
        )
    if rep.comment:
        found.append(("comment", {"code": _field("comment"), "valueString": rep.comment}))
    return [{"resourceType": "Observation", "id": oid, **body} for oid, body in found]


def conclusion_text(rep: SlideReport) -> str:
    """The report in one paragraph, as a person would read it out."""
    r = rep.report
    parts = [f"{bethesda.ADEQUACY[rep.specimen_adequacy]}."]
    general = bethesda.general_category(rep.bethesda_category, r)
    parts.append(f"{bethesda.GENERAL_CATEGORIES[general]}.")
    parts.append(f"{bethesda.CATEGORIES[rep.bethesda_category]}.")
    if "glandular" in r:
        parts.append(f"{bethesda.GLANDULAR[r['glandular']]}.")
    parts += [f"{bethesda.ORGANISMS[c]}." for c in r.get("organisms", [])]
    parts += [f"{bethesda.NON_NEOPLASTIC[c]}." for c in r.get("non_neoplastic", [])]
    if r.get("endometrial_cells_45_plus"):
        parts.append(f"{bethesda.ENDOMETRIAL_CELLS_LABEL}.")
    if "hpv" in r:
        parts.append(f"{bethesda.HPV[r['hpv']]}.")
    if "recommendation" in r:
        parts.append(f"Recommendation: {r['recommendation']}")
    return " ".join(parts)


class NoReportError(ConflictError):
    code = "no_interpretation"


def diagnostic_report(slide: Slide) -> dict[str, Any]:
    """The slide's report as a FHIR R4 DiagnosticReport (JSON-ready); NoReportError (409) while
    nobody has chosen a Bethesda category for the slide."""
    rep = slide_report_get(slide=slide)
    if rep is None:
        raise NoReportError(
            f"Slide {slide.pk} has no interpretation yet: choose a Bethesda category in the "
            "interpretation panel (or sign it out) before asking for its report."
        )
    status = "final" if rep.final else "preliminary"
    observations = _observations(rep)
    for observation in observations:
        observation["status"] = status
        observation["subject"] = _patient(slide)
    if rep.specimen_type in REPORT_CODES:
        code = _concept(LOINC, *REPORT_CODES[rep.specimen_type])
    else:  # preparation not recorded: no LOINC code says "either"
        code = _concept(BETHESDA_SYSTEM, "cervical_cytology_report", "Cervical cytology report")
    body: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": f"slide-{slide.pk}",
        "contained": observations,
        "identifier": [{"system": SLIDE_SYSTEM, "value": str(slide.pk)}],
        "status": status,
        "category": [
            {"coding": [_coding(V2_0074, "LAB", "Laboratory")]},
            {"coding": [_coding(V2_0074, "CP", "Cytopathology")]},
        ],
        "code": code,
        "subject": _patient(slide),
        "result": [
            {"reference": f"#{o['id']}", "display": o["code"]["text"]} for o in observations
        ],
        "conclusion": conclusion_text(rep),
        "conclusionCode": [_category_concept(rep.bethesda_category)],
    }
    if rep.at is not None:
        body["effectiveDateTime"] = rep.at.isoformat()
        body["issued"] = rep.at.isoformat()
    if rep.by:
        body["performer"] = [{"display": rep.by}]
        body["resultsInterpreter"] = [{"display": rep.by}]
    return body


def _patient(slide: Slide) -> dict[str, Any]:
    return {
        "type": "Patient",
        "identifier": {"system": PATIENT_SYSTEM, "value": slide.patient.identifier},
    }
