"""The workshop's six case studies as experiments: workload, tables, objective, answer.

Each builder turns the case's story into a seeded workload whose shape (who reads,
who writes, how often, how big, how bursty) is a parameter; the objective states the
case's priorities. The workshop's answer is recorded only to be printed beside the
measured recommendation, never used to compute it.
"""

from __future__ import annotations

import heapq
import random

from cachewise.lab.objective import Criterion, Objective
from cachewise.lab.scenario import Case, Kind, Params, Scenario, TableSpec
from cachewise.lab.strategies import ALL
from cachewise.lab.workloads import History, Zipf, value_size

# -- criteria used by several cases ----------------------------------------------------

NO_LOSS = Criterion("lost_writes")
NO_STALE = Criterion("stale_reads")
FEW_APP_CALLS = Criterion("app_calls", rel=0.02)
FEW_CACHE_OPS = Criterion("cache_ops", rel=0.05)


def fast(metric: str) -> Criterion:
    """A latency criterion: within 2x of the best, or within 20 µs of it.

    On a shared machine a p50 of 1 µs and one of 2.5 µs swap places from run to run;
    a difference that small never decides a strategy (one database round trip is
    ~100 µs), so it is a tie that the next criterion decides.
    """
    return Criterion(metric, rel=1.0, abs=20.0)


# -- 1. banking ---------------------------------------------------------------------------


def _banking(p: Params, rng: random.Random) -> Scenario:
    """Many unique transactions written; a holder views balance and history 2-3 times a day."""
    h = History(("txn", "bal"), p["flush_every"])
    accounts = p["accounts"]
    recent: dict[int, list[str]] = {a: [] for a in range(accounts)}
    for a in range(accounts):
        # A balance's version is the number of its account's transactions.
        h.seed("bal", f"b{a}", 64, group=str(a), version=p["history"])
        for j in range(p["history"]):
            key = f"t{a}-{j}"
            h.seed("txn", key, p["txn_size"], group=str(a))
            recent[a].append(key)
    revisits: list[tuple[int, int]] = []
    latest: list[str] = []
    txn_id = 0
    ops = h.workload.ops

    def view(a: int) -> None:
        h.read("bal", f"b{a}")
        for key in recent[a][-p["history"] :]:
            h.read("txn", key)

    while len(ops) < p["ops"]:
        now = len(ops)
        draw = rng.random()
        if revisits and revisits[0][0] <= now:
            view(heapq.heappop(revisits)[1])
        elif draw < p["session_share"]:
            a = rng.randrange(accounts)
            view(a)
            for _ in range(rng.choice((1, 2))):  # 2-3 views a day in all
                gap = int(rng.expovariate(1.0 / p["revisit_gap"]))
                heapq.heappush(revisits, (now + max(1, gap), a))
        elif draw < p["session_share"] + p["direct_share"] and latest:
            # Another system (statements, fraud checks) reads a recent transaction.
            h.read("txn", rng.choice(latest[-50:]), kind="direct")
        else:
            a = rng.randrange(accounts)
            key = f"n{txn_id}"
            txn_id += 1
            h.write("txn", key, value_size(rng, p["txn_size"]), group=str(a))
            recent[a].append(key)
            latest.append(key)
            h.write("bal", f"b{a}", 64, group=str(a))
    del ops[p["ops"] :]
    return Scenario(
        h.workload,
        {"txn": TableSpec(), "bal": TableSpec(derived=("txn", "b"))},
        p["cache_entries"],
        p["eviction"],
    )


