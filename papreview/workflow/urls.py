from django.urls import path

from papreview.workflow.apis import (
    ReviewerListApi,
    SlideAssignApi,
    SlideCellLayerApi,
    SlideInterpretationApi,
)

slide_urlpatterns = [
    path("<int:slide_id>/cell-layer/", SlideCellLayerApi.as_view(), name="slide-cell-layer"),
    path(
        "<int:slide_id>/interpretation/",
        SlideInterpretationApi.as_view(),
        name="slide-interpretation",
    ),
    path("<int:slide_id>/assign/", SlideAssignApi.as_view(), name="slide-assign"),
]

reviewer_urlpatterns = [
    path("", ReviewerListApi.as_view(), name="reviewer-list"),
]
