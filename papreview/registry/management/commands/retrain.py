"""`manage.py retrain`: retrain both stages on an export, in this process (what the Models page's
*Retrain* button queues on the `training` queue): fine-tuned from the active versions, calibrated
on the export's validation split, registered (not activated), evaluated beside the active versions
on its test split. Prints the job as JSON; exits with the reason when it fails.

    manage.py retrain --export 12
    manage.py retrain --export 12 --from-scratch --epochs 5
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from papreview.datasets.models import DatasetExport
from papreview.registry.models import RetrainJob, RetrainStatus
from papreview.registry.retrain import retrain_job_run


class Command(BaseCommand):
    help = "Retrain the detector and classifier on an export; register and compare (not activate)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--export", type=int, required=True, help="Id of a ready export.")
        parser.add_argument(
            "--from-scratch",
            action="store_true",
            help="Random initial weights (default: fine-tune the active versions).",
        )
        parser.add_argument("--epochs", type=int, default=None, help="Epochs of both stages.")

    def handle(self, *args: Any, **options: Any) -> None:
        export = DatasetExport.objects.filter(pk=options["export"]).first()
        if export is None:
            raise CommandError(f"No export {options['export']}.")
        if options["epochs"] is not None and options["epochs"] < 1:
            raise CommandError("--epochs must be at least 1.")
        job = RetrainJob.objects.create(
            export=export, from_scratch=options["from_scratch"], epochs=options["epochs"]
        )
        status = retrain_job_run(job_id=job.pk)
        job.refresh_from_db()
        if status != RetrainStatus.DONE:
            raise CommandError(f"retrain job {job.pk} failed: {job.error}")
        self.stdout.write(
            json.dumps(
                {
                    "job": job.pk,
                    "status": job.status,
                    "detector": job.new_detector.name if job.new_detector else None,
                    "classifier": job.new_classifier.name if job.new_classifier else None,
                    "comparison": job.comparison,
                },
                indent=2,
            )
        )