BANKING = Case(
    name="banking",
    title="Banking transactions",
    story=(
        "Many unique, immutable transactions are written; an account holder checks the "
        "balance and recent transactions two or three times a day. Balances are kept "
        "cache-aside (computed from the transactions on a miss, invalidated on every "
        "transaction) while the transactions' strategy varies; then the balances' "
        "strategy varies with transactions written around the cache."
    ),
    kinds=(
        Kind(
            name="transactions",
            table="txn",
            workshop="read-through+write-around",
            objective=Objective(
                (
                    NO_LOSS,
                    NO_STALE,
                    Criterion("source_reads", rel=0.05),
                    FEW_CACHE_OPS,
                    FEW_APP_CALLS,
                    fast("write_p50_us"),
                ),
                "no lost and no stale transactions first; then keep the cache for data that "
                "is read (fewest source reads, fewest cache writes); then simple, fast writes",
            ),
            candidates=ALL,
            fixed={"bal": "cache-aside"},
        ),
        Kind(
            name="balance",
            table="bal",
            workshop="cache-aside",
            objective=Objective(
                (
                    NO_LOSS,
                    NO_STALE,
                    Criterion("source_writes", rel=0.1),
                    Criterion("source_reads", rel=0.1),
                    FEW_APP_CALLS,
                    fast("read_p50_us"),
                ),
                "a balance never wrong and no transaction lost; then the least work for "
                "the database for a value read two or three times a day (writes first: "
                "every transaction changes a balance)",
            ),
            candidates=ALL,
            fixed={"txn": "read-through+write-around"},
        ),
    ),
    defaults={
        "accounts": 3000,
        "ops": 4000,
        "history": 3,
        "session_share": 0.06,
        "revisit_gap": 600,
        "direct_share": 0.02,
        "txn_size": 200,
        "cache_entries": 300,
        "eviction": "lru",
        "flush_every": 500,
    },
    quick={
        "ops": 1200,
        "accounts": 600,
        "revisit_gap": 600,
        "cache_entries": 150,
        "flush_every": 200,
    },
    build=_banking,
    workshop_says="write-around + read-through for transactions; cache-aside for balances",
)


# -- 2. stock prices ----------------------------------------------------------------------


def _stock(p: Params, rng: random.Random) -> Scenario:
    """Tickers updated many times per second; readers want the latest price."""
    h = History(("price",), p["flush_every"])
    for t in range(p["tickers"]):
        h.seed("price", f"T{t}", p["value_size"])
    popular = Zipf(p["tickers"], p["zipf"], rng)
    for _ in range(p["ops"]):
        key = f"T{popular.draw()}"
        if rng.random() < p["write_share"]:
            h.write("price", key, p["value_size"])
        else:
            h.read("price", key)
    return Scenario(h.workload, {"price": TableSpec()}, p["cache_entries"], p["eviction"])


STOCK = Case(
    name="stock-prices",
    title="Real-time stock prices",
    story=(
        "Continuous bid/ask updates for many tickers, several per second for the popular "
        "ones; users read the latest price; the database keeps periodic snapshots."
    ),
    kinds=(
        Kind(
            name="prices",
            table="price",
            workshop="read-through+write-back",
            objective=Objective(
                (
                    Criterion("source_writes", rel=0.2),
                    NO_LOSS,
                    NO_STALE,
                    Criterion("source_reads", rel=0.1),
                    fast("write_p50_us"),
                    fast("read_p50_us"),
                    FEW_APP_CALLS,
                    FEW_CACHE_OPS,
                ),
                "database write load first (a snapshot store, not a tick log); among "
                "strategies with about the same write load: no loss, no stale price, "
                "then fewest source reads and fastest writes",
            ),
            candidates=ALL,
        ),
    ),
    defaults={
        "tickers": 300,
        "ops": 5000,
        "write_share": 0.8,
        "zipf": 1.1,
        "value_size": 64,
        "cache_entries": 1000,
        "eviction": "lru",
        "flush_every": 500,
    },
    quick={"ops": 1500, "flush_every": 250},
    build=_stock,
    workshop_says="write-back",
)


# -- 3. CMS shared content ----------------------------------------------------------------


def _cms_shared(p: Params, rng: random.Random) -> Scenario:
    """Head office publishes rarely; every sub-site displays the shared content."""
    h = History(("shared",), p["flush_every"])
    for i in range(p["items"]):
        h.seed("shared", f"s{i}", p["value_size"])
    popular = Zipf(p["items"], p["zipf"], rng)
    for _ in range(p["ops"]):
        key = f"s{popular.draw()}"
        if rng.random() < p["write_share"]:
            h.write("shared", key, value_size(rng, p["value_size"]))
        else:
            h.read("shared", key, kind="burst", fan_out=p["subsites"])
    return Scenario(h.workload, {"shared": TableSpec()}, p["cache_entries"], p["eviction"])


