"""Settings of the Celery worker subprocesses that the analysis tests start.

The test settings plus what the test process hands over in the environment: the test database
(DATABASE_URL, read by settings.base) and the media folder the test process writes uploads to.
"""

import os
from pathlib import Path

from papreview.settings.test import *  # noqa: F403

MEDIA_ROOT = Path(os.environ["PAPREVIEW_TEST_MEDIA_ROOT"])
