"""The decision log is tamper-evident (DESIGN.md section 6: "`tether audit verify` detects any
edit, deletion, insertion or reordering"): each kind of tampering is found, and located."""

from __future__ import annotations

import itertools
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from conftest import EMAIL_SCHEMA, POLICIES, delegate
from test_cli import run_cli

from tether import Guard
from tether.audit import record_hash, verify
from tether.audit.chain import GENESIS
from tether.audit.checkpoints import write_checkpoint
from tether.credentials.jws import unverified_payload
from tether.model import DecisionRecord
from tether.store import DB_FILE, Store
from tether.store.audit import canonical_columns

pytestmark = pytest.mark.sqlite  # the tampering is done in the SQLite file itself

PER_WRITER = 150


def _writer(home: Path, calls: int) -> None:
    with (
        Guard.embedded(home=home) as guard,
        guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["send_email"]
        ) as task,
    ):
        for i in range(calls):
            to = "bob@acme.com" if i % 3 else "eve@evil.io"
            task.authorize("send_email", {"to": to, "subject": f"#{i}"})


@pytest.fixture
def log(home: Path) -> Iterator[Path]:
    """A home whose log two writers (two Guards, as two processes would) appended to."""
    with Guard.embedded(home=home) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        guard.register_tool(
            "acme", "send_email", effects=["external"], sinks=["to"], args_schema=EMAIL_SCHEMA
        )
        guard.activate_policies("acme", POLICIES)
        delegate(guard, "acme", "coder")
    _writer(home, PER_WRITER)
    _writer(home, PER_WRITER)
    yield home


def check(home: Path) -> list[str]:
    store = Store.at_home(home)
    guard = Guard(store)
    try:
        return verify(store, guard.credentials.keyring).problems
    finally:
        guard.close()


def db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / DB_FILE, isolation_level=None)


def rows(home: Path, chain: str) -> list[DecisionRecord]:
    store = Store.at_home(home)
    try:
        columns = [*canonical_columns("decisions"), "hash", "seq"]
        found = [
            msgspec.convert(dict(zip(columns, r, strict=True)), DecisionRecord, strict=False)
            for r in store.audit.rows("decisions")
        ]
        return sorted((r for r in found if r.chain == chain), key=lambda r: r.chain_seq or 0)
    finally:
        store.close()


def chains(home: Path) -> list[str]:
    with db(home) as conn:
        found = conn.execute(
            "SELECT chain FROM decisions WHERE chain IS NOT NULL GROUP BY chain ORDER BY COUNT(*) DESC"
        ).fetchall()
    return [c for (c,) in found]


def test_an_untouched_log_verifies(log: Path) -> None:
    store = Store.at_home(log)
    guard = Guard(store)
    try:
        report = verify(store, guard.credentials.keyring)
    finally:
        guard.close()
    assert report.intact, report.problems
    with db(log) as conn:
        (events,) = conn.execute("SELECT COUNT(*) FROM audit_events").fetchone()
        (event_chains,) = conn.execute("SELECT COUNT(DISTINCT chain) FROM audit_events").fetchone()
    assert events > 0  # grants, keys and tokens were issued along the way
    assert report.records == 2 * PER_WRITER + events
    assert report.chains == 2 + event_chains
    assert report.checkpoints >= 2  # each writer signs its chain's head when it closes
    result = run_cli(log, "audit", "verify")
    assert result.returncode == 0 and "intact" in result.stdout


def test_each_record_links_to_the_one_before(log: Path) -> None:
    for chain in chains(log):
        records = rows(log, chain)
        assert [r.chain_seq for r in records] == list(range(1, len(records) + 1))
        assert records[0].prev_hash == GENESIS
        for before, after in itertools.pairwise(records):
            assert after.prev_hash == before.hash == record_hash(before)