CMS_SHARED = Case(
    name="cms-shared",
    title="CMS shared content",
    story=(
        "Announcements, policies and branding written rarely by the head office and "
        "displayed by every sub-site: each read is a burst of sub-sites at once."
    ),
    kinds=(
        Kind(
            name="shared-content",
            table="shared",
            workshop="read-through+write-through",
            objective=Objective(
                (
                    NO_STALE,
                    NO_LOSS,
                    Criterion("source_reads", rel=0.05),
                    fast("read_p99_us"),
                    FEW_APP_CALLS,
                    FEW_CACHE_OPS,
                ),
                "every sub-site shows the current content and nothing published is lost; "
                "then the fewest database reads and fast pages",
            ),
            candidates=ALL,
        ),
    ),
    defaults={
        "items": 40,
        "ops": 600,
        "subsites": 8,
        "write_share": 0.06,
        "zipf": 0.8,
        "value_size": 2000,
        "cache_entries": 1000,
        "eviction": "lru",
        "flush_every": 100,
    },
    quick={"ops": 250},
    build=_cms_shared,
    workshop_says="read-through (optionally write-through on the publishing path)",
)


# -- 4. CMS sub-site own content ----------------------------------------------------------


def _cms_subsite(p: Params, rng: random.Random) -> Scenario:
    """A sub-site's pages: a hot set read often, a long tail of archive read rarely."""
    h = History(("page",), p["flush_every"])
    for i in range(p["hot"]):
        h.seed("page", f"h{i}", p["value_size"])
    for i in range(p["archive"]):
        h.seed("page", f"a{i}", p["value_size"])
    popular = Zipf(p["hot"], p["zipf"], rng)
    every = p["hot"] + p["archive"]
    for _ in range(p["ops"]):
        draw = rng.random()
        if draw < p["edit_share"]:
            # Local staff edit the pages visitors then read (news, contact, team)
            # and, as often as not, any other page, most of which are rarely visited.
            if rng.random() < p["hot_edit_share"]:
                key = f"h{rng.randrange(p['hot'])}"
            else:
                i = rng.randrange(every)
                key = f"h{i}" if i < p["hot"] else f"a{i - p['hot']}"
            h.write("page", key, value_size(rng, p["value_size"]))
        elif draw < p["edit_share"] + p["archive_share"]:
            h.read("page", f"a{rng.randrange(p['archive'])}")
        else:
            h.read("page", f"h{popular.draw()}")
    cache_archive = p["cache_archive"]

    def admit(key: str) -> bool:
        return cache_archive or key.startswith("h")

    return Scenario(h.workload, {"page": TableSpec(admit=admit)}, p["cache_entries"], p["eviction"])


CMS_SUBSITE = Case(
    name="cms-subsite",
    title="CMS sub-site own content",
    story=(
        "News, contact and team pages edited occasionally by local staff, read often by "
        "visitors; a long archive is read rarely. The sub-site's own code decides what "
        "it caches (cache-aside: its front pages, not the archive)."
    ),
    kinds=(
        Kind(
            name="pages",
            table="page",
            workshop="cache-aside",
            objective=Objective(
                (
                    NO_STALE,
                    NO_LOSS,
                    Criterion("source_reads", rel=0.05),
                    Criterion("evictions", rel=0.1, abs=5),
                    fast("read_p50_us"),
                    FEW_APP_CALLS,
                    FEW_CACHE_OPS,
                ),
                "visitors see current pages and no edit is lost; then the fewest "
                "database reads from a small cache, which rarely read content should "
                "not churn (evictions); then simplicity",
            ),
            candidates=ALL,
        ),
    ),
    defaults={
        "hot": 80,
        "archive": 4000,
        "ops": 4000,
        "archive_share": 0.3,
        "edit_share": 0.05,
        "hot_edit_share": 0.2,
        "zipf": 1.0,
        "value_size": 1000,
        "cache_entries": 100,
        "cache_archive": False,
        "eviction": "lru",
        "flush_every": 500,
    },
    quick={"ops": 1200, "archive": 1500, "flush_every": 200},
    build=_cms_subsite,
    workshop_says="cache-aside",
)


# -- 5. electronic health records ---------------------------------------------------------


