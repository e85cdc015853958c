"""factory_boy factories for the platform models, and small synthetic images made with Pillow."""

from __future__ import annotations

import hashlib
import io
from typing import Any, cast

import factory
import numpy as np
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from papreview.accounts.roles import Role
from papreview.accounts.services import user_set_roles
from papreview.analysis.models import AnalysisRun, ModelStage, ModelVersion, RunStatus
from papreview.cases.models import Patient, Slide, SlideStatus
from papreview.review.models import Cell, ReviewStatus


def image_bytes(width: int = 64, height: int = 48, *, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A small random RGB image; different seeds give different bytes (and sha256)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def upload(
    name: str = "field.png", content: bytes | None = None, *, seed: int = 0
) -> SimpleUploadedFile:
    data = image_bytes(seed=seed) if content is None else content
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("secret-pass-123")

    @factory.post_generation
    def role(self, create: bool, extracted: Role | None, **kwargs: Any) -> None:
        if create and extracted is not None:
            user_set_roles(user=cast(User, self), roles=[extracted])


class PatientFactory(factory.django.DjangoModelFactory[Patient]):
    class Meta:
        model = Patient

    identifier = factory.Sequence(lambda n: f"P-{n:05d}")
    birth_year = 1980


class SlideFactory(factory.django.DjangoModelFactory[Slide]):
    """A slide row without a stored file, for tests that do not read pixels."""

    class Meta:
        model = Slide

    patient = factory.SubFactory(PatientFactory)
    file = factory.Sequence(lambda n: f"slides/test/slide-{n}.png")
    original_filename = factory.Sequence(lambda n: f"slide-{n}.png")
    format = "png"
    kind = "field"
    width = 2000
    height = 1500
    sha256 = factory.Sequence(lambda n: hashlib.sha256(f"slide-{n}".encode()).hexdigest())
    status = SlideStatus.ANALYSED


class ModelVersionFactory(factory.django.DjangoModelFactory[ModelVersion]):
    class Meta:
        model = ModelVersion

    stage = ModelStage.DETECTOR
    name = factory.Sequence(lambda n: f"v{n}")


class AnalysisRunFactory(factory.django.DjangoModelFactory[AnalysisRun]):
    class Meta:
        model = AnalysisRun

    slide = factory.SubFactory(SlideFactory)
    status = RunStatus.SUCCEEDED
    progress = 100
    device = "cpu"


class CellFactory(factory.django.DjangoModelFactory[Cell]):
    """A predicted cell on an analysed slide."""

    class Meta:
        model = Cell

    slide = factory.SubFactory(SlideFactory)
    run = factory.SubFactory(AnalysisRunFactory, slide=factory.SelfAttribute("..slide"))
    x = 100
    y = 120
    width = 60
    height = 50
    predicted_class = "HSIL"
    current_class = "HSIL"
    probabilities = factory.LazyFunction(lambda: {"NILM": 0.1, "HSIL": 0.9})
    detection_score = 0.8
    review_status = ReviewStatus.PREDICTED
