"""``assay tokens``, and the hostile-text defences of ``assay registry``, through the CLI."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assay.cli import main
from assay.registry import Registry
from assay.registry.tokens import Role, TokenStore


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ASSAY_ACTOR", "admin-on-call")
    return f"sqlite:///{tmp_path / 'registry.db'}"


def test_tokens_create_list_revoke(url: str, tmp_path: Path, capsys) -> None:
    assert main(["tokens", "create", "ci-bot", "--role", "promoter", "--registry-url", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "token 1 for ci-bot (promoter on all models):"
    secret = out[1]
    assert secret.startswith("assay_") and len(secret) > 40
    assert main(["tokens", "create", "ana", "--grant", "m", "--registry-url", url]) == 0
    capsys.readouterr()

    # Only the hash is stored; the secret appears nowhere in the database file.
    database = (tmp_path / "registry.db").read_bytes()
    assert secret.encode() not in database
    with sqlite3.connect(tmp_path / "registry.db") as connection:
        stored = connection.execute("SELECT token_hash FROM api_tokens WHERE id = 1").fetchone()
    assert stored[0] == hashlib.sha256(secret.encode()).hexdigest()

    assert main(["tokens", "list", "--registry-url", url]) == 0
    listing = capsys.readouterr().out
    assert secret not in listing and secret[:12] in listing
    rows = [line.split() for line in listing.splitlines()[1:]]
    assert [(r[2], r[3], r[4]) for r in rows] == [
        ("ci-bot", "promoter", "*"),
        ("ana", "reader", "m"),
    ]

    with Registry.open(url) as registry:
        principal = TokenStore(registry).authenticate(secret)
        assert principal is not None and principal.role is Role.PROMOTER
        assert principal.name == "ci-bot"
    assert main(["tokens", "revoke", "1", "--registry-url", url]) == 0
    assert main(["tokens", "revoke", "1", "--registry-url", url]) == 2
    assert "already revoked by admin-on-call" in capsys.readouterr().err
    with Registry.open(url) as registry:
        assert TokenStore(registry).authenticate(secret) is None
    assert main(["tokens", "list", "--registry-url", url]) == 0
    assert "ci-bot" not in capsys.readouterr().out
    assert main(["tokens", "create", "x\x1b[31m", "--registry-url", url]) == 2
    assert "control characters" in capsys.readouterr().err


def test_tokens_record_their_last_use_at_most_once_a_minute(url: str, capsys) -> None:
    now = [datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)]
    with Registry.open(url, clock=lambda: now[0]) as registry:
        store = TokenStore(registry)
        info, secret = store.create("ci-bot", "reader", created_by="setup")
        assert info.last_used_at is None

        def last_used() -> datetime | None:
            return store.list(include_revoked=True)[0].last_used_at

        start = now[0]
        assert store.authenticate(secret) is not None
        assert last_used() == start
        # Within the resolution nothing is written: the stamp keeps the first use.
        now[0] = start + timedelta(seconds=59)
        assert store.authenticate(secret) is not None
        assert last_used() == start
        now[0] = start + timedelta(seconds=61)
        assert store.authenticate(secret) is not None
        assert last_used() == now[0]
        # A wrong or revoked token stamps nothing.
        now[0] = start + timedelta(minutes=5)
        assert store.authenticate(secret + "x") is None
        store.revoke(info.id, revoked_by="admin")
        assert store.authenticate(secret) is None
        assert last_used() == start + timedelta(seconds=61)
        assert main(["tokens", "create", "idle", "--registry-url", url]) == 0
    capsys.readouterr()
    assert main(["tokens", "list", "--all", "--registry-url", url]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert "LAST USED" in listing[0]
    assert "2026-11-30T12:01:01Z" in listing[1] and "never" in listing[2]


def test_history_escapes_stored_text_and_reserved_tags_are_refused(url: str, capsys) -> None:
    forged = "ok\n999  2020-01-01 00:00  mallory  alias_set  m@v1  champion: - -> v1\x1b[2J\u202e"
    # ESC and U+202E are refused; descriptions are prose, so a newline is kept but escaped
    # wherever the CLI prints it.
    assert main(["registry", "create", "m", "--description", forged, "--registry-url", url]) == 2
    assert "control characters (\\x1b \\u202e)" in capsys.readouterr().err
    clean = forged.replace("\x1b[2J\u202e", "")
    assert main(["registry", "create", "n", "--description", clean, "--registry-url", url]) == 0
    capsys.readouterr()
    assert main(["registry", "history", "--registry-url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2  # the header and one event: the newline did not forge a row
    assert "ok\\n999" in lines[1] and "mallory" in lines[1]

    assert main(["registry", "register", "n", "hf:/a", "--registry-url", url]) == 0
    for key in ("gate.mmlu", "eval.boolq.acc"):
        assert main(["registry", "tag", "n@v1", key, "passed", "--registry-url", url]) == 2
        assert "reserved" in capsys.readouterr().err
    assert main(["registry", "tag", "n@v1", "note", "a\nb", "--registry-url", url]) == 2
    assert "control characters" in capsys.readouterr().err
    with Registry.open(url) as registry:
        assert registry.resolve("n@v1").tags == {}
        with pytest.raises(Exception, match="at most 262144 bytes"):
            registry.create_prompt("p")
            registry.create_prompt_version("p", "x" * (256 * 1024 + 1), [])
