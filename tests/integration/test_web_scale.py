"""The admin UI at scale, through real HTTP on SQLite and PostgreSQL: lists paged by id show every row
once while rows keep arriving, search finds an email exactly or by its beginning (or a phone exactly)
and nothing else, counts stop at a cap ("10,000+"), and the dashboard tells how long history is kept
and when nothing is sending."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync.db import create_engine
from contactsync.db import listener as ldb
from contactsync.db.backend import backend_of_url
from contactsync.db.counting import CAP
from contactsync.db.platform import contacts, deliveries
from contactsync.db.search import branches
from contactsync.delivery import presence
from support import examples
from support.api import Api, api_client, new_account
from support.listener import SECRET, TOKEN, serve
from support.web import PASSWORD, Ui, listener_sign_in, person, sign_in

OWNER = "owner@example.com"
OPERATOR = "operator@example.com"
ROW = re.compile(r'<tr><td><a href="/(?:contacts|deliveries)/(\d+)">')
FORM = "application/x-www-form-urlencoded"


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class Site:
    api: Api
    ui: Ui
    serial: Iterator[int]

    def new_list(self) -> int:
        return int(self.api.ok("POST", "/api/lists", 201, json={"name": f"list {next(self.serial)}"})["id"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'ui.db'}"
    else:
        url = request.getfixturevalue("pg_module_url")
    with api_client(
        url,
        retention_delivered_days=7,
        retention_failed_days=45,
        admin_password=PASSWORD,
        admin_email=OPERATOR,
        session_secret="s",
    ) as api:
        person(api.engine, OWNER, account_id=api.account_id, role="owner")
        with closing(sign_in(api.base_url, OWNER)) as ui:
            yield Site(api, ui, iter(range(10**9)))


def add_contacts(engine: sa.Engine, list_id: int, emails: list[str], phones: list[str] | None = None) -> None:
    at = now()
    rows = [
        {"list_id": list_id, "email": email, "email_key": email.lower(), "phone": phone,
         "status": "subscribed", "lead_score": 0, "created_at": at, "updated_at": at}
        for email, phone in zip(emails, phones or [""] * len(emails), strict=True)
    ]  # fmt: skip
    if rows:
        with engine.begin() as conn:
            conn.execute(contacts.insert(), rows)


def add_deliveries(engine: sa.Engine, account_id: int, states: list[tuple[str, str]]) -> None:
    """Deliveries of ``account_id``, one per (state, endpoint)."""
    at = now()
    with engine.begin() as conn:
        first = int(
            conn.execute(sa.select(sa.func.coalesce(sa.func.max(deliveries.c.transactionid), 0))).scalar_one()
        )
        rows = [
            {"transactionid": first + i + 1, "account_id": account_id, "endpoint": endpoint, "method": "POST",
             "url": endpoint + "/hook", "headers": {}, "body": b"", "content_type": FORM, "state": state,
             "attempt_count": 0, "next_attempt_at": at, "created_at": at, "updated_at": at}
            for i, (state, endpoint) in enumerate(states)
        ]  # fmt: skip
        if rows:
            conn.execute(deliveries.insert(), rows)


def ids_of(page: str) -> list[int]:
    return [int(i) for i in ROW.findall(page)]


def link(page: str, way: str, name: str = "page") -> str | None:
    found = re.search(rf'href="\?([^"]*)" id="{name}-{way}"', page)
    return html.unescape(found.group(1)) if found else None


def walk(ui: Ui, path: str, query: str, *, between: Any = None, way: str = "down") -> list[list[int]]:
    """The ids of every page from ``path?query`` on, following ``way`` links; ``between()`` runs
    before each next page is asked for (rows arriving meanwhile)."""
    pages = []
    while True:
        answer = ui.get(f"{path}?{query}")
        assert answer.status_code == 200, answer.text[-2000:]
        pages.append(ids_of(answer.text))
        assert len(pages) < 100, "the pages never end"
        following = link(answer.text, way)
        if following is None:
            return pages
        if between is not None:
            between()
        query = following


# --- keyset paging ---------------------------------------------------------------------------------


@settings(max_examples=examples(ci=40, local=8))
@given(n=st.integers(0, 170), arrivals=st.lists(st.integers(0, 60), max_size=4))
def test_every_contact_of_a_list_is_shown_once_newest_first_while_contacts_arrive(
    site: Site, n: int, arrivals: list[int]
) -> None:
    list_id = site.new_list()
    add_contacts(site.api.engine, list_id, [f"c{i}@example.com" for i in range(n)])
    with site.api.engine.connect() as conn:
        there = set(conn.execute(sa.select(contacts.c.id).where(contacts.c.list_id == list_id)).scalars())
    pending = list(arrivals)
    serial = iter(range(10**6))

    def arrive() -> None:
        if pending:
            add_contacts(
                site.api.engine, list_id, [f"new{next(serial)}@example.com" for _ in range(pending.pop())]
            )

    pages = walk(site.ui, "/contacts", f"list={list_id}", between=arrive)
    seen = [i for page in pages for i in page]
    assert sorted(seen) == sorted(there)  # each once, and none of those that arrived meanwhile
    assert seen == sorted(seen, reverse=True)
    assert all(len(page) == 50 for page in pages[:-1])
    # back up, from the last page: every page newest first, every contact seen again
    back = walk(site.ui, "/contacts", f"list={list_id}&before={seen[-1] + 1}", way="up") if seen else []
    assert there <= {i for page in back for i in page}
    assert all(page == sorted(page, reverse=True) for page in back)


@settings(max_examples=examples(ci=30, local=6))
@given(
    names=st.lists(st.from_regex(r"[a-c]{1,4}", fullmatch=True), min_size=0, max_size=130, unique=True),
    arrivals=st.lists(st.lists(st.from_regex(r"[a-c]{1,4}", fullmatch=True), max_size=20), max_size=3),
)
def test_a_search_shows_every_match_once_in_email_order_while_contacts_arrive(
    site: Site, names: list[str], arrivals: list[list[str]]
) -> None:
    tag = f"s{next(site.serial)}x"
    lists = [site.new_list(), site.new_list()]  # matches in two lists: pages merge them in email order
    for i, name in enumerate(names):  # a third in both lists: equal emails, ordered by list
        for list_id in lists if i % 3 == 0 else [lists[i % 2]]:
            add_contacts(site.api.engine, list_id, [f"{tag}{name}@example.com"])
    add_contacts(site.api.engine, lists[0], [f"z{tag}@example.com", f"{tag[:-1]}@example.com"])  # no match
    with site.api.engine.connect() as conn:
        there = set(
            conn.execute(sa.select(contacts.c.id).where(contacts.c.email_key.like(f"{tag}%"))).scalars()
        )
    pending = list(arrivals)
    serial = iter(range(10**6))

    def arrive() -> None:
        if pending:
            for name in pending.pop():
                add_contacts(site.api.engine, lists[1], [f"{tag}{name}-{next(serial)}@example.com"])

    pages = walk(site.ui, "/contacts", f"q={tag.upper()}", between=arrive, way="down")
    seen = [i for page in pages for i in page]
    assert len(seen) == len(set(seen))
    assert there <= set(seen)
    with site.api.engine.connect() as conn:
        keys = dict(
            conn.execute(sa.select(contacts.c.id, contacts.c.email_key).where(contacts.c.id.in_(seen))).all()
        )
    assert all(keys[i].startswith(tag) for i in seen)
    with site.api.engine.connect() as conn:
        lists_of = dict(
            conn.execute(sa.select(contacts.c.id, contacts.c.list_id).where(contacts.c.id.in_(seen))).all()
        )
    ordered = [(keys[i], lists_of[i]) for i in seen]
    assert ordered == sorted(ordered)


@settings(max_examples=examples(ci=30, local=6))
@given(
    states=st.lists(
        st.tuples(
            st.sampled_from(["pending", "failed", "delivered"]),
            st.sampled_from(["http://a", "http://b", "http://c"]),
        ),
        max_size=160,
    ),
    arrivals=st.lists(st.integers(0, 40), max_size=4),
    state=st.sampled_from(["", "pending", "failed"]),
)
def test_every_delivery_is_shown_once_in_its_filter_while_deliveries_arrive(
    site: Site, states: list[tuple[str, str]], arrivals: list[int], state: str
) -> None:
    account, _ = new_account(site.api.engine, f"paged {next(site.serial)}")
    person(site.api.engine, f"p{account}@example.com", account_id=account, role="viewer")
    add_deliveries(site.api.engine, account, states)
    d = deliveries.c
    with site.api.engine.connect() as conn:
        where = [d.account_id == account] + ([d.state == state] if state else [])
        there = set(conn.execute(sa.select(d.id).where(*where)).scalars())
    pending = list(arrivals)

    def arrive() -> None:
        if pending:
            add_deliveries(site.api.engine, account, [(state or "pending", "http://b")] * pending.pop())

    with closing(sign_in(site.api.base_url, f"p{account}@example.com")) as ui:
        pages = walk(ui, "/deliveries", f"state={state}", between=arrive)
    seen = [i for page in pages for i in page]
    assert sorted(seen) == sorted(there)
    assert seen == sorted(seen, reverse=True)


def test_search_pages_keep_an_email_of_two_lists_apart_by_list(site: Site) -> None:
    tag = f"pair{next(site.serial)}x"
    first, second = site.new_list(), site.new_list()
    add_contacts(site.api.engine, first, [f"{tag}0@example.com"])  # one ahead: a page ends inside a pair
    for list_id in (first, second):
        add_contacts(site.api.engine, list_id, [f"{tag}{i:02}@example.com" for i in range(1, 60)])
    pages = walk(site.ui, "/contacts", f"q={tag}")
    assert [len(page) for page in pages] == [50, 50, 19]
    seen = [i for page in pages for i in page]
    assert len(set(seen)) == 119
    back = walk(site.ui, "/contacts", link(site.ui.get(f"/contacts?q={tag}").text, "down") or "", way="up")
    assert back[-1] == pages[0]


def test_a_malformed_or_stale_cursor_shows_a_page_not_an_error(site: Site) -> None:
    list_id = site.new_list()
    add_contacts(site.api.engine, list_id, [f"m{i}@example.com" for i in range(3)])
    for query in (
        "before=abc",
        "after=-1",
        "before=99999999999999999999999",
        f"list={list_id}&before=1",
        "q=m&after=1",
    ):
        answer = site.ui.get(f"/contacts?{query}")
        assert answer.status_code == 200, (query, answer.text[-500:])
    assert len(ids_of(site.ui.get("/contacts", params={"list": list_id, "before": "x"}).text)) == 3
    assert site.ui.get("/deliveries?before=1&state=nope").status_code == 200


# --- search ----------------------------------------------------------------------------------------


def _search_world(site: Site) -> tuple[int, dict[str, int]]:
    list_id = site.new_list()
    emails = [
        "ab@x.com",
        "abc@x.com",
        "Abd@X.com",
        "ab@x.com.au",
        "xab@x.com",
        "áb@x.com",
        "a@x.com",
        "b@x.com",
    ]
    phones = ["+15550001", "", "", "", "+155500012", "", "", "5550001"]
    add_contacts(site.api.engine, list_id, emails, phones)
    with site.api.engine.connect() as conn:
        ids = dict(
            conn.execute(
                sa.select(contacts.c.email, contacts.c.id).where(contacts.c.list_id == list_id)
            ).all()
        )
    return list_id, ids


def found(ui: Ui, q: str, list_id: int) -> set[str]:
    answer = ui.get("/contacts", params={"q": q, "list": list_id})
    assert answer.status_code == 200
    return set(re.findall(r'<a href="/contacts/\d+">([^<]*@[^<]*)</a>', answer.text))


def test_search_finds_an_email_exactly_or_by_its_beginning_and_a_phone_exactly(site: Site) -> None:
    list_id, _ = _search_world(site)
    assert found(site.ui, "ab", list_id) == {"ab@x.com", "abc@x.com", "Abd@X.com", "ab@x.com.au"}
    assert found(site.ui, "AB@X.COM", list_id) == {"ab@x.com", "ab@x.com.au"}
    assert found(site.ui, "abd@x.com", list_id) == {"Abd@X.com"}
    assert found(site.ui, "áb", list_id) == {"áb@x.com"}
    assert found(site.ui, "+15550001", list_id) == {"ab@x.com"}  # exactly: not +155500012
    assert found(site.ui, "5550001", list_id) == {"b@x.com"}  # its phone, not a substring of others
    assert found(site.ui, "x.com", list_id) == set()  # no substring search
    assert found(site.ui, "b", list_id) == {"b@x.com"}
    assert found(site.ui, "%", list_id) == set()  # no LIKE wildcards
    assert found(site.ui, "_b", list_id) == set()


def test_search_reads_only_the_signed_in_accounts_lists(site: Site) -> None:
    list_id, _ = _search_world(site)
    other, _ = new_account(site.api.engine, "elsewhere")
    person(site.api.engine, "elsewhere@example.com", account_id=other, role="owner")
    with closing(sign_in(site.api.base_url, "elsewhere@example.com")) as ui:
        assert found(ui, "ab", list_id) == set()
        assert ids_of(ui.get("/contacts", params={"q": "abc@x.com"}).text) == []


@pytest.fixture
def icu_url(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database whose collation is ICU's en-US, where "áb" sorts between "ab" and "ac"."""
    admin = create_engine(pg_url)
    name = pg_url.rsplit("/", 1)[1] + "_icu"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" {icu}')
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_search_by_beginning_ignores_a_linguistic_collation_and_uses_its_index(icu_url: str) -> None:
    with api_client(icu_url, admin_password=PASSWORD, admin_email=OPERATOR, session_secret="s") as api:
        with api.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT 'áb' > 'ab' AND 'áb' < 'ab' || chr(1114111)").scalar()
        person(api.engine, OWNER, account_id=api.account_id, role="owner")
        with closing(sign_in(api.base_url, OWNER)) as ui:
            site = Site(api, ui, iter(range(10**9)))
            list_id, _ = _search_world(site)
            add_contacts(api.engine, list_id, [f"filler{i}@x.com" for i in range(2000)])
            with api.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE contacts")
            assert found(ui, "ab", list_id) == {"ab@x.com", "abc@x.com", "Abd@X.com", "ab@x.com.au"}
            assert found(ui, "áb", list_id) == {"áb@x.com"}
        query = branches(
            [list_id], "ab", backend_of_url("postgresql://"), position=None, backward=False, limit=51
        )[0]
        with api.engine.connect() as conn:
            compiled = query.compile(conn)
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + str(compiled), compiled.params))
        assert "ix_contacts_list_id_email_key_c" in plan, plan


