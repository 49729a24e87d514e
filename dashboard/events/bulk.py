"""Bulk writes for ingest without the ORM's work per value.

`QuerySet.bulk_create` compiles every value of every row through the field machinery
(prepare, adapt, placeholder), which cost ingest several times what the database spent
storing the rows (a profile of 50 agents' batches: 40 % of the time in the compiler, 6 %
in SQLite). Here the columns and how each is adapted are worked out once per model; a
row's plain values (numbers, strings, booleans, keys) go as they are, and only the fields
that need the backend's adaptation (times, addresses, JSON) go through it.

On PostgreSQL the rows go by COPY, their keys taken from the table's sequence first (a
long INSERT of many rows cost psycopg more to parse for its placeholders, every time,
than the server spent on it). The rows themselves need not be model instances either (`row()`: a model's __init__ and
its signals cost more than the insert): a row has the fields by name and attribute as an
instance has them, which is all the feeds' serializers read.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from types import SimpleNamespace

from django.db import connection, models
from django.utils import timezone

PLAIN = (models.IntegerField, models.CharField, models.BooleanField, models.ForeignKey, models.FloatField)


@functools.cache
def _fields(model: type[models.Model]):
    """The fields a row sets, as (name, attribute, related, field); every name and attribute;
    and the row's type: plain, with the model's own properties (they read fields only)."""
    fields = [(f.name, f.attname, f.is_relation, f) for f in model._meta.local_concrete_fields if not f.primary_key]
    properties = {name: v for name, v in vars(model).items() if isinstance(v, property) and name != "pk"}
    kind = type(f"{model.__name__}Row", (SimpleNamespace,), properties)
    return fields, frozenset(n for f in fields for n in f[:2]), kind


def row(model: type[models.Model], **values) -> SimpleNamespace:
    """A row of the model to insert, as the model's constructor takes it (a related object
    by its field's name, or its key by the attribute), the other fields at their defaults."""
    fields, names, kind = _fields(model)
    if not names.issuperset(values):
        raise TypeError(f"{model.__name__} has no field {sorted(set(values) - names)}")
    out = kind(pk=None)
    attrs = out.__dict__
    for name, attname, related, field in fields:
        if name in values:
            value = values[name]
            if related:
                attrs[name] = value
                value = None if value is None else value.pk
            attrs[attname] = value
        elif attname in values:
            attrs[attname] = values[attname]
        else:
            attrs[attname] = field.get_default()
            if related:  # (no object: none, as an instance answers)
                attrs[name] = None
    return out


def _adaptation(field: models.Field):
    """How a value of the field goes to the database: None for a plain one (as it is)."""
    if isinstance(field, models.DateTimeField):  # (aware times of our own: nothing to check)
        return lambda value: connection.ops.adapt_datetimefield_value(value)
    if isinstance(field, PLAIN) and not isinstance(field, models.GenericIPAddressField):
        return None
    return lambda value: field.get_db_prep_save(value, connection)


@functools.cache
def _columns(model: type[models.Model], vendor: str):
    """The fields an insert sets; for each (attribute, adaptation or None, set to now); and the
    statement's head (names from the model's own metadata, quoted)."""
    fields = [f for f in model._meta.local_concrete_fields if not f.primary_key]
    plan = [(f.attname, _adaptation(f), bool(getattr(f, "auto_now_add", False) or getattr(f, "auto_now", False)))
            for f in fields]  # fmt: skip
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    return fields, plan, f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({names}) VALUES "  # noqa: S608


def _values(plan, obj: models.Model, now) -> list:
    row = obj.__dict__
    for attname, _, auto in plan:
        if auto:
            row[attname] = now
    return [row[attname] if adapt is None else adapt(row[attname]) for attname, adapt, _ in plan]


def insert(model: type[models.Model], objs: list) -> list:
    """Insert the rows (row() or unsaved instances) and set their primary keys, as
    bulk_create does."""
    if not objs:
        return objs
    if not connection.features.can_return_rows_from_bulk_insert:  # (SQLite before 3.35)
        instances = [o if isinstance(o, models.Model) else model(**o.__dict__) for o in objs]
        model.objects.bulk_create(instances)
        return _keyed(objs, [instance.pk for instance in instances])
    if connection.vendor == "postgresql":
        return _copy(model, objs)
    fields, plan, head = _columns(model, connection.vendor)
    row = "(" + ", ".join(["%s"] * len(plan)) + ")"
    step = max(1, connection.ops.bulk_batch_size(fields, objs))
    now = timezone.now()
    pk = connection.ops.quote_name(model._meta.pk.column)
    with connection.cursor() as cursor:
        for start in range(0, len(objs), step):
            chunk = objs[start : start + step]
            params = [value for obj in chunk for value in _values(plan, obj, now)]
            # (names from the model's own metadata, quoted; every value a parameter)
            cursor.execute(f"{head}{', '.join([row] * len(chunk))} RETURNING {pk}", params)  # noqa: S608
            _keyed(chunk, [key for (key,) in cursor.fetchall()])
    return objs


def _copy(model: type[models.Model], objs: list) -> list:
    """PostgreSQL: keys from the sequence (in order), then one COPY of the rows with them."""
    fields, plan, _ = _columns(model, connection.vendor)
    table, pk = model._meta.db_table, model._meta.pk.column
    columns = ", ".join(connection.ops.quote_name(c) for c in [pk, *(f.column for f in fields)])
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s) ORDER BY 1",
                       [connection.ops.quote_name(table), pk, len(objs)])  # fmt: skip
        keys = [key for (key,) in cursor.fetchall()]
        statement = f"COPY {connection.ops.quote_name(table)} ({columns}) FROM STDIN"
        with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:  # (IntegrityError, as Django's)
            for obj, key in zip(objs, keys, strict=True):
                copy.write_row([key, *_values(plan, obj, now)])
    return _keyed(objs, keys)


def _keyed(objs: list, keys: list[int]) -> list:
    for obj, key in zip(objs, keys, strict=True):
        obj.pk = key
        if isinstance(obj, models.Model):
            obj._state.adding, obj._state.db = False, connection.alias
    return objs


def advance(model: type[models.Model], column: str, tops: Iterable[tuple[int, int]], **also) -> None:
    """For each (pk, value): column = the larger of it and value (never backwards), and the
    other columns in `also` set to their (plain or time) values; one statement run for all."""
    table = connection.ops.quote_name(model._meta.db_table)
    col = connection.ops.quote_name(model._meta.get_field(column).column)
    sets = "".join(f", {connection.ops.quote_name(model._meta.get_field(k).column)} = %s" for k in also)
    values = [model._meta.get_field(k).get_db_prep_save(v, connection) for k, v in also.items()]
    pk = connection.ops.quote_name(model._meta.pk.column)
    sql = f"UPDATE {table} SET {col} = CASE WHEN {col} > %s THEN {col} ELSE %s END{sets} WHERE {pk} = %s"  # noqa: S608
    rows = [(top, top, *values, pk) for pk, top in sorted(tops)]  # in key order: two writers lock rows alike
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
