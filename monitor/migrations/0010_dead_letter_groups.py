"""One dead letter per record, with a part per consumer group that refused it.

Until now each group listed a record it refused on its own row, so one bad
record made a letter per group. The rows of one record (same topic,
partition and offset) become one letter, the oldest, and each row's group
and reason its part; the other rows are deleted. Letters keep the
record's headers from now on (none for those listed before). Reversed, each
part becomes a row of its own again.
"""

from __future__ import annotations

from typing import Any

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def _constraints_now(schema_editor: Any) -> None:
    # On PostgreSQL the foreign key is checked at commit: rows written here
    # would leave "pending trigger events" that forbid the ALTER TABLEs below.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


def one_letter_per_record(apps: Any, schema_editor: Any) -> None:
    _constraints_now(schema_editor)
    db = schema_editor.connection.alias
    letters = apps.get_model("monitor", "DeadLetter").objects.using(db)
    parts = apps.get_model("monitor", "DeadLetterGroup")
    kept: dict[tuple[str, int, int], Any] = {}
    extra: list[int] = []
    for row in letters.order_by("created_at", "id").iterator():
        position = (row.topic, row.partition, row.offset)
        letter = kept.setdefault(position, row)
        if letter is not row:
            extra.append(row.pk)
            if row.redriven_at is None:  # a part not re-driven leaves the letter pending
                letters.filter(pk=letter.pk).update(redriven_at=None)
        parts.objects.using(db).create(
            letter_id=letter.pk,
            group=row.group,
            reason=row.reason,
            failed_at=row.created_at,
            failed_partition=row.partition,
            failed_offset=row.offset,
        )
    for start in range(0, len(extra), 500):
        letters.filter(pk__in=extra[start : start + 500]).delete()


def one_row_per_group(apps: Any, schema_editor: Any) -> None:
    _constraints_now(schema_editor)
    db = schema_editor.connection.alias
    letters = apps.get_model("monitor", "DeadLetter").objects.using(db)
    parts = apps.get_model("monitor", "DeadLetterGroup").objects.using(db)
    for letter in letters.order_by("id").iterator():
        first = True
        for part in parts.filter(letter_id=letter.pk).order_by("id"):
            if not first:
                letter.pk = None  # a copy of the letter for this group
            letter.group, letter.reason, first = part.group, part.reason, False
            letter.save()


class Migration(migrations.Migration):
    dependencies = [
        ("monitor", "0009_analytics_any_event"),
    ]

    operations = [
        migrations.CreateModel(
            name="DeadLetterGroup",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("group", models.CharField(max_length=100)),
                ("reason", models.TextField()),
                ("attempts", models.PositiveIntegerField(default=1)),
                ("failed_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("failed_partition", models.IntegerField()),
                ("failed_offset", models.BigIntegerField()),
                ("stored_at", models.DateTimeField(blank=True, null=True)),
                (
                    "letter",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="groups",
                        to="monitor.deadletter",
                    ),
                ),
            ],
            options={
                "ordering": ["group"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("letter", "group"), name="dead_letter_group_unique"
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="deadletter",
            name="headers",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(one_letter_per_record, one_row_per_group),
        migrations.RemoveConstraint(model_name="deadletter", name="dead_letter_unique"),
        # Defaults, so that reversing this migration can add the columns back.
        migrations.AlterField(
            model_name="deadletter",
            name="group",
            field=models.CharField(default="", max_length=100),
        ),
        migrations.AlterField(
            model_name="deadletter", name="reason", field=models.TextField(default="")
        ),
        migrations.RemoveField(model_name="deadletter", name="group"),
        migrations.RemoveField(model_name="deadletter", name="reason"),
        migrations.AddConstraint(
            model_name="deadletter",
            constraint=models.UniqueConstraint(
                fields=("topic", "partition", "offset"), name="dead_letter_one_per_record"
            ),
        ),
    ]
