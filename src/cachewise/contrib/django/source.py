"""``ModelSource``: a Django model as the authoritative data source (every strategy, on the ORM).

A value is a row as a plain ``dict`` of field values (``Model.objects.values()``: a
foreign key appears as ``<name>_id``), so it crosses Redis and the write-back journal
with the project codec, never as a pickled model instance. Batches are one query each:
``load_many`` one ``IN (...)`` select, ``save_many`` one ``bulk_create`` upsert
(``update_conflicts``; idempotent, as write-back replays need), ``remove_many`` one
``IN (...)`` delete (through the ORM, so cascades and signals run).

Refused rows. ``validate`` (the ``ValidatingSource`` protocol) refuses, without I/O, a
value that is not a dict of the model's fields, disagrees with its key, or fails the
model's field validation (``clean_fields`` on the fields it carries: lengths, choices,
digits, NULL); write-back calls it before acknowledging a write. ``save_many`` runs the
same field validation, and a row that fails it, or that the database refuses
(``IntegrityError``, ``DataError``: a unique clash, a CHECK, a foreign key, a value out
of range), is a ``RejectedError``, so write-back isolates and parks that row and writes
the rest; an unreachable database stays a plain ``SourceError`` and is retried.
Relation fields are left to the database: checking them in Python would query it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, DataError, IntegrityError, router, transaction
from django.db.models import Model, UniqueConstraint
from django.db.models.deletion import ProtectedError, RestrictedError

from cachewise._types import MISSING, Key
from cachewise.errors import (
    ConfigurationError,
    InvalidKeyError,
    InvalidValueError,
    RejectedError,
    SourceError,
)


class ModelSource:
    """The rows of ``model`` keyed by ``key`` (``"pk"`` or any unique field).

    ``using`` picks the database alias (default: the router's choice for writes).
    """

    def __init__(self, model: type[Model], key: str = "pk", *, using: str | None = None) -> None:
        meta = getattr(model, "_meta", None)
        if not isinstance(model, type) or meta is None or meta.abstract:
            raise ConfigurationError(f"ModelSource needs a concrete Django model, got {model!r}")
        try:
            field = meta.pk if key == "pk" else meta.get_field(key)
        except Exception:
            raise ConfigurationError(f"{meta.label} has no field {key!r}") from None
        if not (field.primary_key or field.unique):
            raise ConfigurationError(f"{meta.label}.{key} is not unique: it cannot key a cache")
        self.model = model
        self.using = using
        self._key = field
        self._fields = {f.attname: f for f in meta.concrete_fields}
        # Validating a relation field queries the database; the database checks it anyway.
        self._unchecked = frozenset(f.name for f in meta.concrete_fields if f.is_relation)
        self._other_unique = _other_unique(meta, field)
        """Whether a unique index besides the key's exists (MySQL's upsert would use it)."""

    def __repr__(self) -> str:
        return f"ModelSource({self.model._meta.label}, key={self._key.name!r})"

    def _db(self, write: bool) -> str:
        if self.using is not None:
            return self.using
        route = router.db_for_write if write else router.db_for_read
        return str(route(self.model))

    def _rows(self) -> Any:
        return self.model._default_manager.using(self._db(write=False))

    @contextmanager
    def _errors(self, what: str) -> Any:
        try:
            yield
        except (IntegrityError, DataError, ProtectedError, RestrictedError) as exc:
            # The rows themselves are refused: the same write fails the same way again.
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise RejectedError(
                f"{self!r}: {what} refused: {type(exc).__name__}: {reason}"
            ) from exc
        except DatabaseError as exc:
            raise SourceError(f"{self!r}: {what} failed: {type(exc).__name__}: {exc}") from exc

    # -- reads ---------------------------------------------------------------------------

    def load(self, key: Key) -> Any:
        with self._errors("load"):
            row = self._rows().filter(**{self._key.attname: key}).values().first()
        return MISSING if row is None else row

    def load_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        name = self._key.attname
        with self._errors("load_many"):
            rows = list(self._rows().filter(**{f"{name}__in": wanted}).values())
        return {row[name]: row for row in rows}

    # -- writes --------------------------------------------------------------------------

    def save(self, key: Key, value: Any) -> None:
        self.save_many({key: value})

    def validate(self, key: Key, value: Any) -> None:
        """Refuse, without I/O, a write this model cannot take (``ValidatingSource``).

        The key must pass its field's validation; a value (``MISSING`` for a removal)
        must be a dict of the model's fields that agrees with the key and passes the
        model's validation of the fields it carries. Raises InvalidKeyError or
        InvalidValueError; write-back calls it before acknowledging a write.
        """
        try:
            if self._key.is_relation:  # validating a relation queries its table
                self._key.to_python(key)
            else:
                self._key.clean(key, None)
        except ValidationError as exc:
            raise InvalidKeyError(f"{self!r}: key {key!r}: {'; '.join(exc.messages)}") from None
        if value is not MISSING:
            problems = self._problems(self._instance(key, value), value)
            if problems:
                raise InvalidValueError(f"{self!r}: the value for key {key!r}: {problems}")

    def _instance(self, key: Key, value: Any) -> Model:
        if not isinstance(value, Mapping):
            raise InvalidValueError(f"a {self.model._meta.label} value is a dict, got {value!r}")
        unknown = sorted(set(value) - set(self._fields))
        if unknown:
            raise InvalidValueError(f"{self.model._meta.label} has no field(s) {unknown}")
        name = self._key.attname
        if name in value and value[name] != key:
            raise InvalidValueError(f"value's {name}={value[name]!r} differs from its key {key!r}")
        return self.model(**{**value, name: key})

    def _problems(self, instance: Model, value: Mapping[str, Any]) -> str:
        """The model's field validation of the fields ``value`` carries (and the key).

        ``clean_fields`` also converts the values it checks (``"3.10"`` to a Decimal),
        as a form would; an empty string means the row is valid.
        """
        given = {*value, self._key.attname}
        exclude = {f.name for f in self._fields.values() if f.attname not in given}
        try:
            instance.clean_fields(exclude=exclude | self._unchecked)
        except ValidationError as exc:
            return "; ".join(
                f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
            )
        return ""

    def save_many(self, items: Mapping[Key, Any]) -> None:
        """One ``bulk_create`` upsert of every item (validated before anything is sent)."""
        if not items:
            return
        objects = [self._instance(k, v) for k, v in items.items()]
        refused = {
            key: problems
            for (key, value), instance in zip(items.items(), objects, strict=True)
            if (problems := self._problems(instance, value))
        }
        if refused:  # before anything is sent; write-back bisects to the refused keys
            key, problems = next(iter(refused.items()))
            raise RejectedError(
                f"{self!r}: save_many refused: the model's validation fails for "
                f"{len(refused)} key(s), e.g. {key!r}: {problems}"
            )
        given = {name for value in items.values() for name in value}
        update = [
            self._fields[n].name
            for n in self._fields
            if n in given and n != self._key.attname and not self._fields[n].primary_key
        ]
        db = self._db(write=True)
        from django.db import connections  # noqa: PLC0415 - the alias is known only now

        manager = self.model._default_manager.using(db)
        mysql = connections[db].vendor == "mysql"
        with self._errors("save_many"), transaction.atomic(using=db):
            if mysql and self._other_unique:
                self._save_own_rows(manager, objects, update)
            elif update:
                # MySQL/MariaDB's ON DUPLICATE KEY UPDATE takes no conflict target (and,
                # the key being the only unique index here, can only fire on the key).
                unique = None if mysql else [self._key.name]
                manager.bulk_create(
                    objects, update_conflicts=True, unique_fields=unique, update_fields=update
                )
            else:  # only the key: insert what is missing
                manager.bulk_create(objects, ignore_conflicts=True)

    def _save_own_rows(self, manager: Any, objects: list[Model], update: list[str]) -> None:
        """MySQL/MariaDB with unique fields besides the key: change only each key's own row.

        ``ON DUPLICATE KEY UPDATE`` would fire on any unique index, so a new row whose
        other unique field equals another row's would update that other row. Instead:
        lock the rows of the keys that exist, ``bulk_update`` them (by primary key, so
        only they change), and ``bulk_create`` the others without a conflict clause, so
        a clash on another unique field is an IntegrityError (RejectedError).
        """
        name = self._key.attname
        keys = [getattr(obj, name) for obj in objects]
        found = dict(
            manager.select_for_update().filter(**{f"{name}__in": keys}).values_list(name, "pk")
        )
        old = [obj for obj in objects if getattr(obj, name) in found]
        new = [obj for obj in objects if getattr(obj, name) not in found]
        for obj in old:
            obj.pk = found[getattr(obj, name)]
        if old and update:
            manager.bulk_update(old, update)
        if new:
            manager.bulk_create(new)

    def remove(self, key: Key) -> None:
        self.remove_many([key])

    def remove_many(self, keys: Iterable[Key]) -> None:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return
        db = self._db(write=True)
        with self._errors("remove_many"), transaction.atomic(using=db):
            manager = self.model._default_manager.using(db)
            manager.filter(**{f"{self._key.attname}__in": wanted}).delete()


def _other_unique(meta: Any, key: Any) -> bool:
    """Whether the model has a unique field, unique_together or UniqueConstraint besides ``key``."""
    if any((f.unique or f.primary_key) and f is not key for f in meta.concrete_fields):
        return True
    if meta.unique_together:
        return True
    return any(isinstance(c, UniqueConstraint) for c in meta.constraints)
