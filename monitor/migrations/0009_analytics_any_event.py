"""Analytics records every CloudEvent: whether it is the site's own
(``verified``), the id its envelope carried, and per-minute counts by source.

Rows recorded before are not marked verified: they were never
signature-checked. Their ``cloudevent_id`` stays blank (their ``event_id`` is
their id). The per-minute counts recorded before had no source: they counted
only events of the site's own types, which the site emits under
``EVENT_SOURCE``, so they take that source.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import migrations, models


def site_source_for_old_counts(apps: Any, schema_editor: Any) -> None:
    counts = apps.get_model("monitor", "EventMinuteCount")
    counts.objects.using(schema_editor.connection.alias).update(source=settings.EVENT_SOURCE[:255])


class Migration(migrations.Migration):
    dependencies = [
        ("monitor", "0008_broker_epochs"),
    ]

    operations = [
        migrations.AddField(
            model_name="analyticsevent",
            name="verified",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="analyticsevent",
            name="cloudevent_id",
            field=models.CharField(
                blank=True, default="", max_length=255, verbose_name="CloudEvent id"
            ),
        ),
        migrations.AddField(
            model_name="eventminutecount",
            name="source",
            field=models.CharField(default="", max_length=255),
        ),
        migrations.RunPython(site_source_for_old_counts, migrations.RunPython.noop),
        migrations.AlterModelOptions(
            name="eventminutecount",
            options={"ordering": ["-minute", "type", "source"]},
        ),
        migrations.RemoveConstraint(
            model_name="eventminutecount",
            name="minute_count_unique",
        ),
        migrations.AddConstraint(
            model_name="eventminutecount",
            constraint=models.UniqueConstraint(
                fields=("minute", "type", "source"), name="minute_type_source_unique"
            ),
        ),
    ]
