from django.apps import AppConfig


class ReviewConfig(AppConfig):
    name = "papreview.review"
    label = "review"
