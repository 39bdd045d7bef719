"""Model and version searches run in SQL answer what the record-by-record matcher answers.

The reference is the search as ``assay server`` ran it before the database did: every version
listed, each filter term checked with ``assay.server.search.matches``, stable sorts on the
milliseconds the API shows, a slice for the page. The SQL path (``Registry.search_versions``,
``Registry.search_models`` and the MLflow endpoints over them) must give the same rows in the
same order, with the same "more follows", on SQLite and on Postgres, for filters on every key
with every comparator: LIKE and ILIKE with ``%``, ``_``, backslashes and the characters GLOB
treats as wildcards, letters beyond ASCII, tags a record lacks, run_id, source, numbers.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from assay.registry import ModelVersion, RegisteredModel, Registry
from assay.registry.search import Comparison
from assay.registry.tokens import TokenStore
from assay.server import create_app
from assay.server.http import millis
from assay.server.search import MAX_FILTER_CHARS, decode_page_token, matches, parse_filter

VERSION_ATTRIBUTES = ["name", "version_number", "run_id", "source_path"]


class StepClock:
    """Each reading 350 µs after the last: neighbours often share a millisecond, so orders by
    time must fall through to their tie-breaks exactly as the reference's stable sorts do."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, 999_000, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=350)
        return self.now


MODELS = ["alpha", "Alpha", "alpha-2", "a_b", "axb", "beta.x", "Zed", "zed", "0model", "k"]
# Characters with a meaning to LIKE, GLOB or an escape, and letters whose case folds differ
# between Python and SQLite's ASCII-only folding.
TEXTS = [
    "nlp", "NLP", "n%p", "n_p", "nxp", "a\\b", "a\\\\b", "x[1]", "x*y", "x?y", "é", "É",
    "straße", "STRASSE", "\u212a", "k", "K", "ſ", "s", "0.5", "", " lead", "50%", "a_%b",
]  # fmt: skip
SOURCES = [
    "hf:/org/a%b", "hf:/org/a_b", "hf:/org/axb", "hf:/org/a\\b", "hf:/org/É", "hf:/org/é",
    "s3://bucket/x[1]*?", "hf:/Org/\u212a", "file:/m/NLP", "hf:/org/nlp",
]  # fmt: skip


