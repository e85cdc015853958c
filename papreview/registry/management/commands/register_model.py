"""`manage.py register_model`: record a trained checkpoint as a ModelVersion.

    python -m inference train-classifier --data EXPORT_DIR --out runs/cls-new
    manage.py register_model runs/cls-new/classifier.pt               # stage read from the file
    manage.py register_model runs/det-new/detector.pt --export 7 --activate

The weights are copied to media storage with their sha256; the checkpoint's metrics and its
training data (the export it names, or --export) are recorded. Registering the same checkpoint
again returns the same version. --activate makes it the active version of its stage (new
analyses use it; finished runs keep their versions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from inference.checkpoints import load_checkpoint
from inference.errors import CheckpointError, InputError
from papreview.analysis.models import ModelStage
from papreview.datasets.models import DatasetExport
from papreview.registry.services import model_version_register_checkpoint


def checkpoint_stage(path: Path) -> str:
    """The stage of a checkpoint file (CheckpointError when it is neither)."""
    errors = []
    for stage in ModelStage.values:
        try:
            load_checkpoint(path, stage=stage)
            return str(stage)
        except CheckpointError as exc:
            errors.append(str(exc))
    raise CheckpointError(errors[-1] if errors else f"{path}: not a checkpoint")


class Command(BaseCommand):
    help = "Register a trained checkpoint as a model version (sha256, metrics, training data)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("checkpoint", type=Path, help="A detector.pt or classifier.pt file.")
        parser.add_argument(
            "--stage", choices=ModelStage.values, default=None, help="Default: read from the file."
        )
        parser.add_argument(
            "--export", type=int, default=None, help="Id of the DatasetExport it was trained on."
        )
        parser.add_argument("--user", default=None, help="Username recorded as the registrant.")
        parser.add_argument("--activate", action="store_true", help="Also make it active.")

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["checkpoint"]
        export = None
        if options["export"] is not None:
            export = DatasetExport.objects.filter(pk=options["export"]).first()
            if export is None:
                raise CommandError(f"No dataset export with id {options['export']}.")
        user = None
        if options["user"]:
            user = User.objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No user {options['user']!r}.")
        try:
            stage = options["stage"] or checkpoint_stage(path)
            mv = model_version_register_checkpoint(
                stage=stage,
                path=path,
                created_by=user,
                training_export=export,
                activate=options["activate"],
            )
        except InputError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            json.dumps(
                {
                    "id": mv.pk,
                    "stage": mv.stage,
                    "name": mv.name,
                    "sha256": mv.sha256,
                    "file": mv.file.name,
                    "training_data": mv.training_data,
                    "training_export": export.pk if export is not None else None,
                    "is_active": mv.is_active,
                    "metrics": sorted(mv.metrics),
                },
                indent=2,
            )
        )
