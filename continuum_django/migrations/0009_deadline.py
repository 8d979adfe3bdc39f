"""Run deadlines: the `deadline` column and the index the sweep finds late live runs by."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("continuum", "0008_updates"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflowrun",
            name="deadline",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="workflowrun",
            index=models.Index(
                condition=models.Q(
                    ("deadline__isnull", False),
                    models.Q(
                        ("status__in", ["completed", "failed", "cancelled", "continued"]),
                        _negated=True,
                    ),
                ),
                fields=["deadline"],
                name="continuum_run_deadline",
            ),
        ),
    ]
