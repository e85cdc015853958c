from django.contrib import admin

from papreview.uploads.models import Upload


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin[Upload]):
    list_display = ("id", "filename", "patient", "status", "offset", "size", "created_by")
    list_filter = ("status",)
    raw_id_fields = ("patient", "slide")
