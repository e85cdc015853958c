from django.urls import path

from papreview.cases.apis import (
    PatientDetailApi,
    PatientListApi,
    SlideDetailApi,
)

patient_urlpatterns = [
    path("", PatientListApi.as_view(), name="patient-list"),
    path("<int:patient_id>/", PatientDetailApi.as_view(), name="patient-detail"),
]

slide_urlpatterns = [
    path("<int:slide_id>/", SlideDetailApi.as_view(), name="slide-detail"),
]
