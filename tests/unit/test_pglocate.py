"""Where Patroni's config really is, and whether a host's client TLS fits the CA."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from etcdsop.clients.locate import Located, TlsFacts, choose, parse_locate, tls_verdict
from etcdsop.pki import Pki

V4_EXEC = (
    "exec { path=/usr/bin/patroni ; argv[]=/usr/bin/patroni /etc/patroni/patroni.yml ; "
    "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) }"
)


@pytest.mark.parametrize(
    ("text", "inventory", "want"),
    [
        # Pigsty v4: the unit's link, resolved to /pg/conf/<ins>.yml
        (
            V4_EXEC + "\npath /etc/patroni/patroni.yml /pg/conf/pg-test-1.yml\n",
            None,
            Located("/etc/patroni/patroni.yml", "/pg/conf/pg-test-1.yml"),
        ),
        # Pigsty 2.x chain of links, no unit argument: the first known path that exists
        (
            "exec \nnopath /etc/patroni/patroni.yml\npath /pg/bin/patroni.yml /pg/conf/oltp.yml\n",
            None,
            Located("/pg/bin/patroni.yml", "/pg/conf/oltp.yml"),
        ),
        # no unit argument: the inventory's patroni_conf
        (
            "exec \npath /srv/p.yml /srv/p.yml\npath /pg/bin/patroni.yml /pg/bin/patroni.yml\n",
            "/srv/p.yml",
            Located("/srv/p.yml", "/srv/p.yml"),
        ),
    ],
)
def test_choose_the_file_patroni_reads(text: str, inventory: str | None, want: Located) -> None:
    assert choose(parse_locate(text), inventory) == want


def test_the_unit_wins_over_a_different_patroni_conf_and_says_so() -> None:
    text = (
        V4_EXEC + "\npath /etc/patroni/patroni.yml /pg/conf/pg-test-1.yml"
        "\npath /pg/bin/patroni.yml /pg/bin/patroni.yml\n"
    )
    found = choose(parse_locate(text), "/pg/bin/patroni.yml")
    assert isinstance(found, Located)
    assert found.target == "/pg/conf/pg-test-1.yml"
    assert "patroni_conf /pg/bin/patroni.yml is not what patroni.service runs" in found.note


def test_nothing_found_names_the_fix() -> None:
    found = choose(parse_locate("exec \nnopath /etc/patroni/patroni.yml\n"), None)
    assert isinstance(found, str)
    assert "/etc/patroni/patroni.yml is missing" in found and "set patroni_conf" in found


PATHS = ("/pg/cert/ca.crt", "/pg/cert/server.crt", "/pg/cert/server.key")


def test_tls_verdict(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    ca = pki.ensure_ca().cert_pem
    leaf = pki.ensure_client("pg-test").cert_pem
    ok = TlsFacts({PATHS[0]: ca, PATHS[1]: leaf}, key_matches=True)
    assert tls_verdict(ca, PATHS, ok) is None
    assert "does not match" in (tls_verdict(ca, PATHS, TlsFacts(ok.files, False)) or "")
    other = Pki(tmp_path / "other")
    other_ca = other.ensure_ca().cert_pem
    assert "does not hold the cluster's CA" in (tls_verdict(other_ca, PATHS, ok) or "")
    foreign = TlsFacts({PATHS[0]: ca, PATHS[1]: other.ensure_client("x").cert_pem}, True)
    assert "not issued by the cluster's CA" in (tls_verdict(ca, PATHS, foreign) or "")
    later = datetime.now(timezone.utc) + timedelta(days=7300)
    assert "expires" in (tls_verdict(ca, PATHS, ok, now=later) or "")
    assert "missing" in (tls_verdict(ca, PATHS, TlsFacts({}, True)) or "")
