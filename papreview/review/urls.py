from django.urls import path

from papreview.review.apis import (
    CellDetailApi,
    CellRevisionListApi,
    SlideCellListApi,
    SlideCellsClearApi,
    SlideCellSightingsApi,
)

urlpatterns = [
    path("<int:cell_id>/", CellDetailApi.as_view(), name="cell-detail"),
    path("<int:cell_id>/revisions/", CellRevisionListApi.as_view(), name="cell-revisions"),
]

slide_urlpatterns = [
    path("<int:slide_id>/cells/", SlideCellListApi.as_view(), name="slide-cells"),
    path("<int:slide_id>/cells/clear/", SlideCellsClearApi.as_view(), name="slide-cells-clear"),
    path("<int:slide_id>/sightings/", SlideCellSightingsApi.as_view(), name="slide-cell-sightings"),
]