def test_an_edited_record_is_found(log: Path) -> None:
    victim = rows(log, chains(log)[0])[40]
    with db(log) as conn:
        conn.execute(
            'UPDATE decisions SET args = \'{"to":"mallory@evil.io"}\' WHERE id = ?',
            (victim.id,),
        )
    assert check(log) == [
        f"decision {victim.id} ({victim.chain} #41) was altered: its hash does not match its content"
    ]
    result = run_cli(log, "audit", "verify")
    assert result.returncode == 3 and victim.id in result.stdout


def test_a_deleted_record_is_found(log: Path) -> None:
    chain = chains(log)[0]
    victim, after = rows(log, chain)[10:12]
    with db(log) as conn:
        conn.execute("DELETE FROM decisions WHERE id = ?", (victim.id,))
    assert check(log) == [f"{chain}: #11 missing before decision {after.id} ({chain} #12): deleted"]


def test_an_inserted_record_is_found(log: Path) -> None:
    chain = chains(log)[0]
    records = rows(log, chain)
    before, displaced = records[19], records[20]
    with db(log) as conn:  # make room at #21, then slip a well-formed record in
        for record in reversed(records[20:]):
            conn.execute(
                "UPDATE decisions SET chain_seq = chain_seq + 1 WHERE id = ?", (record.id,)
            )
        forged = msgspec.structs.replace(
            before, id="dec_forged", chain_seq=21, prev_hash=before.hash, effect="allow"
        )
        forged = msgspec.structs.replace(forged, hash=record_hash(forged))
        values = msgspec.structs.asdict(forged)
        conn.execute(
            f"INSERT INTO decisions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            [v.value if hasattr(v, "value") else v for v in values.values()],
        )
    problems = check(log)
    # The log is read in the order rows were written: the forged row comes last, out of place.
    assert f"decision dec_forged ({chain} #21) is out of order or a duplicate: inserted" in (
        problems
    )
    assert f"{chain}: #21 missing before decision {displaced.id} ({chain} #22): deleted" in (
        problems
    )


def test_a_reordering_is_found(log: Path) -> None:
    chain = chains(log)[1]
    first, second = rows(log, chain)[5:7]
    with db(log) as conn:
        conn.execute("UPDATE decisions SET chain_seq = -1 WHERE id = ?", (first.id,))
        conn.execute("UPDATE decisions SET chain_seq = 6 WHERE id = ?", (second.id,))
        conn.execute("UPDATE decisions SET chain_seq = 7 WHERE id = ?", (first.id,))
    problems = check(log)
    assert f"{chain}: #6 missing before decision {first.id} ({chain} #7): deleted" in problems
    assert f"decision {second.id} ({chain} #6) is out of order or a duplicate: inserted" in (
        problems
    )


def test_a_truncated_tail_and_a_removed_chain_are_found(log: Path) -> None:
    short, gone = chains(log)
    with db(log) as conn:
        conn.execute(
            "DELETE FROM decisions WHERE chain = ? AND chain_seq > ?", (short, PER_WRITER - 5)
        )
        conn.execute("DELETE FROM decisions WHERE chain = ?", (gone,))
    problems = check(log)
    assert any(
        f"{short} reached #{PER_WRITER}, now it ends at #{PER_WRITER - 5}: truncated" in p
        for p in problems
    ), problems
    assert any(f"{gone} is gone: removed" in p for p in problems), problems


def test_a_rewritten_chain_is_held_to_its_signed_checkpoint(log: Path) -> None:
    """An attacker who edits a record and recomputes every hash after it keeps the links whole,
    but not the head the checkpoint signed."""
    chain = chains(log)[0]
    records = rows(log, chain)
    previous = records[99].hash
    with db(log) as conn:
        for record in records[100:]:
            changed = msgspec.structs.replace(
                record,
                prev_hash=previous,
                effect=_flipped(record.effect) if record is records[100] else record.effect,
            )
            changed = msgspec.structs.replace(changed, hash=record_hash(changed))
            conn.execute(
                "UPDATE decisions SET effect = ?, prev_hash = ?, hash = ? WHERE id = ?",
                (str(changed.effect), changed.prev_hash, changed.hash, record.id),
            )
            previous = changed.hash
    problems = check(log)
    assert any(
        f"{chain} #{PER_WRITER} is not the record it signed: rewritten" in p for p in problems
    )
    assert not any("altered" in p or "does not follow" in p for p in problems)


