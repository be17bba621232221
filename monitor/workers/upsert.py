"""Adding to counters in bulk: ``INSERT ... ON CONFLICT DO UPDATE`` on plain models.

The analytics writer (:mod:`monitor.workers.analytics`) keeps its aggregates
with :func:`upsert_adding`, one statement per chunk of rows, instead of a
read and a write per row. SQLite (3.35+) and PostgreSQL both speak this
dialect.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import CharField, DateField, DateTimeField, Field, IntegerField, Model


def upsert_adding(
    db: BaseDatabaseWrapper,
    model: type[Model],
    keys: tuple[str, ...],
    amounts: tuple[str, ...],
    values: Iterable[tuple[Any, ...]],
    *,
    chunk_rows: int,
) -> None:
    """Add amounts to the rows of ``model`` with these keys, creating the rows
    that are missing, ``chunk_rows`` rows per statement.

    Each value is a key followed by its amounts, in the order of ``keys`` and
    ``amounts``. Each key must come once (PostgreSQL refuses to update a row
    twice in one statement): callers aggregate first.
    """
    fields = [model_field(model, name) for name in (*keys, *amounts)]
    adapters = [value_adapter(db, field) for field in fields]
    params: list[Any] = []
    for value in values:
        params.extend(adapt(item) for adapt, item in zip(adapters, value, strict=True))
    if not params:
        return
    quote = db.ops.quote_name
    table = quote(model._meta.db_table)
    # The fields are plain ones: their names are their columns.
    columns = ", ".join(quote(name) for name in (*keys, *amounts))
    updates = ", ".join(
        f"{quote(name)} = {table}.{quote(name)} + EXCLUDED.{quote(name)}" for name in amounts
    )
    conflict = ", ".join(quote(name) for name in keys)
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    chunk = chunk_rows * len(fields)
    with db.cursor() as cursor:
        for start in range(0, len(params), chunk):
            part = params[start : start + chunk]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) "
                f"VALUES {', '.join([row_sql] * (len(part) // len(fields)))} "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}",
                part,
            )


def value_adapter(db: BaseDatabaseWrapper, field: Field[Any, Any]) -> Callable[[Any], Any]:
    """The backend's conversion for a value already of the field's type (as
    get_db_prep_save ends with, at a fraction of the cost per value)."""
    if isinstance(field, DateTimeField):
        return db.ops.adapt_datetimefield_value
    if isinstance(field, DateField):
        return db.ops.adapt_datefield_value
    if isinstance(field, CharField | IntegerField):
        return _unchanged
    return functools.partial(field.get_db_prep_save, connection=db)


def model_field(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` of ``model`` (not a relation's reverse side)."""
    field = model._meta.get_field(name)
    assert isinstance(field, Field)
    return field


def _unchanged(value: Any) -> Any:
    return value