# --- capped counts, retention and the stall banner -------------------------------------------------


def test_counts_stop_at_the_cap_and_say_so(site: Site) -> None:
    account, _ = new_account(site.api.engine, f"busy {next(site.serial)}")
    person(site.api.engine, f"busy{account}@example.com", account_id=account, role="owner")
    with site.api.engine.begin() as conn:
        at = now()
        full, over = (
            conn.execute(
                sa.text("INSERT INTO lists (account_id, name, created_at) VALUES (:a, :n, :t) RETURNING id"),
                {"a": account, "n": name, "t": at},
            ).scalar_one()
            for name in ("exactly the cap", "one over")
        )
    add_contacts(site.api.engine, full, [f"f{i}@x.com" for i in range(CAP)])
    add_contacts(site.api.engine, over, [f"o{i}@x.com" for i in range(CAP + 1)])
    add_deliveries(
        site.api.engine, account, [("delivered", "http://d")] * (CAP + 1) + [("failed", "http://d")] * 3
    )
    with closing(sign_in(site.api.base_url, f"busy{account}@example.com")) as ui:
        lists = ui.get("/lists").text
        assert f'<span class="count" data-list="{full}">10,000</span>' in lists
        assert f'<span class="count" data-list="{over}">10,000+</span>' in lists
        dashboard = ui.get("/").text
        assert '<span class="n" data-state="delivered">10,000+</span>' in dashboard
        assert '<span class="n" data-state="failed">3</span>' in dashboard
        assert '<span class="n" data-state="pending">0</span>' in dashboard
        assert "Counts stop at 10,000" in dashboard