def populate(registry: Registry) -> None:
    texts = itertools.cycle(TEXTS)
    sources = itertools.cycle(SOURCES)
    for i, name in enumerate(MODELS):
        tags = {"team": next(texts)} if i % 3 else {}
        if i % 4 == 0:
            tags["owner"] = next(texts)
        registry.create_model(name, tags=tags)
    for round_ in range(4):
        for i, name in enumerate(MODELS):
            if (i + round_) % 5 == 4:
                continue  # models end up with different version counts
            tags = {}
            if (i + round_) % 3:
                tags["team"] = next(texts)
            if (i * round_) % 2:
                tags["eval.suite.acc"] = next(texts)
            registry.create_version(name, next(sources), tags=tags)
    registry.set_tag("Zed", "team", "zed-team")  # moves the model's last_updated_timestamp


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """One populated store per backend for the module: the tests read it (the one that
    writes changes nothing a reference is not recomputed from)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('search') / 'registry.db'}"
    else:
        import psycopg

        server = request.getfixturevalue("postgres_url")
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        url = server.rsplit("/", 1)[0] + f"/{name}"
    store = Registry.open(url, clock=StepClock())
    try:
        populate(store)
        yield store
    finally:
        store.close()


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


PATTERNS = [
    "%", "_", "", "%%", "a%", "%b", "%a%", "a_b", "a\\b", "a\\%", "%\\%", "%\\\\%", "%[%",
    "x[1]%", "%*%", "%?%", "x_y", "n_p", "n%p", "N%", "%P", "nlp", "NLP", "%é%", "%É%", "É",
    "%k", "%K", "\u212a", "%ſ", "S", "%ss%", "%SS%", "straße", "%STRASSE", "%ß%", "0._",
    "%0%", "_%_", "%_%_%_%", "alpha", "ALPHA", "alpha%", "%-%", "z%", "Z%", "%.x", "%/org/%",
    "hf:/org/_", "%/o_g/%", "s3://%", "%l%p%", "%50\\%", "50%", "a\\_%b", "a_\\%b",
    " lead", "% lead", "a\x00", "%\x00%",
]  # fmt: skip


def text_filters(key: str) -> list[str]:
    out = [f"{key} {op} {_quote(p)}" for p in PATTERNS for op in ("LIKE", "ILIKE")]
    out += [f"{key} {op} {_quote(t)}" for t in [*TEXTS, "alpha", "a\x00"] for op in ("=", "!=")]
    return out


def version_filters() -> list[str]:
    out = text_filters("name") + text_filters("source_path") + text_filters("tags.team")
    out += text_filters("run_id")[::7]
    out += [
        f"tag.`eval.suite.acc` {op} {_quote(v)}" for v in ("0.5", "%5", "") for op in ("=", "!=")
    ]
    out += ["tags.missing != 'x'", "tags.missing LIKE '%'", "tags.team != ''"]
    out += ["name IN ('alpha', 'zed', 'nope')", "name NOT IN ('alpha', 'Alpha', 'k')"]
    out += ["name IN ('a\x00', 'k')", "name NOT IN ('a\x00')", "run_id IN ('', 'r1')"]
    out += ["run_id NOT IN ('')", "run_id IN ('r1')"]
    for op in ("=", "!=", "<", "<=", ">", ">="):
        for value in ("0", "1", "2", "'3'", "-1", "4", str(10**30)):
            out.append(f"version_number {op} {value}")
    out += [
        "name LIKE 'a%' AND version_number >= 2",
        "tags.team ILIKE 'n%' AND source_path LIKE 'hf:%'",
        "name != 'zed' AND tags.team != 'nlp' AND version_number < 4",
        "name ILIKE 'ALPHA%' AND run_id = '' AND tags.team LIKE '%'",
        "source_path ILIKE '%é' AND name NOT IN ('alpha')",
    ]
    return out


def model_filters() -> list[str]:
    out = text_filters("name") + text_filters("tags.team")[::2] + text_filters("tags.owner")[::5]
    out += ["name IN ('alpha', 'zed', 'nope')", "name NOT IN ('alpha', 'Alpha', 'k')"]
    out += ["tags.team LIKE '%' AND tags.owner LIKE '%'", "name LIKE '%a%' AND tags.team != 'x'"]
    return out


VERSION_ORDERS = [
    [("last_updated_timestamp", True), ("name", False), ("version_number", True)],
    [("creation_timestamp", False), ("name", False), ("version_number", True)],
    [("name", True), ("version_number", False)],
    [("version_number", False), ("name", False)],
]
MODEL_ORDERS = [
    [("name", False)],
    [("name", True)],
    [("last_updated_timestamp", True), ("name", False)],
    [("creation_timestamp", False), ("name", False)],
]


def _version_value(version: ModelVersion, term: Comparison) -> Any:
    if term.tag is not None:
        return version.tags.get(term.tag)
    return {
        "name": version.model,
        "version_number": version.version,
        "run_id": "",
        "source_path": version.source,
    }[term.key]


def reference(
    pool: list[Any],
    terms: list[Comparison],
    order: list[tuple[str, bool]],
    value: Callable[[Any, Comparison], Any],
    keys: dict[str, Callable[[Any], Any]],
) -> list[Any]:
    """The search as the server answered it in Python: match every record, stable sorts."""
    hits = [
        r
        for r in pool
        if all(matches(t, value(r, t), numeric=t.key == "version_number") for t in terms)
    ]
    for key, descending in reversed(order):
        hits.sort(key=keys[key], reverse=descending)
    return hits


VERSION_KEYS: dict[str, Callable[[ModelVersion], Any]] = {
    "name": lambda v: v.model,
    "version_number": lambda v: v.version,
    "creation_timestamp": lambda v: millis(v.created_at),
    "last_updated_timestamp": lambda v: millis(v.created_at),
}
MODEL_KEYS: dict[str, Callable[[RegisteredModel], Any]] = {
    "name": lambda m: m.name,
    "creation_timestamp": lambda m: millis(m.created_at),
    "last_updated_timestamp": lambda m: millis(m.updated_at),
}


def _folds_beyond_ascii(terms: list[Comparison], row: Any, value: Callable) -> bool:
    """Whether an ILIKE term meets letters beyond ASCII on ``row`` (in its pattern or the
    value): there Postgres folds case by its locale, the documented difference."""
    return any(
        t.op == "ILIKE" and not (str(t.value).isascii() and str(value(row, t) or "").isascii())
        for t in terms
    )


def _same_where_folding_agrees(got: list, expected: list, terms: list, value: Callable) -> None:
    """On Postgres, a filter whose ILIKE meets letters beyond ASCII: the whole answer, less
    the rows where case folding is the database's, is the reference's."""
    kept = [r for r in expected if not _folds_beyond_ascii(terms, r, value)]
    assert [r for r in got if not _folds_beyond_ascii(terms, r, value)] == kept


def _vkey(v: ModelVersion) -> tuple[str, int]:
    return (v.model, v.version)


def test_version_searches_in_sql_equal_the_python_matcher(registry: Registry) -> None:
    pool = registry.list_versions()
    assert len(pool) == 32
    # The clock makes neighbours share milliseconds: the tie-breaks are exercised.
    assert len({millis(v.created_at) for v in pool}) < len(pool)
    postgres = registry.url.startswith("postgresql")
    compared = partial = nonempty = 0
    for i, text in enumerate(version_filters()):
        terms = parse_filter(text, VERSION_ATTRIBUTES)
        folds = postgres and any(_folds_beyond_ascii(terms, v, _version_value) for v in pool)
        # Two of the orders per filter, every order over the whole list; pages: the whole
        # answer, one from its middle, and the one that ends exactly at its end.
        for order in (VERSION_ORDERS[i % 4], VERSION_ORDERS[(i + 1) % 4]):
            expected = reference(pool, terms, order, _version_value, VERSION_KEYS)
            nonempty += bool(expected) and bool(len(expected) < len(pool))
            if folds:
                got = registry.search_versions(terms, order, 0, 1000).items
                _same_where_folding_agrees(got, expected, terms, _version_value)
                partial += 1
                continue
            for offset, limit in ((0, 1000), (2, 3), (0, len(expected) or 1)):
                page = registry.search_versions(terms, order, offset, limit)
                want = [_vkey(v) for v in expected[offset : offset + limit]]
                assert [_vkey(v) for v in page.items] == want, (text, order, offset, limit)
                assert page.more == (offset + limit < len(expected)), (text, order, offset)
                compared += 1
    assert compared > 2500 and nonempty > 300
    assert partial < (300 if postgres else 1)


def test_records_in_a_page_are_whole(registry: Registry) -> None:
    """Tags, aliases and stage of a page's versions are those the registry lists."""
    registry.set_alias("alpha", "champion", 2)
    registry.transition_stage("alpha", 3, "Staging")
    listed = {_vkey(v): v for v in registry.list_versions()}
    order = [("name", False), ("version_number", False)]
    page = registry.search_versions([], order, 0, 100)
    assert len(page.items) == len(listed) and not page.more
    for version in page.items:
        assert version == listed[_vkey(version)]