def _flipped(effect: str) -> str:
    return "deny" if effect == "allow" else "allow"


def test_forged_checkpoints_and_unchained_records_are_found(log: Path) -> None:
    with db(log) as conn:
        (seq, statement) = conn.execute(
            "SELECT seq, statement FROM audit_checkpoints LIMIT 1"
        ).fetchone()
        header, body, signature = statement.split(".")
        conn.execute(
            "UPDATE audit_checkpoints SET statement = ? WHERE seq = ?",
            (f"{header}.{body[:-2]}AA.{signature}", seq),
        )
        conn.execute(
            "INSERT INTO decisions (id, ts, tool, args_digest, args, effect, stage, reasons) "
            "VALUES ('dec_smuggled', 0, 'send_email', '', '{}', 'allow', 'policy', '[]')"
        )
    problems = check(log)
    assert f"checkpoint {seq}: its signature does not verify" in problems
    assert "decision dec_smuggled is in no chain (written outside Tether's log)" in problems


# -- regressions from the review ------------------------------------------------------------------


def test_a_chain_forged_with_its_own_hashes_is_found(log: Path) -> None:
    template = rows(log, chains(log)[0])[0]
    previous = GENESIS
    with db(log) as conn:
        for n in range(1, 4):
            forged = msgspec.structs.replace(
                template, id=f"dec_forged{n}", chain="chain_forged", chain_seq=n,
                prev_hash=previous, ts=template.ts - 86400,
            )  # fmt: skip
            forged = msgspec.structs.replace(forged, hash=record_hash(forged))
            previous = forged.hash
            values = msgspec.structs.asdict(forged)
            conn.execute(
                f"INSERT INTO decisions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                [str(v) if hasattr(v, "value") else v for v in values.values()],
            )
    assert any("chain_forged has records from before checkpoint" in p for p in check(log))


def test_a_deleted_checkpoint_is_found(log: Path) -> None:
    with db(log) as conn:
        (first,) = conn.execute("SELECT MIN(seq) FROM audit_checkpoints").fetchone()
        conn.execute("DELETE FROM audit_checkpoints WHERE seq = ?", (first,))
    assert any("follows a checkpoint that is gone: deleted" in p for p in check(log))


def test_odd_stored_values_are_reported_not_raised(log: Path) -> None:
    chain = chains(log)[0]
    victims = rows(log, chain)[3:5]
    with db(log) as conn:
        conn.execute("UPDATE decisions SET chain_seq = 'x' WHERE id = ?", (victims[0].id,))
        conn.execute(
            "UPDATE decisions SET args = CAST(X'FF7B7D' AS TEXT) WHERE id = ?", (victims[1].id,)
        )
    problems = check(log)
    assert any(f"{victims[0].id} was altered: its place 'x' is not a number" in p for p in problems)
    assert any(f"{victims[1].id} ({chain} #5) was altered" in p for p in problems)


def test_a_clock_giving_whole_seconds_still_verifies(home: Path) -> None:
    with Guard(Store.at_home(home), clock=lambda: int(time.time())) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        guard.register_tool("acme", "read_file", effects=["read"])
        guard.activate_policies("acme", {"p.cedar": "permit (principal, action, resource);"})
        delegate(guard, "acme", "coder")
        with guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
        ) as t:
            t.authorize("read_file", {})
            t.authorize("send_\ud800email", {})  # not valid Unicode: denied, and still recorded
        assert len(guard.store.decisions(limit=10)) == 2
        assert verify(guard.store, guard.credentials.keyring).intact


