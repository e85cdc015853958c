"""The structured Bethesda report: its vocabulary and validation, the FHIR R4 DiagnosticReport of
GET /api/slides/{id}/report/ (checked with the fhir.resources models), and the printable page."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation

from papreview.cases.models import Interpretation, SlideStatus
from papreview.core.choices import BETHESDA_CLASSES
from papreview.workflow import bethesda
from papreview.workflow.bethesda import general_category, report_clean
from papreview.workflow.fhir import BETHESDA_SYSTEM, LOINC, PATIENT_SYSTEM
from papreview.workflow.models import InterpretationDraft
from tests.factories import PatientFactory, SlideFactory

FULL_REPORT: dict[str, Any] = {
    "transformation_zone": "present",
    "obscuring_factors": ["inflammation", "blood", "blood"],
    "organisms": ["trichomonas"],
    "non_neoplastic": ["squamous_metaplasia", "reactive_inflammation"],
    "glandular": "agc_endocervical",
    "endometrial_cells_45_plus": False,
    "hpv": "positive_16",
    "recommendation": "  Colposcopy and biopsy.\r\nRepeat HPV in 12 months.  ",
}


# --- report_clean ---------------------------------------------------------------------------


def test_report_clean_normalises() -> None:
    cleaned = report_clean(FULL_REPORT)
    assert cleaned == {
        "transformation_zone": "present",
        # vocabulary order, duplicates dropped
        "obscuring_factors": ["blood", "inflammation"],
        "organisms": ["trichomonas"],
        "non_neoplastic": ["reactive_inflammation", "squamous_metaplasia"],
        "glandular": "agc_endocervical",
        # false is "not reported": left out, as are empty values
        "hpv": "positive_16",
        "recommendation": "Colposcopy and biopsy.\nRepeat HPV in 12 months.",
    }
    assert report_clean(None) == {} and report_clean({}) == {}
    assert report_clean({"glandular": "", "organisms": [], "hpv": None}) == {}
    assert report_clean(cleaned) == cleaned  # idempotent


def test_report_clean_keeps_ordinary_unicode() -> None:
    text = "Zoë, ≥ 45 y, 子宮頸部, עברית, tab\there, 🔬"
    assert report_clean({"recommendation": text}) == {"recommendation": text}
    # Composed and decomposed accents are stored the same way (NFC).
    assert report_clean({"recommendation": "Zoe\u0308"}) == {"recommendation": "Zoë"}


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ([1, 2], "report", "object"),
        ({"colour": "blue"}, "report.colour", "Unknown report field"),
        ({"transformation_zone": "maybe"}, "report.transformation_zone", "Choose one of"),
        ({"glandular": "HSIL"}, "report.glandular", "Choose one of"),
        ({"hpv": 16}, "report.hpv", "Choose one of"),
        ({"organisms": "candida"}, "report.organisms", "list of"),
        ({"organisms": ["candida", "ebola"]}, "report.organisms", "'ebola'"),
        ({"non_neoplastic": [None]}, "report.non_neoplastic", "list of"),
        ({"endometrial_cells_45_plus": "yes"}, "report.endometrial_cells_45_plus", "true or"),
        ({"recommendation": 12}, "report.recommendation", "text"),
        ({"recommendation": "x" * 2001}, "report.recommendation", "At most 2000"),
        ({"unsatisfactory_reason": "x" * 501}, "report.unsatisfactory_reason", "At most 500"),
        ({"recommendation": "nul\x00byte"}, "report.recommendation", "U+0000"),
        ({"recommendation": "bell\x07"}, "report.recommendation", "U+0007"),
        ({"recommendation": "half \ud83d pair"}, "report.recommendation", "surrogate"),
    ],
)
def test_report_clean_refuses(data: Any, key: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        report_clean(data)
    errors = caught.value.message_dict
    assert list(errors) == [key]
    assert words in errors[key][0]


def test_general_category() -> None:
    assert general_category("NILM", {}) == "nilm"
    assert general_category("NILM", {"endometrial_cells_45_plus": True}) == "other"
    assert general_category("NILM", {"glandular": "ais"}) == "epithelial_abnormality"
    assert general_category("ASC-US", {"endometrial_cells_45_plus": True}) == (
        "epithelial_abnormality"
    )
    assert list(bethesda.CATEGORIES) == list(BETHESDA_CLASSES)


def test_page_vocabulary_has_every_report_field() -> None:
    vocabulary = bethesda.page_vocabulary()
    for key in (*bethesda.CHOICE_KEYS, *bethesda.LIST_KEYS):
        full = {**bethesda.CHOICE_KEYS, **bethesda.LIST_KEYS}[key]
        # [code, label in the side panel (shorter where a select is narrow), full label]
        assert [[code, label] for code, _, label in vocabulary[key]] == [*map(list, full.items())]
    assert vocabulary["specimen_types"] == [
        ["conventional", "Conventional smear", "Conventional smear"],
        ["liquid_based", "Liquid-based", "Liquid-based preparation"],
    ]
    for key in ("glandular", "hpv", "transformation_zone"):
        assert all(len(short) <= 38 for _, short, _ in vocabulary[key]), key


# --- FHIR -----------------------------------------------------------------------------------


def _signed_out(pathologist, **fields: Any):
    slide = SlideFactory.create(
        patient=PatientFactory.create(identifier="LAB-2024-0042", birth_year=1971),
        status=SlideStatus.SIGNED_OUT,
        triage_class="HSIL",
        triage_score=0.8,
    )
    values = {
        "bethesda_category": "HSIL",
        "specimen_adequacy": "satisfactory",
        "specimen_type": "liquid_based",
        "comment": "Discussed with Dr. Ng.",
        "report": report_clean(FULL_REPORT),
        **fields,
    }
    Interpretation.objects.create(
        slide=slide, signed_out_by=pathologist, signed_out_at=timezone.now(), **values
    )
    return slide


def _observations(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in body["contained"]}


def _code(concept: dict[str, Any]) -> tuple[str, str]:
    (coding,) = concept["coding"]
    return coding["system"], coding["code"]


@pytest.mark.django_db
def test_fhir_report_of_a_signed_out_slide(api, pathologist, viewer) -> None:
    slide = _signed_out(pathologist)
    response = api(viewer).get(f"/api/slides/{slide.pk}/report/")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/fhir+json")
    body = response.json()

    # A valid FHIR DiagnosticReport, every contained Observation too (R4B: the same resources).
    report = DiagnosticReport.model_validate(body)
    for contained in body["contained"]:
        Observation.model_validate(contained)
    assert report.status == "final"

    assert body["resourceType"] == "DiagnosticReport"
    assert _code(body["code"]) == (LOINC, "47527-7")  # liquid-based ("thin prep")
    assert {c["coding"][0]["code"] for c in body["category"]} == {"LAB", "CP"}
    # The patient by the pseudonymous identifier only.
    assert body["subject"] == {
        "type": "Patient",
        "identifier": {"system": PATIENT_SYSTEM, "value": "LAB-2024-0042"},
    }
    assert body["performer"] == [{"display": pathologist.username}]
    assert body["resultsInterpreter"] == [{"display": pathologist.username}]
    assert body["issued"] == body["effectiveDateTime"]
    assert body["conclusionCode"][0]["coding"][0] == {
        "system": BETHESDA_SYSTEM,
        "code": "HSIL",
        "display": "High-grade squamous intraepithelial lesion (HSIL)",
    }
    assert "High-grade squamous intraepithelial lesion" in body["conclusion"]
    assert "Colposcopy and biopsy." in body["conclusion"]

    # Every result points at a contained Observation and every Observation is pointed at.
    observations = _observations(body)
    assert [r["reference"] for r in body["result"]] == [f"#{oid}" for oid in observations]
    assert all(o["status"] == "final" for o in observations.values())

    adequacy = observations["adequacy"]
    assert _code(adequacy["code"]) == (LOINC, "19764-0")
    assert _code(adequacy["valueCodeableConcept"]) == (
        f"{BETHESDA_SYSTEM}/specimen_adequacy",
        "satisfactory",
    )
    assert [_code(c["valueCodeableConcept"])[1] for c in adequacy["component"]] == [
        "present",
        "blood",
        "inflammation",
    ]
    general = observations["general-category"]
    assert _code(general["code"]) == (LOINC, "19762-4")
    assert _code(general["valueCodeableConcept"])[1] == "epithelial_abnormality"
    assert _code(observations["interpretation"]["valueCodeableConcept"]) == (
        BETHESDA_SYSTEM,
        "HSIL",
    )
    assert _code(observations["organisms-trichomonas"]["valueCodeableConcept"]) == (
        f"{BETHESDA_SYSTEM}/organisms",
        "trichomonas",
    )
    assert "non-neoplastic-reactive-inflammation" in observations
    assert "non-neoplastic-squamous-metaplasia" in observations
    glandular = observations["glandular"]["valueCodeableConcept"]["coding"][0]
    assert glandular["code"] == "agc_endocervical"
    assert glandular["display"] == "Atypical endocervical cells, not otherwise specified"
    assert _code(observations["hpv"]["valueCodeableConcept"])[1] == "positive_16"
    assert observations["recommendation"]["valueString"].startswith("Colposcopy")
    assert observations["comment"]["valueString"] == "Discussed with Dr. Ng."
    assert "endometrial-cells" not in observations


@pytest.mark.django_db
def test_fhir_report_conventional_nilm_and_plain_json(api, pathologist) -> None:
    slide = _signed_out(
        pathologist,
        bethesda_category="NILM",
        specimen_type="conventional",
        comment="",
        report={"endometrial_cells_45_plus": True},
    )
    response = api(pathologist).get(
        f"/api/slides/{slide.pk}/report/", HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    DiagnosticReport.model_validate(body)
    assert _code(body["code"]) == (LOINC, "47528-5")
    observations = _observations(body)
    assert _code(observations["general-category"]["valueCodeableConcept"])[1] == "other"
    assert "endometrial-cells" in observations and "comment" not in observations


@pytest.mark.django_db
def test_fhir_report_preliminary_from_the_draft(api, pathologist) -> None:
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    InterpretationDraft.objects.create(
        slide=slide, bethesda_category="LSIL", report={"hpv": "negative"}, updated_by=pathologist
    )
    body = api(pathologist).get(f"/api/slides/{slide.pk}/report/").json()
    DiagnosticReport.model_validate(body)
    assert body["status"] == "preliminary"
    assert all(o["status"] == "preliminary" for o in body["contained"])
    # No preparation recorded: our own code, no LOINC code claims one.
    assert _code(body["code"]) == (BETHESDA_SYSTEM, "cervical_cytology_report")
    assert body["conclusionCode"][0]["coding"][0]["code"] == "LSIL"


@pytest.mark.django_db
def test_fhir_report_without_interpretation_is_409(api, pathologist) -> None:
    slide = SlideFactory.create()
    client = api(pathologist)
    response = client.get(f"/api/slides/{slide.pk}/report/")
    assert response.status_code == 409
    assert response.json()["code"] == "no_interpretation"
    assert "no interpretation yet" in response.json()["detail"]
    # A draft without a category is not a report either.
    InterpretationDraft.objects.create(slide=slide, comment="thinking", updated_by=pathologist)
    assert client.get(f"/api/slides/{slide.pk}/report/").status_code == 409
    assert client.get("/api/slides/999999/report/").status_code == 404
    assert api(None).get(f"/api/slides/{slide.pk}/report/").status_code == 401


# --- the printable page ---------------------------------------------------------------------


@pytest.mark.django_db
def test_report_page(client, pathologist) -> None:
    slide = _signed_out(pathologist)
    client.force_login(pathologist)
    page = client.get(f"/slides/{slide.pk}/report/")
    assert page.status_code == 200
    html = page.content.decode()
    for text in (
        "LAB-2024-0042",
        "1971",
        "Liquid-based preparation",
        "Satisfactory for evaluation",
        "Partially obscuring blood; Partially obscuring inflammation",
        "Epithelial cell abnormality",
        "High-grade squamous intraepithelial lesion (HSIL)",
        "Atypical endocervical cells, not otherwise specified",
        "Trichomonas vaginalis",
        "HPV 16 positive",
        "Colposcopy and biopsy.<br>Repeat HPV in 12 months.",
        f"Electronically signed out by <strong>{pathologist.username}</strong>",
        "assistive only",
    ):
        assert text in html, text
    assert "Preliminary — not signed out" not in html

    empty = SlideFactory.create()
    html = client.get(f"/slides/{empty.pk}/report/").content.decode()
    assert "No interpretation has been chosen" in html
    assert client.get("/slides/999999/report/").status_code == 404


@pytest.mark.django_db
def test_draft_api_keeps_the_structured_report(api, pathologist) -> None:
    """Through the interpretation API: a bad report field is a 400 naming the field, a good one
    is stored in its clean form and is what the FHIR report shows."""
    slide = SlideFactory.create(status=SlideStatus.IN_REVIEW)
    client = api(pathologist)
    url = f"/api/slides/{slide.pk}/interpretation/"
    bad = client.put(url, {"version": 0, "report": {"organisms": ["ebola"]}}, format="json")
    assert bad.status_code == 400
    assert "report.organisms" in bad.json()["fields"]
    assert "'ebola'" in bad.json()["detail"]

    body = {
        "version": 0,
        "bethesda_category": "ASC-US",
        "specimen_type": "conventional",
        "report": {"organisms": ["candida", "trichomonas"], "hpv": "", "glandular": ""},
    }
    saved = client.put(url, body, format="json")
    assert saved.status_code == 200, saved.content
    draft = saved.json()["draft"]
    assert draft["version"] == 1 and draft["updated_by"] == pathologist.username
    assert draft["report"] == {"organisms": ["trichomonas", "candida"]}
    fhir = client.get(f"/api/slides/{slide.pk}/report/").json()
    assert fhir["status"] == "preliminary"
    assert {o["id"] for o in fhir["contained"]} >= {"organisms-trichomonas", "organisms-candida"}
