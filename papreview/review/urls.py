from django.urls import path

from papreview.review.apis import CellDetailApi, CellRevisionListApi

urlpatterns = [
    path("<int:cell_id>/", CellDetailApi.as_view(), name="cell-detail"),
    path("<int:cell_id>/revisions/", CellRevisionListApi.as_view(), name="cell-revisions"),
]
