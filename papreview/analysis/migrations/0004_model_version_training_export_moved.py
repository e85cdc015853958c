"""The link from a model version to its training export moved to the registry app
(registry.ModelTraining, filled by registry 0001, which runs before this one)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("analysis", "0003_model_version_rollback")]

    operations = [migrations.RemoveField(model_name="modelversion", name="training_export")]
