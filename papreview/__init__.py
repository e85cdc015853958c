"""PapReview's Django project. Importing it loads the Celery app so that shared tasks bind to it."""

from papreview.celery import celery_app

__all__ = ("celery_app",)
