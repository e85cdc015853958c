from django.urls import path

from papreview.workflow.apis import (
    ReviewerListApi,
    SlideAssignApi,
    SlideCellLayerApi,
    SlideInterpretationApi,
    SlideReferApi,
    SlideReopenApi,
    SlideSignOutApi,
)
from papreview.workflow.report_apis import SlideReportApi

slide_urlpatterns = [
    path("<int:slide_id>/cell-layer/", SlideCellLayerApi.as_view(), name="slide-cell-layer"),
    path(
        "<int:slide_id>/interpretation/",
        SlideInterpretationApi.as_view(),
        name="slide-interpretation",
    ),
    path("<int:slide_id>/assign/", SlideAssignApi.as_view(), name="slide-assign"),
    path("<int:slide_id>/refer/", SlideReferApi.as_view(), name="slide-refer"),
    path("<int:slide_id>/sign-out/", SlideSignOutApi.as_view(), name="slide-sign-out"),
    path("<int:slide_id>/reopen/", SlideReopenApi.as_view(), name="slide-reopen"),
    path("<int:slide_id>/report/", SlideReportApi.as_view(), name="slide-report"),
]

reviewer_urlpatterns = [
    path("", ReviewerListApi.as_view(), name="reviewer-list"),
]
