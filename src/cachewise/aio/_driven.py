"""The async faces of a store's flows: each method awaits the sync store's own flow.

``RedisStore`` and ``TieredStore`` write every operation once, as a flow
(``_flow.py``); their async subclasses mix this in to drive the same flows with
``await`` instead of running them in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from cachewise._flow import Flow, arun
from cachewise._types import Key
from cachewise.stores.base import LoadTicket, PreparedWrite


class AsyncFlows:
    """Awaited store operations over ``_<operation>_flow`` methods of the class below."""

    if TYPE_CHECKING:  # provided by the sync store class this is mixed into

        def _get_many_flow(self, keys: Iterable[Key]) -> Flow[dict[Key, Any]]:
            raise NotImplementedError

        def _set_many_flow(self, items: Mapping[Key, Any], ttl: float | None) -> Flow[None]:
            raise NotImplementedError

        def _delete_many_flow(self, keys: Iterable[Key]) -> Flow[int]:
            raise NotImplementedError

        def _clear_flow(self) -> Flow[None]:
            raise NotImplementedError

        def _begin_load_flow(self, key: Key) -> Flow[LoadTicket]:
            raise NotImplementedError

        def _end_load_flow(
            self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None
        ) -> Flow[bool]:
            raise NotImplementedError

        def _begin_load_many_flow(self, keys: Iterable[Key]) -> Flow[dict[Key, LoadTicket]]:
            raise NotImplementedError

        def _end_load_many_flow(
            self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
        ) -> Flow[list[Key]]:
            raise NotImplementedError

        def _begin_write_flow(self, prepared: PreparedWrite) -> Flow[PreparedWrite]:
            raise NotImplementedError

        def _end_write_flow(self, held: PreparedWrite, saved: bool) -> Flow[list[Key]]:
            raise NotImplementedError

        def _store_prepared_flow(self, prepared: PreparedWrite) -> Flow[None]:
            raise NotImplementedError

    async def get_many(self, keys: Iterable[Key]) -> dict[Key, Any]:
        return await arun(self._get_many_flow(keys))

    async def set(self, key: Key, value: Any, ttl: float | None = None) -> None:
        await arun(self._set_many_flow({key: value}, ttl))

    async def set_many(self, items: Mapping[Key, Any], ttl: float | None = None) -> None:
        await arun(self._set_many_flow(items, ttl))

    async def delete(self, key: Key) -> bool:
        return await arun(self._delete_many_flow([key])) == 1

    async def delete_many(self, keys: Iterable[Key]) -> int:
        return await arun(self._delete_many_flow(keys))

    async def clear(self) -> None:
        await arun(self._clear_flow())

    async def begin_load(self, key: Key) -> LoadTicket:
        return await arun(self._begin_load_flow(key))

    async def end_load(self, key: Key, ticket: LoadTicket, value: Any, ttl: float | None) -> bool:
        return await arun(self._end_load_flow(key, ticket, value, ttl))

    async def begin_load_many(self, keys: Iterable[Key]) -> dict[Key, LoadTicket]:
        return await arun(self._begin_load_many_flow(keys))

    async def end_load_many(
        self, tickets: Mapping[Key, LoadTicket], values: Mapping[Key, Any], ttl: float | None
    ) -> list[Key]:
        return await arun(self._end_load_many_flow(tickets, values, ttl))

    async def begin_write(self, prepared: PreparedWrite) -> PreparedWrite:
        return await arun(self._begin_write_flow(prepared))

    async def end_write(self, held: PreparedWrite, saved: bool) -> list[Key]:
        return await arun(self._end_write_flow(held, saved))

    async def store_prepared(self, prepared: PreparedWrite) -> None:
        await arun(self._store_prepared_flow(prepared))