def test_model_searches_in_sql_equal_the_python_matcher(registry: Registry) -> None:
    pool = registry.list_models()
    postgres = registry.url.startswith("postgresql")

    def value(model: RegisteredModel, term: Comparison) -> Any:
        return model.tags.get(term.tag) if term.tag is not None else model.name

    compared = 0
    for i, text in enumerate(model_filters()):
        terms = parse_filter(text, ["name"])
        folds = postgres and any(_folds_beyond_ascii(terms, m, value) for m in pool)
        for order in (MODEL_ORDERS[i % 4], MODEL_ORDERS[(i + 1) % 4]):
            expected = reference(pool, terms, order, value, MODEL_KEYS)
            if folds:
                got = registry.search_models(terms, order, 0, 1000).items
                _same_where_folding_agrees(got, expected, terms, value)
                continue
            for offset, limit in ((0, 1000), (1, 2)):
                page = registry.search_models(terms, order, offset, limit)
                want = [m.name for m in expected[offset : offset + limit]]
                assert [m.name for m in page.items] == want, (text, order, offset)
                assert page.more == (offset + limit < len(expected)), (text, order, offset)
                compared += 1
    assert compared > 500


# -- through the MLflow endpoints: orders as MLflow spells them, and page tokens -------------


@pytest.fixture
def client(registry: Registry) -> Iterator[TestClient]:
    secret = TokenStore(registry).create("rita", "reader", (), created_by="setup")[1]
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_app(registry), base_url="http://127.0.0.1", headers=headers) as http:
        yield http


def _walk(client: TestClient, path: str, params: dict[str, Any], field: str) -> list[dict]:
    """Every page of a search, following ``next_page_token``."""
    out: list[dict] = []
    token = None
    for _ in range(100):
        answer = client.get(path, params={**params, **({"page_token": token} if token else {})})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        out += body.get(field, [])
        token = body.get("next_page_token")
        if token is None:
            return out
        assert decode_page_token(token) == len(out)
    raise AssertionError("more than 100 pages")