def _ehr(p: Params, rng: random.Random) -> Scenario:
    """Doctors and nurses read and update patient records, sometimes the same one at once."""
    h = History(("record",), p["flush_every"])
    for i in range(p["patients"]):
        h.seed("record", f"p{i}", p["value_size"])
    popular = Zipf(p["patients"], p["zipf"], rng)
    for _ in range(p["ops"]):
        key = f"p{popular.draw()}"
        draw = rng.random()
        if draw < p["write_share"]:
            h.write("record", key, value_size(rng, p["value_size"]))
        elif draw < p["write_share"] + p["race_share"]:
            h.race("record", key, value_size(rng, p["value_size"]))
        elif draw < p["write_share"] + p["race_share"] + p["direct_share"]:
            # The lab system, pharmacy or billing read the database itself.
            h.read("record", key, kind="direct")
        else:
            h.read("record", key)
    return Scenario(h.workload, {"record": TableSpec()}, p["cache_entries"], p["eviction"])


EHR = Case(
    name="ehr",
    title="Electronic health records",
    story=(
        "Every update must be visible at once to other users and systems, no loss is "
        "acceptable, and reads must be fast. Some reads overlap an update of the same "
        "record; other hospital systems read the database directly."
    ),
    kinds=(
        Kind(
            name="records",
            table="record",
            workshop="read-through+write-through",
            objective=Objective(
                (
                    NO_STALE,
                    NO_LOSS,
                    fast("read_p50_us"),
                    Criterion("source_reads", rel=0.1),
                    FEW_APP_CALLS,
                    FEW_CACHE_OPS,
                ),
                "zero stale reads and zero lost writes first, then read latency",
            ),
            candidates=ALL,
        ),
    ),
    defaults={
        "patients": 400,
        "ops": 3000,
        "write_share": 0.2,
        "race_share": 0.05,
        "direct_share": 0.1,
        "zipf": 0.9,
        "value_size": 1500,
        "cache_entries": 1000,
        "eviction": "lru",
        "flush_every": 300,
    },
    quick={"ops": 1000, "flush_every": 200},
    build=_ehr,
    workshop_says="write-through + read-through",
)


# -- 6. page-view analytics ---------------------------------------------------------------


def _page_views(p: Params, rng: random.Random) -> Scenario:
    """Page-view events in bursts; live counters per URL and time bucket."""
    h = History(("counter",), p["flush_every"])
    popular = Zipf(p["urls"], p["zipf"], rng)
    ops = h.workload.ops
    while len(ops) < p["ops"]:
        bucket = len(ops) // p["bucket_ops"]
        url = popular.draw()
        if rng.random() < p["read_share"]:
            h.read("counter", f"pv{url}@{bucket}")
            continue
        # A burst: a link goes round and the same page is viewed many times in a row.
        count = p["burst_len"] if rng.random() < p["burst_share"] else 1
        for _ in range(count):
            h.write("counter", f"pv{url}@{bucket}", p["value_size"])
    del ops[p["ops"] :]
    return Scenario(h.workload, {"counter": TableSpec()}, p["cache_entries"], p["eviction"])


PAGE_VIEWS = Case(
    name="page-views",
    title="Page-view analytics",
    story=(
        "Events arrive continuously and in bursts; dashboards show near-real-time "
        "counters per page and minute; aggregates are persisted periodically."
    ),
    kinds=(
        Kind(
            name="counters",
            table="counter",
            workshop="read-through+write-back",
            objective=Objective(
                (
                    Criterion("source_writes", rel=0.2),
                    fast("write_p50_us"),
                    NO_STALE,
                    Criterion("source_reads", rel=0.1),
                    fast("read_p50_us"),
                    NO_LOSS,
                    FEW_APP_CALLS,
                    FEW_CACHE_OPS,
                ),
                "absorb the event stream: fewest database writes and fast writes first, "
                "live counters never behind; a crash losing a few seconds of counts is "
                "tolerated (a journal removes even that)",
            ),
            candidates=ALL,
        ),
    ),
    defaults={
        "urls": 300,
        "ops": 5000,
        "read_share": 0.1,
        "zipf": 1.0,
        "bucket_ops": 1000,
        "burst_share": 0.05,
        "burst_len": 20,
        "value_size": 16,
        "cache_entries": 5000,
        "eviction": "lru",
        "flush_every": 500,
    },
    quick={"ops": 1200, "flush_every": 250, "bucket_ops": 600},
    build=_page_views,
    workshop_says="write-back (buffered, flushed in batches) + read from cache",
)


CASES: tuple[Case, ...] = (BANKING, STOCK, CMS_SHARED, CMS_SUBSITE, EHR, PAGE_VIEWS)
"""The six cache cases, in the workshop's order (pooling is in ``pooling.py``)."""
