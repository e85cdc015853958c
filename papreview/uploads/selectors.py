from __future__ import annotations

import uuid

from django.contrib.auth.models import User

from papreview.core.exceptions import NotFoundError
from papreview.uploads.models import Upload


def upload_get(*, upload_id: uuid.UUID, by: User) -> Upload:
    """An upload of this user (others' uploads are not found, whoever asks)."""
    upload = (
        Upload.objects.select_related("patient", "slide")
        .filter(pk=upload_id, created_by=by)
        .first()
    )
    if upload is None:
        raise NotFoundError(f"No upload {upload_id} of yours. Start the upload again.")
    return upload
