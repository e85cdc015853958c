from django.urls import path

from papreview.imaging.apis import CellCropApi, SlideDeepZoomApi, SlideDeepZoomTileApi

# The Deep Zoom layout: <name>.dzi and <name>_files/<level>/<col>_<row>.<format>.
slide_urlpatterns = [
    path("<int:slide_id>/deepzoom.dzi", SlideDeepZoomApi.as_view(), name="slide-deepzoom"),
    path(
        "<int:slide_id>/deepzoom_files/<int:level>/<int:col>_<int:row>.<str:fmt>",
        SlideDeepZoomTileApi.as_view(),
        name="slide-deepzoom-tile",
    ),
]

cell_urlpatterns = [
    path("<int:cell_id>/crop/", CellCropApi.as_view(), name="cell-crop"),
]