@pytest.mark.parametrize(
    ("filter_", "order_by"),
    [
        ("", []),
        ("tags.team LIKE 'n%'", []),
        ("name ILIKE 'a%'", ["creation_timestamp ASC"]),
        ("source_path LIKE 'hf:/org/a_b'", ["name DESC"]),
        ("name = 'alpha'", ["version_number ASC"]),
        ("name = 'alpha'", ["last_updated_timestamp DESC"]),
        ("name = 'alpha'", ["name ASC", "creation_timestamp DESC"]),
        ("version_number > 1 AND run_id = ''", ["name ASC", "version_number DESC"]),
    ],
)
def test_version_search_endpoint_pages_through_the_same_answer(
    registry: Registry, client: TestClient, filter_: str, order_by: list[str]
) -> None:
    terms = parse_filter(filter_, VERSION_ATTRIBUTES)
    named = [tuple(clause.split()) for clause in order_by]
    order = [(key, direction == "DESC") for key, direction in named]
    defaults = [("last_updated_timestamp", True), ("name", False), ("version_number", True)]
    order = (order or defaults[:1]) + [d for d in defaults[1:] if d[0] not in dict(order)]
    pool = registry.list_versions()
    expected = reference(pool, terms, order, _version_value, VERSION_KEYS)
    got = _walk(
        client,
        "/api/2.0/mlflow/model-versions/search",
        {"filter": filter_, "order_by": order_by, "max_results": 3},
        "model_versions",
    )
    assert [(v["name"], int(v["version"])) for v in got] == [_vkey(v) for v in expected]


@pytest.mark.parametrize(
    ("filter_", "order_by"),
    [
        ("", []),
        ("name LIKE '%a%'", ["last_updated_timestamp DESC"]),
        ("tags.team != 'nlp'", ["name DESC"]),
        ("name NOT IN ('k')", ["creation_timestamp ASC"]),
    ],
)
def test_model_search_endpoint_pages_through_the_same_answer(
    registry: Registry, client: TestClient, filter_: str, order_by: list[str]
) -> None:
    terms = parse_filter(filter_, ["name"])
    order = [(c.split()[0], c.split()[1] == "DESC") for c in order_by]
    if "name" not in dict(order):
        order.append(("name", False))
    pool = registry.list_models()

    def value(model: RegisteredModel, term: Comparison) -> Any:
        return model.tags.get(term.tag) if term.tag is not None else model.name

    expected = reference(pool, terms, order, value, MODEL_KEYS)
    got = _walk(
        client,
        "/api/2.0/mlflow/registered-models/search",
        {"filter": filter_, "order_by": order_by, "max_results": 3},
        "registered_models",
    )
    assert [m["name"] for m in got] == [m.name for m in expected]
    assert len(got) > 0


def test_search_reads_only_a_page_of_versions(registry: Registry) -> None:
    """The database pages: a 2-row page turns 2 versions into records, whatever matched."""
    built: list[int] = []
    original = registry._version_records

    def counting(session, rows):  # the one place versions become records
        rows = list(rows)
        built.append(len(rows))
        return original(session, rows)

    registry._version_records = counting  # type: ignore[method-assign]
    terms = parse_filter("source_path LIKE '%'", VERSION_ATTRIBUTES)
    page = registry.search_versions(terms, [("name", False), ("version_number", True)], 4, 2)
    assert len(page.items) == 2 and page.more
    assert built == [2]


def test_a_filter_of_a_thousand_terms_is_answered(registry: Registry) -> None:
    """SQLite refuses an expression over 1000 deep and ``a AND b AND …`` nests one level per
    term: a 16 KiB filter of distinct terms is still answered, as the reference answers it."""
    text, i = "tags.team LIKE '%'", 0
    while len(text) < MAX_FILTER_CHARS - 20:
        text += f" AND name!='{i:x}'"
        i += 1
    terms = parse_filter(text, VERSION_ATTRIBUTES)
    assert len(terms) > 1000
    order = VERSION_ORDERS[0]
    expected = reference(registry.list_versions(), terms, order, _version_value, VERSION_KEYS)
    assert expected
    page = registry.search_versions(terms, order, 0, 1000)
    assert [_vkey(v) for v in page.items] == [_vkey(v) for v in expected]
    models = registry.search_models(parse_filter(text, ["name"]), [("name", False)], 0, 1000)
    assert [m.name for m in models.items] == sorted(
        m.name for m in registry.list_models() if "team" in m.tags
    )
