from django.urls import path

from papreview.cases.apis import (
    PatientDetailApi,
    PatientListApi,
    SlideDetailApi,
    SlideListApi,
    SlideReopenApi,
    SlideSignOutApi,
)
from papreview.review.apis import SlideCellListApi

patient_urlpatterns = [
    path("", PatientListApi.as_view(), name="patient-list"),
    path("<int:patient_id>/", PatientDetailApi.as_view(), name="patient-detail"),
]

slide_urlpatterns = [
    path("", SlideListApi.as_view(), name="slide-list"),
    path("<int:slide_id>/", SlideDetailApi.as_view(), name="slide-detail"),
    path("<int:slide_id>/cells/", SlideCellListApi.as_view(), name="slide-cells"),
    path("<int:slide_id>/sign-out/", SlideSignOutApi.as_view(), name="slide-sign-out"),
    path("<int:slide_id>/reopen/", SlideReopenApi.as_view(), name="slide-reopen"),
]
