"""The registry takes over ModelEvaluation and RetrainJob from datasets (tables renamed by
datasets 0005; state only here), links each model version to its training export
(ModelTraining, filled from the old `analysis.ModelVersion.training_export` column before
analysis 0004 drops it), and pairs each evaluation with the version of the other stage it ran
with (`partner`)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def copy_training_exports(apps, schema_editor):
    ModelVersion = apps.get_model("analysis", "ModelVersion")
    ModelTraining = apps.get_model("registry", "ModelTraining")
    ModelTraining.objects.bulk_create(
        ModelTraining(model_version_id=pk, export_id=export_id)
        for pk, export_id in ModelVersion.objects.filter(
            training_export__isnull=False
        ).values_list("pk", "training_export_id")
    )


def copy_back(apps, schema_editor):
    ModelVersion = apps.get_model("analysis", "ModelVersion")
    ModelTraining = apps.get_model("registry", "ModelTraining")
    for row in ModelTraining.objects.all():
        ModelVersion.objects.filter(pk=row.model_version_id).update(
            training_export_id=row.export_id
        )


STATUS = [("pending", "Pending"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")]
JOB_STATUS = [("queued", "Queued"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")]


def _version_fk(**kwargs):
    return models.ForeignKey(
        blank=True,
        null=True,
        on_delete=django.db.models.deletion.SET_NULL,
        related_name="+",
        to="analysis.modelversion",
        **kwargs,
    )


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("analysis", "0003_model_version_rollback"),
        ("datasets", "0005_registry_models_move_out"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]
    run_before = [("analysis", "0004_model_version_training_export_moved")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ModelEvaluation",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        ("split", models.CharField(default="test", max_length=8)),
                        ("status", models.CharField(choices=STATUS, default="pending", max_length=16)),
                        ("metrics", models.JSONField(blank=True, default=dict)),
                        ("error", models.TextField(blank=True)),
                        ("export", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="datasets.datasetexport")),
                        ("model_version", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="evaluations", to="analysis.modelversion")),
                        ("requested_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "ordering": ["export", "model_version"],
                        "constraints": [
                            models.UniqueConstraint(fields=("model_version", "export", "split"), name="evaluation_unique"),
                            models.CheckConstraint(condition=models.Q(("split__in", ["train", "val", "test"])), name="evaluation_split_valid"),
                            models.CheckConstraint(condition=models.Q(("status__in", ["pending", "running", "done", "failed"])), name="evaluation_status_valid"),
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="RetrainJob",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        ("status", models.CharField(choices=JOB_STATUS, default="queued", max_length=16)),
                        ("progress", models.PositiveSmallIntegerField(default=0, help_text="Percent done.")),
                        ("step", models.CharField(blank=True, max_length=200)),
                        ("from_scratch", models.BooleanField(default=False)),
                        ("epochs", models.PositiveIntegerField(blank=True, null=True)),
                        ("comparison", models.JSONField(blank=True, default=dict)),
                        ("error", models.TextField(blank=True)),
                        ("base_classifier", _version_fk()),
                        ("base_detector", _version_fk()),
                        ("export", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="datasets.datasetexport")),
                        ("new_classifier", _version_fk()),
                        ("new_detector", _version_fk()),
                        ("requested_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "ordering": ["-created_at"],
                        "constraints": [
                            models.CheckConstraint(condition=models.Q(("status__in", ["queued", "running", "done", "failed"])), name="retrain_status_valid"),
                            models.CheckConstraint(condition=models.Q(("progress__lte", 100)), name="retrain_progress_valid"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.CreateModel(
            name="ModelTraining",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("export", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to="datasets.datasetexport")),
                ("model_version", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="training", to="analysis.modelversion")),
            ],
            options={"abstract": False},
        ),
        migrations.RunPython(copy_training_exports, copy_back),
        migrations.AddField(
            model_name="modelevaluation",
            name="partner",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="+", to="analysis.modelversion"),
        ),
        migrations.RemoveConstraint(model_name="modelevaluation", name="evaluation_unique"),
        migrations.AddConstraint(
            model_name="modelevaluation",
            constraint=models.UniqueConstraint(fields=("model_version", "partner", "export", "split"), name="evaluation_unique_with_partner"),
        ),
    ]