def test_the_dashboard_says_how_long_history_is_kept_and_warns_when_nothing_sends(site: Site) -> None:
    site.api.ok("POST", "/api/lists", 201, json={"name": "stall"})
    add_deliveries(site.api.engine, site.api.account_id, [("pending", "http://stalled")])
    page = site.ui.get("/").text
    assert "Delivered and cancelled deliveries are kept 7 days, failed ones 45 days" in page
    assert "marketing activity forever" in page
    assert 'id="stall"' in page
    assert "no dispatcher is running" in page
    with site.api.engine.begin() as conn:
        presence.beat(conn, "a test dispatcher", started_at=now(), now=now())
    try:
        assert 'id="stall"' not in site.ui.get("/").text
    finally:
        with site.api.engine.begin() as conn:
            presence.gone(conn, "a test dispatcher")


# --- the listener's admin UI -----------------------------------------------------------------------


def add_inbox(engine: sa.Engine, count: int, *, first: int, errors: int = 0) -> None:
    """``count`` stored syncs with transactionids from ``first``, each with a CRM run (the first
    ``errors`` of them failed)."""
    at_ms = int(now().timestamp() * 1000)
    with engine.begin() as conn:
        for n in range(first, first + count):
            inbox_id = conn.execute(
                ldb.inbox.insert()
                .values(
                    transactionid=str(n),
                    received_at_ms=at_ms + n,
                    method="POST",
                    content_type=FORM,
                    query="",
                    headers="{}",
                    body=b"",
                    source_address="127.0.0.1",
                )
                .returning(ldb.inbox.c.id)
            ).scalar_one()
            failed = n < first + errors
            conn.execute(
                ldb.handler_runs.insert().values(
                    inbox_id=inbox_id,
                    handler="crm",
                    state="failed" if failed else "done",
                    attempts=1,
                    next_attempt_at_ms=at_ms,
                    received_at_ms=at_ms + n,
                    last_error="HTTP 500" if failed else None,
                )
            )


