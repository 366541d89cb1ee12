"""Secrets never leave: ``redact_url``, the secret registry and ``redact_text``, and the places
that show text (log events, the config, ``/health``) using them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Literal
from urllib.parse import quote

import pytest
import structlog
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from qx_actors.config import (
    LoggingConfig,
    QxConfig,
    config_from_mapping,
    dump_config,
    register_secrets,
)
from qx_actors.errors import ConfigError, DatabaseUnavailable
from qx_actors.logs import configure_logging, get_logger
from qx_actors.observability._run_health import RunHealth
from qx_actors.redact import (
    MASK,
    MIN_SECRET_LENGTH,
    clear_secrets,
    is_registered,
    redact_text,
    redact_url,
    redact_value,
    register_secret,
    register_url_secret,
    url_passwords,
)
from qx_actors.status import State, SyncStatus

SECRET = "S3cr3t-pa55:w@rd"

schemes = st.sampled_from(["postgresql", "postgres", "mysql", "redis", "https", "amqp"])
users = st.text(
    alphabet=st.characters(blacklist_characters=":@/?#", blacklist_categories=["Cs"]),
    max_size=12,
)
#: anything at all: @ : / % ? # whitespace, unicode (surrogates can't be encoded)
# A password that is the mask itself reads as an already-redacted URL (nothing left to hide):
# url_passwords leaves it out by design, so the generator does too.
passwords = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1).filter(
    lambda password: password != MASK
)
hosts = st.sampled_from(["127.0.0.1", "db.example.com", "[::1]", "localhost"])
tails = st.sampled_from(["", "/qx", ":5432/qx", ":5432/qx?sslmode=require", "/db#frag"])


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    clear_secrets()
    yield
    clear_secrets()


# --- redact_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://postgres:{SECRET}@127.0.0.1:5432/qx",
            "postgresql://postgres:***@127.0.0.1:5432/qx",
        ),
        (
            f"postgres://postgres:{quote(SECRET, safe='')}@db:5432/qx",
            "postgres://postgres:***@db:5432/qx",
        ),
        ("postgresql://:hunter22@db/qx", "postgresql://:***@db/qx"),
        ("postgresql://u:pa/ss?x#y@db/qx", "postgresql://u:***@db/qx"),
        ("postgresql://u:p@ss@[::1]:5432/qx", "postgresql://u:***@[::1]:5432/qx"),
        (
            "postgresql://db/qx?password=hunter22&sslmode=require",
            "postgresql://db/qx?password=***&sslmode=require",
        ),
        ("postgresql://u:one@db/qx?password=two", "postgresql://u:***@db/qx?password=***"),
        (
            "host=db port=5432 password=hunter22 dbname=qx",
            "host=db port=5432 password=*** dbname=qx",
        ),
        ("host=db password='a b\\' c' dbname=qx", "host=db password=*** dbname=qx"),
        # nothing to hide
        ("postgresql://postgres@db:5432/qx", "postgresql://postgres@db:5432/qx"),
        ("postgresql://[::1]:5432/qx", "postgresql://[::1]:5432/qx"),
        ("postgresql://u:@db/qx", "postgresql://u:@db/qx"),
        ("sqlite:///data/qx.db", "sqlite:///data/qx.db"),
        ("sqlite:///tmp/a:b@c.db", "sqlite:///tmp/a:b@c.db"),
        ("wss://stream.lnmarkets.com/v1", "wss://stream.lnmarkets.com/v1"),
    ],
)
def test_redact_url_examples(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # idempotent


@settings(max_examples=400, deadline=None)
@given(scheme=schemes, user=users, password=passwords, host=hosts, tail=tails)
def test_redact_url_hides_any_password_encoded_or_not(
    scheme: str, user: str, password: str, host: str, tail: str
) -> None:
    """Whatever the password holds (@ : / % ? # spaces, unicode), written percent-encoded or
    as is, the URL is shown as itself with ``***`` in its place."""
    expected = f"{scheme}://{user}:***@{host}{tail}"
    for written in (quote(password, safe=""), password):
        url = f"{scheme}://{user}:{written}@{host}{tail}"
        assert redact_url(url) == expected
        assert url_passwords(url)[0] == written


@settings(max_examples=200, deadline=None)
@given(password=passwords)
def test_redact_url_hides_a_dsn_password(password: str) -> None:
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    dsn = f"host=db port=5432 password={quoted} dbname=qx"
    assert redact_url(dsn) == "host=db port=5432 password=*** dbname=qx"
    assert url_passwords(dsn) == [password]


# --- the registry and redact_text -----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    secret=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=MIN_SECRET_LENGTH),
    before=st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    after=st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
)
def test_a_registered_secret_is_scrubbed_in_every_form(
    secret: str, before: str, after: str
) -> None:
    clear_secrets()
    register_secret(secret)
    forms = {
        secret,
        quote(secret, safe=""),
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
    }
    for form in forms:
        assume(form not in before + after)  # the text may hold it by itself: not our case
    for form in forms:
        shown = redact_text(f"{before}{form}{after}")
        assert form not in shown
        assert MASK in shown
    # as a JSON log line shows it
    line = json.dumps({"event": "x", "error": f"{before}{secret}{after}"})
    assert json.dumps(secret)[1:-1] not in redact_text(line)


@settings(max_examples=200, deadline=None)
@given(password=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=4))
def test_registering_a_url_registers_its_password_decoded_and_encoded(password: str) -> None:
    clear_secrets()
    url = f"postgresql://qx:{quote(password, safe='')}@127.0.0.1:5432/qx"
    register_url_secret(url)
    assert is_registered(password)
    assert is_registered(quote(password, safe=""))
    assert password not in redact_text(f"FATAL: {password} rejected")


@settings(max_examples=300, deadline=None)
@given(
    scheme=schemes,
    user=users.filter(lambda u: not any(c.isspace() for c in u)),
    password=st.text(
        alphabet=st.characters(blacklist_characters="/?#", blacklist_categories=["Cs", "Zs", "Cc"]),
        min_size=1,
    ),
)
def test_any_url_with_a_password_is_redacted_in_free_text(
    scheme: str, user: str, password: str
) -> None:
    """A URL nobody registered (e.g. a peer's) still loses its password in a message."""
    assume(not any(c.isspace() for c in password))
    text = f"cannot open {scheme}://{user}:{password}@db:5432/qx: refused"
    assert redact_text(text) == f"cannot open {scheme}://{user}:***@db:5432/qx: refused"


def test_redact_text_examples() -> None:
    register_secret(SECRET)
    text = (
        f"the database postgresql://postgres:{SECRET}@127.0.0.1:5432/qx is not open; "
        f"password={SECRET} PGPASSWORD=hunter22 url='mysql://root:toor@h/db' "
        f"auth {quote(SECRET, safe='')} ws://stream:7358/v1 http://a:1/x?y=@z"
    )
    assert redact_text(text) == (
        "the database postgresql://postgres:***@127.0.0.1:5432/qx is not open; "
        "password=*** PGPASSWORD=*** url='mysql://root:***@h/db' "
        "auth *** ws://stream:7358/v1 http://a:1/x?y=@z"
    )
    assert redact_text(redact_text(text)) == redact_text(text)


def test_a_short_secret_is_only_hidden_in_urls() -> None:
    """Replacing every "ab" would garble every message: a short password is hidden where it
    is a password (a URL's userinfo, ``password=``), not in free text."""
    register_secret("ab")
    assert not is_registered("ab")
    assert redact_text("about postgresql://u:ab@h/db password=ab") == (
        "about postgresql://u:***@h/db password=***"
    )


def test_a_secret_made_of_mask_characters_does_not_reappear() -> None:
    register_secret("a***b")
    assert "a***b" not in redact_text("aa***bb")


def test_redact_value_walks_data() -> None:
    register_secret(SECRET)
    data = {
        "error": f"failed: {SECRET}",
        "nested": [SECRET, (1, 2.5, None, True)],
        "password": "whatever",
        "db_secret": "x",
        "count": 3,
        "exc": DatabaseUnavailable(f"auth for {SECRET}"),
    }
    assert redact_value(data) == {
        "error": "failed: ***",
        "nested": ["***", [1, 2.5, None, True]],
        "password": "***",
        "db_secret": "***",
        "count": 3,
        "exc": "auth for ***",
    }


# --- where text leaves: config, logs, /health -----------------------------------------------


def test_a_config_registers_its_password_and_never_shows_it() -> None:
    url = f"postgresql://postgres:{quote(SECRET, safe='')}@127.0.0.1:5432/qx"
    config = config_from_mapping({"database": url})
    assert is_registered(SECRET)
    assert config.database == url  # the engine still gets the real URL
    assert "postgresql://postgres:***@127.0.0.1:5432/qx" in dump_config(config)
    assert quote(SECRET, safe="") not in dump_config(config)
    assert quote(SECRET, safe="") not in repr(config)
    assert config.to_dict()["database"] == url
    assert dump_config(config, redacted=False).count(quote(SECRET, safe="")) == 1


def test_a_config_error_does_not_echo_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"database": "mysql://root:hunter22@db/qx"})
    assert "hunter22" not in str(caught.value)
    assert "mysql://root:***@db/qx" in str(caught.value)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == "qx-actors-redacted":
            root.removeHandler(handler)


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.usefixtures("restore_logging")
def test_log_events_are_scrubbed(fmt: Literal["json", "console"]) -> None:
    """Every string of every event (exception text included), and the records of other
    libraries' loggers, reach the output without the password, in both formats."""
    config = QxConfig(database=f"postgresql://postgres:{quote(SECRET, safe='')}@db:5432/qx")
    register_secrets(config)  # built in code: registered where it is used, not by QxConfig()
    out = io.StringIO()
    configure_logging(LoggingConfig(format=fmt, level="debug"), stream=out)
    log = get_logger(run_id="r1", database=config.database)
    try:
        raise DatabaseUnavailable(f"cannot connect with {SECRET}")
    except DatabaseUnavailable as exc:
        log.exception("db_writer_error", error=f"{type(exc).__name__}: {exc}", config=config)
        logging.getLogger("pykka").error("Unhandled exception in %s:", SECRET, exc_info=True)
    log.warning("status_transition", error={"detail": [SECRET]}, password=SECRET)
    text = out.getvalue()
    assert text.count("DatabaseUnavailable: cannot connect with ***") >= 2
    assert "postgresql://postgres:***@db:5432/qx" in text
    assert "Unhandled exception in ***" in text
    for form in (SECRET, quote(SECRET, safe=""), json.dumps(SECRET)[1:-1]):
        assert form not in text
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert [r["event"] for r in records] == [
            "db_writer_error",
            "Unhandled exception in ***:",
            "status_transition",
        ]
        assert "Traceback" in records[0]["exception"]


def test_health_snapshot_shows_the_error_without_the_password() -> None:
    register_url_secret(f"postgresql://postgres:{quote(SECRET, safe='')}@db/qx")
    error = DatabaseUnavailable(
        f"postgresql://postgres:{SECRET}@db/qx: FATAL: password authentication failed"
    )
    health = RunHealth(lambda: SyncStatus(State.RECOVERING, error=error))
    health.register("db", lambda: {"writes": 1.0})
    snapshot = health.snapshot()
    assert snapshot["error"] == (
        "postgresql://postgres:***@db/qx: FATAL: password authentication failed"
    )
    assert SECRET not in json.dumps(snapshot)
