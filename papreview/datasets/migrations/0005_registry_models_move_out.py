"""ModelEvaluation and RetrainJob move to the registry app (papreview.registry): their tables are
renamed here, and the registry's first migration takes them over in Django's state."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("datasets", "0004_retrain_job")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.AlterModelTable("ModelEvaluation", "registry_modelevaluation"),
                migrations.AlterModelTable("RetrainJob", "registry_retrainjob"),
            ],
            state_operations=[
                migrations.DeleteModel("ModelEvaluation"),
                migrations.DeleteModel("RetrainJob"),
            ],
        )
    ]
