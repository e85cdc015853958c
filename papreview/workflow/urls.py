from django.urls import path

from papreview.workflow.apis import (
    ReviewerListApi,
    SlideAssignApi,
    SlideCellLayerApi,
    SlideInterpretationApi,
    SlideReopenApi,
)

slide_urlpatterns = [
    path("<int:slide_id>/cell-layer/", SlideCellLayerApi.as_view(), name="slide-cell-layer"),
    path(
        "<int:slide_id>/interpretation/",
        SlideInterpretationApi.as_view(),
        name="slide-interpretation",
    ),
    # Not /reopen/ (the platform's plain reopen): this one needs a pathologist and a reason.
    path(
        "<int:slide_id>/reopen-with-reason/",
        SlideReopenApi.as_view(),
        name="slide-reopen-with-reason",
    ),
    path("<int:slide_id>/assign/", SlideAssignApi.as_view(), name="slide-assign"),
]

reviewer_urlpatterns = [
    path("", ReviewerListApi.as_view(), name="reviewer-list"),
]