@contextmanager
def serve_listener(db_url: str, **options: Any) -> Iterator[tuple[Ui, sa.Engine]]:
    """A listener over ``db_url`` with its admin UI signed in, and an engine on its projection."""
    from contactsync.db.listener import PROJECTION_TABLES
    from contactsync.db.metadata import listener_metadata
    from contactsync.db.migrate import upgrade
    from contactsync.servers import listener_server
    from contactsync.settings import Settings

    upgrade(db_url, side="listener")
    settings = Settings(
        listener_database_url=db_url, listener_token=TOKEN, listener_secret=SECRET, admin_password=PASSWORD,
        session_secret="s", listener_run_handlers=False, listener_projection=False, **options,
    )  # fmt: skip
    engine = create_engine(settings.listener_projection_url or db_url)
    listener_metadata.create_all(engine, tables=list(PROJECTION_TABLES))  # what the projection would write to
    try:
        app = listener_server(settings, handlers={})
        with serve(app) as base, closing(listener_sign_in(base + "/admin", PASSWORD)) as http:
            yield Ui(http, ""), engine
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def listener(request: pytest.FixtureRequest) -> Iterator[tuple[Ui, sa.Engine]]:
    """A listener whose inbox and projection are in SQLite, PostgreSQL or MariaDB."""
    url = str(
        request.getfixturevalue(
            {"sqlite": "sqlite_url", "postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param]
        )
    )
    with serve_listener(url) as served:
        yield served


def test_the_listener_pages_show_every_sync_once_while_syncs_arrive_and_cap_their_counts(
    listener: tuple[Ui, sa.Engine],
) -> None:
    ui, engine = listener
    add_inbox(engine, 120, first=1, errors=60)
    with engine.connect() as conn:
        there = set(conn.execute(sa.select(ldb.inbox.c.transactionid)).scalars())
    serial = iter(range(1000, 2000, 10))
    syncs: list[str] = []
    query = ""
    while True:  # newest first, a sync arriving before each next page
        page = ui.get(f"/?{query}").text
        syncs += re.findall(r'<a href="/admin/syncs/([^"]+)" title="transactionid ', page)
        following = link(page, "down")
        if following is None:
            break
        add_inbox(engine, 3, first=next(serial))
        query = following
    assert sorted(syncs) == sorted(there)
    with engine.connect() as conn:
        stored = int(conn.execute(sa.select(sa.func.count()).select_from(ldb.inbox)).scalar_one())
    assert stored > len(there)  # some arrived while the pages were read
    assert f'<span class="n" id="received-count">{stored}</span>' in ui.get("/").text
    failures = ui.get("/handlers").text
    assert failures.count("<td>HTTP 500</td>") == 50
    rest = ui.get("/handlers?" + (link(failures, "down", "failures") or "")).text
    assert rest.count("<td>HTTP 500</td>") == 10
    crm = re.search(r'<tr data-handler="crm">(.*?)</tr>', failures)
    assert crm is not None
    assert re.findall(r'<td class="count">([^<]+)</td>', crm.group(1)) == ["0", str(stored - 60), "60"]
    add_inbox(engine, CAP, first=100_000)
    assert '<span class="n" id="received-count">10,000+</span>' in ui.get("/").text
    assert '<td class="count">10,000+</td>' in ui.get("/handlers").text


def test_the_listener_contacts_are_found_by_id_or_email_exactly(listener: tuple[Ui, sa.Engine]) -> None:
    _contacts_found_and_paged(*listener)


def test_the_listener_contacts_page_reads_a_projection_of_its_own(sqlite_url: str, mariadb_url: str) -> None:
    with serve_listener(sqlite_url, listener_projection_url=mariadb_url) as (ui, engine):
        _contacts_found_and_paged(ui, engine)
        assert '<span class="n" id="projected-count">129</span>' in ui.get("/").text


def _contacts_found_and_paged(ui: Ui, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            ldb.contacts.insert(),
            [{"contact_id": str(i), "email": f"c{i}@example.com", "last_transactionid": i, "updated_at_ms": i}
             for i in range(1, 130)],
        )  # fmt: skip

    def names(page: str) -> set[str]:
        return set(re.findall(r'<a href="/admin/contacts/([^"]+)">', page))

    assert names(ui.get("/contacts", params={"q": "12"}).text) == {"12"}
    assert names(ui.get("/contacts", params={"q": "c77@example.com"}).text) == {"77"}
    assert names(ui.get("/contacts", params={"q": "c77"}).text) == set()
    pages, query = [], "q="
    while True:
        page = ui.get(f"/contacts?{query}").text
        pages.append(names(page))
        following = link(page, "down")
        if following is None:
            break
        query = following
    assert [len(p) for p in pages] == [50, 50, 29]
    assert set().union(*pages) == {str(i) for i in range(1, 130)}
