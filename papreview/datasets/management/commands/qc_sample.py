"""`manage.py qc_sample`: draw the QC share of the slides signed out since the last draw
(what celery beat does every QC_SAMPLE_INTERVAL_S).

    manage.py qc_sample                 # the share set by an admin (QC settings)
    manage.py qc_sample --share 0.2 --seed 7
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from papreview.datasets.qc import qc_sample


class Command(BaseCommand):
    help = "Draw slides for QC re-review (a random share of those signed out since last time)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--share", type=float, default=None, help="Default: the QC setting.")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        share = options["share"]
        if share is not None and not 0.0 <= share <= 1.0:
            raise CommandError("--share must be between 0 and 1.")
        drawn = qc_sample(share=share, seed=options["seed"])
        self.stdout.write(f"{len(drawn)} slide(s) drawn for QC re-review: "
                          f"{', '.join(str(r.slide_id) for r in drawn) or '-'}")  # fmt: skip
