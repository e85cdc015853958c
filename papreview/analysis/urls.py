from django.urls import path

from papreview.analysis.apis import SlideAnalyzeApi, SlideRunListApi, SlideSetAsideApi

# Included under /api/slides/.
slide_urlpatterns = [
    path("<int:slide_id>/analyze/", SlideAnalyzeApi.as_view(), name="slide-analyze"),
    path("<int:slide_id>/runs/", SlideRunListApi.as_view(), name="slide-runs"),
    path("<int:slide_id>/set-aside/", SlideSetAsideApi.as_view(), name="slide-set-aside"),
]
