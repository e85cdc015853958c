from django.apps import AppConfig


class WorkflowConfig(AppConfig):
    name = "papreview.workflow"
    verbose_name = "Review workflow (queue, assignment, interpretation drafts, reopen)"
