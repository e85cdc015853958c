from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from papreview.analysis import urls as analysis_urls
from papreview.cases.urls import patient_urlpatterns, slide_urlpatterns
from papreview.core import views as core_views
from papreview.imaging import urls as imaging_urls
from papreview.review import urls as review_urls
from papreview.uploads import urls as upload_urls
from papreview.workflow import urls as workflow_urls

api_urlpatterns: list[URLPattern | URLResolver] = [
    # Tiles first: a viewer asks for hundreds (resolving fewer patterns before them).
    path("slides/", include(imaging_urls.slide_urlpatterns)),
    path("auth/", include("papreview.accounts.urls")),
    path("patients/", include(patient_urlpatterns)),
    path("slides/", include(upload_urls.slide_urlpatterns)),
    path("slides/", include(slide_urlpatterns)),
    path("slides/", include(analysis_urls.slide_urlpatterns)),
    path("slides/", include(review_urls.slide_urlpatterns)),
    path("slides/", include(workflow_urls.slide_urlpatterns)),
    path("cells/", include(review_urls.urlpatterns)),
    path("cells/", include(imaging_urls.cell_urlpatterns)),
    path("uploads/", include(upload_urls.urlpatterns)),
    path("reviewers/", include(workflow_urls.reviewer_urlpatterns)),
    path("", include("papreview.datasets.urls")),  # exports, model dashboard
    path("", include("papreview.registry.urls")),  # model versions, evaluations, retraining
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
]

urlpatterns = [
    path("api/", include(api_urlpatterns)),  # first: the API answers most requests (tiles)
    path("", include("papreview.web.urls")),  # review queue (home), upload, slide review
    path("", include("papreview.datasets.web_urls")),  # exports, dashboard, QC
    path("", include("papreview.registry.web_urls")),  # models: compare, activate, retrain
    path("healthz", core_views.healthz, name="healthz"),
    # Sign-in (password, two-factor code, SSO), set-password links, the users page.
    path("", include("papreview.accounts.web_urls")),
    path("admin/", admin.site.urls),
]

handler404 = "papreview.core.views.not_found"