def test_a_checkpoint_that_fails_never_changes_an_answer(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tether.audit.checkpoints.EVERY_RECORDS", 2)
    monkeypatch.setattr("tether.audit.checkpoints.RETRY_SECONDS", 0.01)
    with Guard.embedded(home=home) as guard:
        guard.add_workspace("acme")
        guard.register_agent("acme", "coder", kind="coder", owner="alice@acme.com")
        guard.register_tool("acme", "read_file", effects=["read"])
        guard.activate_policies("acme", {"p.cedar": "permit (principal, action, resource);"})
        delegate(guard, "acme", "coder")
        failing = {"left": 1}
        original = guard.store.audit.add_checkpoint

        def flaky(at: float, statement: str) -> None:
            if failing["left"]:
                failing["left"] -= 1
                raise RuntimeError("database is locked")
            original(at, statement)

        monkeypatch.setattr(guard.store.audit, "add_checkpoint", flaky)
        with guard.task(
            workspace="acme", agent="coder", user="alice", request="", tools=["read_file"]
        ) as t:
            decisions = [t.authorize("read_file", {}) for _ in range(4)]
        assert [d.effect.value for d in decisions] == ["allow"] * 4, [d.reasons for d in decisions]
        deadline = time.monotonic() + 10
        while not guard.store.audit.checkpoints() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert failing["left"] == 0 and guard.store.audit.checkpoints()  # failed, then retried


def test_checkpoints_carry_on_from_the_one_before(log: Path) -> None:
    """Each checkpoint reads only the rows after the one before read and names the chains that
    grew; together they name every chain's head: what a full read of the log gives."""
    store = Store.at_home(log)
    try:
        full, top = store.audit.heads(after={})
        statements = [json.loads(unverified_payload(s)) for _, _, s in store.audit.checkpoints()]
    finally:
        store.close()
    assert len(statements) >= 2
    stated: dict[str, tuple[int, str]] = {}
    for body in statements:
        stated.update({c: (seq, digest) for c, (seq, digest) in body["chains"].items()})
    assert stated == full and statements[-1]["upto"] == top


PARALLEL_CHECK = """
import importlib, json, sys
from tether import Guard
v = importlib.import_module("tether.audit.verify")  # the module (tether.audit.verify is its function)
v.PARALLEL_FROM = 10
with Guard.embedded(home=sys.argv[1]) as guard:
    keyring = guard.credentials.keyring
    serial = v.verify(guard.store, keyring)
    parallel = v.verify(guard.store, keyring, workers=3)
    stretches = len(v._stretches(guard.store, "decisions", v._Known(None), 3))  # 3, and the tail
print(json.dumps({"serial": sorted(serial.problems), "parallel": sorted(parallel.problems),
                  "records": [serial.records, parallel.records], "stretches": stretches}))
"""


@pytest.mark.parametrize("tampering", ["none", "edit", "delete", "swap", "truncate"])
def test_reading_the_log_in_parallel_finds_what_reading_it_in_one_go_does(
    log: Path, tmp_path: Path, tampering: str
) -> None:
    """Stretches read by forked processes and joined: every link across a stretch boundary is
    checked when they are joined (run in a fresh process: forking needs one without threads)."""
    chain = chains(log)[0]
    records = rows(log, chain)
    with db(log) as conn:
        if tampering == "edit":
            conn.execute("UPDATE decisions SET tool = 'rm' WHERE id = ?", (records[70].id,))
        elif tampering == "delete":
            conn.execute("DELETE FROM decisions WHERE id = ?", (records[75].id,))
        elif tampering == "swap":
            a, b = records[74], records[75]
            conn.execute("UPDATE decisions SET chain_seq = -1 WHERE id = ?", (a.id,))
            conn.execute("UPDATE decisions SET chain_seq = ? WHERE id = ?", (a.chain_seq, b.id))
            conn.execute("UPDATE decisions SET chain_seq = ? WHERE id = ?", (b.chain_seq, a.id))
        elif tampering == "truncate":
            conn.execute("DELETE FROM decisions WHERE chain = ? AND chain_seq > 140", (chain,))
    script = tmp_path / "check.py"
    script.write_text(PARALLEL_CHECK)
    result = subprocess.run(
        [sys.executable, str(script), str(log)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["stretches"] == 4
    assert found["parallel"] == found["serial"]
    assert found["records"][0] == found["records"][1]
    assert bool(found["serial"]) is (tampering != "none")


def test_a_backdated_record_is_found(log: Path) -> None:
    """A well-linked record appended to a closed writer's chain, dated yesterday: it is past
    what any checkpoint names, yet dated before the newest checkpoint."""
    chain = chains(log)[0]
    last = rows(log, chain)[-1]
    forged = msgspec.structs.replace(
        last,
        id="dec_backdated",
        ts=last.ts - 86400,
        chain_seq=(last.chain_seq or 0) + 1,
        prev_hash=last.hash,
        effect="allow",
    )
    forged = msgspec.structs.replace(forged, hash=record_hash(forged))
    values = msgspec.structs.asdict(forged)
    with db(log) as conn:
        conn.execute(
            f"INSERT INTO decisions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            [v.value if hasattr(v, "value") else v for v in values.values()],
        )
    problems = check(log)
    where = f"decision dec_backdated ({chain} #{forged.chain_seq})"
    assert f"{where} is dated well before the record before it in its chain: backdated" in (
        problems
    )
    assert (
        f"{where} is dated before the newest checkpoint, which does not name it: "
        "backdated or slipped in"
    ) in problems


def test_the_time_a_checkpoint_was_made_is_the_signed_one(log: Path) -> None:
    """Rewriting the checkpoints' `at` column (unsigned) hides nothing: verify reads the time
    inside the signed statement."""
    gone = chains(log)[1]
    with db(log) as conn:
        conn.execute("UPDATE audit_checkpoints SET at = 0")
        conn.execute("DELETE FROM decisions WHERE chain = ?", (gone,))
    assert any(f"{gone} is gone: removed" in p for p in check(log))


def test_bytes_that_are_not_utf8_are_an_alteration(log: Path) -> None:
    """Text Tether never writes (not UTF-8) cannot be read back as what a record held."""
    chain = chains(log)[0]
    victim = rows(log, chain)[30]
    with db(log) as conn:
        raw = victim.args.encode()
        conn.execute(
            "UPDATE decisions SET args = CAST(? AS BLOB) WHERE id = ?", (raw + b"\xe9", victim.id)
        )
        conn.execute("UPDATE decisions SET args = CAST(args AS TEXT) WHERE id = ?", (victim.id,))
    problems = check(log)
    assert (
        f"decision {victim.id} ({chain} #31) was altered: its hash does not match its content"
        in (problems)
    )


def test_a_checkpoint_names_the_chains_that_grew_not_every_chain_ever(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the rows it reads again (LOOKBACK, for late commits on PostgreSQL), a checkpoint
    restates no quiet chain: its size follows what is written, not how many writers came."""
    monkeypatch.setattr("tether.audit.checkpoints.LOOKBACK", 0)
    _writer(log, 5)  # a third writer, after the two of the fixture
    store = Store.at_home(log)
    try:
        newest = json.loads(unverified_payload(store.audit.checkpoints()[-1][2]))
    finally:
        store.close()
    assert len(chains(log)) == 3 and len(newest["chains"]) <= 2  # its decisions and events


def test_a_checkpointer_whose_store_was_closed_under_it_stops_instead_of_retrying(
    home: Path,
) -> None:
    """A Guard whose store another closed (tests share stores so) must not retry a checkpoint
    forever on a thread of its own: a closed store says so, and the thread ends."""
    from tether.audit.checkpoints import EVERY_RECORDS, Checkpointer  # noqa: PLC0415

    store = Store.at_home(home)
    guard = Guard(store)
    checkpointer = Checkpointer(store, guard.credentials.keyring)
    store.close()
    checkpointer.appended(EVERY_RECORDS)  # starts its thread, which tries at once
    thread = checkpointer._thread
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()


def _live_writer(home: Path, calls: int) -> Guard:
    """A writer still running (its Guard open, so no closing checkpoint yet) that appended
    `calls` decisions."""
    guard = Guard.embedded(home=home)
    with guard.task(
        workspace="acme", agent="coder", user="alice", request="", tools=["send_email"]
    ) as task:
        for i in range(calls):
            task.authorize("send_email", {"to": "bob@acme.com", "subject": f"#{i}"})
    return guard


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_live_writer_does_not_sign_its_own_chain_cut_short(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone with the database deletes a running writer's newest records (no checkpoint
    names them yet): the writer's next checkpoint must state the head it committed, not the
    cut one it reads back, or verify would find the log intact."""
    guard = _live_writer(log, 20)
    chain = guard.audit.chain.id
    with db(log) as conn:
        conn.execute("DELETE FROM decisions WHERE chain = ? AND chain_seq > 12", (chain,))
    with caplog.at_level(logging.ERROR, logger="tether.audit"):
        guard.close()  # its closing checkpoint
    problems = check(log)
    assert any(f"{chain} reached #20, now it ends at #12: truncated" in p for p in problems), (
        problems
    )
    assert any(chain in e and "short of #20" in e for e in _errors(caplog)), caplog.text


def test_a_live_writer_does_not_sign_its_newest_record_rewritten(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The newest record edited and its hash recomputed: its links still hold (nothing follows
    it), so only the head its writer committed, signed, tells it from the original."""
    guard = _live_writer(log, 20)
    chain = guard.audit.chain.id
    newest = rows(log, chain)[-1]
    forged = msgspec.structs.replace(newest, effect=_flipped(newest.effect))
    forged = msgspec.structs.replace(forged, hash=record_hash(forged))
    with db(log) as conn:
        conn.execute(
            "UPDATE decisions SET effect = ?, hash = ? WHERE id = ?",
            (str(forged.effect), forged.hash, newest.id),
        )
    with caplog.at_level(logging.ERROR, logger="tether.audit"):
        guard.close()
    problems = check(log)
    assert any(f"{chain} #20 is not the record it signed: rewritten" in p for p in problems), (
        problems
    )
    assert any(chain in e and "not the record this writer" in e for e in _errors(caplog))


def test_writers_signing_their_own_heads_beside_each_other_raise_no_false_alarm(
    log: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint by a process that writes nothing (as `tether audit checkpoint`) reads a live
    writer's newest records, so that the writer's own next checkpoint, reading only what came
    after, finds none of them: it must look them up, not take them for lost, and still sign its
    head. Beside it another writer's checkpoints are written on their thread while it appends.
    No error is logged, and the log verifies."""
    monkeypatch.setattr("tether.audit.checkpoints.LOOKBACK", 0)
    with caplog.at_level(logging.ERROR, logger="tether.audit"):
        first = _live_writer(log, 10)
        chain = first.audit.chain.id
        store = Store.at_home(log)
        writing_nothing = Guard(store)
        try:
            write_checkpoint(store, writing_nothing.credentials.keyring, time.time())
        finally:
            writing_nothing.close()
        monkeypatch.setattr("tether.audit.checkpoints.EVERY_RECORDS", 3)
        second = _live_writer(log, 10)
        second.close()
        first.close()
    assert _errors(caplog) == []
    assert check(log) == []
    store = Store.at_home(log)
    try:
        newest = json.loads(unverified_payload(store.audit.checkpoints()[-1][2]))
    finally:
        store.close()
    assert newest["chains"][chain][0] == 10  # first's closing one: its head, though not read
