"""fetchmail 6.4.37 (Debian 12's fetchmail, built with OpenSSL 3) against the default
configuration.

How it runs here: one poll, no daemon (`fetchmail -v -f RC -i IDFILE --pidfile PIDFILE`,
no `set daemon`), with its own HOME and FETCHMAILHOME (a temporary folder, which also
holds the run-control file, mode 0600 as fetchmail demands, the UID list `.fetchids` and
the pid file), FETCHMAILUSER set to the user running the tests (as root, fetchmail runs
the MDA as that user) and LC_ALL=C. The run-control file polls `localhost` with
`protocol POP3` and either `ssl` (implicit TLS, the pop3s port) or `sslproto TLS1.2+`
(the plain port; the man page: "Require TLS", so STLS or nothing), always with
`sslcertck` and `sslcertfile` = the server's self-signed certificate (fetchmail then
trusts that file only and checks the name `localhost` against it). Messages go to an MDA,
`mda "deliver.sh OUTDIR"`, a two-line shell script that writes its standard input to a
new file per message, so nothing goes through SMTP; `set no bouncemail` and `set
postmaster ""` keep fetchmail from mailing anyone about errors.

What fetchmail does to a message on its way to the MDA (checked byte for byte by these
tests): with an MDA it strips carriage returns (`stripcr` is on by default with an MDA),
so every CRLF of the wire becomes LF, the dot-stuffing is removed, 8-bit bytes pass
untouched and the message ends with LF, i.e. `lf(source)`; and it prepends one header,
`Received: from localhost [127.0.0.1]\\n\\tby HOST with POP3 (fetchmail-6.4.37)\\n\\tfor
<USER@localhost> (single-drop); DATE` (three lines; `set invisible` would suppress it; we
keep the default and strip it with `prepended=("received",)`). It keeps the message's
own Return-Path (it adds no Return-Path or Delivered-To of its own with an MDA) and
rewrites no header here (`rewrite` only qualifies unqualified addresses; ours are
qualified). Without `fetchall` it reads each message with `TOP n 99999999` instead of
RETR (to leave the server's "seen" state alone); with `fetchall` it uses RETR; both are
exercised. It first tries LAST (RFC 1725, dropped by RFC 1939), which the server refuses
with -ERR, and falls back to UIDL.

Sign-in. fetchmail's `--auth` values for POP3: `any` (the default), `password`
(USER/PASS), `cram-md5` (AUTH CRAM-MD5), `ntlm` and `msn` (AUTH NTLM / AUTH MSN), `otp`
(RFC 2289 one-time passwords), `gssapi`, `kerberos_v4`, `kerberos_v5` (KPOP), `ssh`
(no sign-in at all, for pre-authenticated tunnels); `external` is IMAP only. Besides,
`protocol APOP` (and RPOP, which needs a privileged source port) are protocols of their
own. fetchmail 6.4 has no SASL PLAIN, LOGIN or SCRAM for POP3 (its AUTH PLAIN/LOGIN code
is for ESMTP only), and no XOAUTH2/OAUTHBEARER at all (the binary has neither). So the
one mechanism it shares with the default configuration is USER/PASS: its own choice
(`any`: CAPA, then, finding none of GSSAPI/Kerberos/CRAM-MD5/NTLM/OTP in the SASL list,
USER/PASS) and `--auth password` both end in USER/PASS, as the audit log shows. Offered
by fetchmail, not by the default: APOP, CRAM-MD5, NTLM, MSN, OTP, GSSAPI, Kerberos;
CRAM-MD5, NTLM and APOP are tested to fail cleanly (exit status 3, AUTHFAIL; nothing
fetched, nothing deleted, no sign-in).

Client quirk seen here (not the server's): after `AUTH NTLM` is refused with -ERR,
fetchmail still sends `*` (a SASL cancel, though no exchange is under way), then QUIT,
and takes the server's -ERR to the `*` (an unknown command) for the reply to QUIT.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from clientmail import (MESSAGES, assert_fetched_all, deliver_all, require_client,
                        sign_ins, wait_for_disconnect, wait_for_sign_ins)
from conftest import DEFAULT_PASSWORD, EXTRA_SECRETS, read_audit

#: A wrong password, long enough for test_zz_no_secrets to look for it in every log.
WRONG_PASSWORD = "not alice's fetchmail pw"
EXTRA_SECRETS.add(WRONG_PASSWORD)

FETCHMAIL_TIMEOUT = 60

#: fetchmail's exit statuses (man fetchmail, EXIT CODES).
OK, NOMAIL, AUTHFAIL = 0, 1, 3

#: The MDA: each message (its standard input) into a new file of the folder $1.
DELIVER_SH = '#!/bin/sh\nset -e\nf=$(mktemp "$1/msg.XXXXXXXX")\ncat > "$f"\n'

#: The header fetchmail prepends (three lines: two continuation lines).
RECEIVED_PREFIX = b"Received: from localhost [127.0.0.1]\n\tby "
RECEIVED_WITH = b" with POP3 (fetchmail-6.4.37)\n\tfor <"

TRANSPORTS = ["pop3s", "stls"]


def listener(transport: str) -> str:
    """The audit log's listener: STLS happens on the plain (pop3) listener."""
    return "pop3s" if transport == "pop3s" else "pop3"


class Fetchmail:
    """One fetchmail set-up: its home folder (HOME and FETCHMAILHOME), the MDA's output
    folder, and a run-control file written afresh for each run."""

    def __init__(self, srv, home: Path):
        require_client("fetchmail")
        self.srv = srv
        self.home = home
        self.out = home / "delivered"
        self.out.mkdir(parents=True)
        self.mda = home / "deliver.sh"
        self.mda.write_text(DELIVER_SH)
        self.mda.chmod(0o700)
        self.rc = home / "fetchmailrc"
        self.runs = 0

    def run(self, transport: str, *, auth: str | None = None, protocol: str = "POP3",
            password: str = DEFAULT_PASSWORD, keep: bool = False,
            fetchall: bool = False) -> subprocess.CompletedProcess:
        assert transport in TRANSPORTS
        port = self.srv.pop3s_port if transport == "pop3s" else self.srv.pop3_port
        tls = "ssl" if transport == "pop3s" else 'sslproto "TLS1.2+"'
        options = " ".join(o for o, on in (("keep", keep), ("fetchall", fetchall)) if on)
        self.rc.write_text(
            "set no syslog\n"
            "set no bouncemail\n"
            'set postmaster ""\n'
            f"poll localhost protocol {protocol} port {port}"
            + (f" auth {auth}" if auth else "") + "\n"
            f'  user "alice" password "{password}"\n'
            f'  {tls} sslcertck sslcertfile "{self.srv.cert}"\n'
            f'  mda "{self.mda} {self.out}"\n'
            f"  {options}\n")
        self.rc.chmod(0o600)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "FETCHMAILHOME": str(self.home),
            "FETCHMAILUSER": pwd.getpwuid(os.geteuid()).pw_name,
            "LC_ALL": "C",
        }
        self.runs += 1
        p = subprocess.run(
            ["fetchmail", "-v", "-f", str(self.rc), "-i", str(self.home / ".fetchids"),
             "--pidfile", str(self.home / "fetchmail.pid")],
            stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=FETCHMAIL_TIMEOUT)
        p.log = (p.stdout + p.stderr).decode(errors="replace")
        return p

    def delivered(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.out.iterdir())]

    def take_delivered(self) -> list[bytes]:
        """The messages delivered so far, emptying the folder for the next run."""
        got = self.delivered()
        for p in self.out.iterdir():
            p.unlink()
        return got


def tail(p: subprocess.CompletedProcess, n: int = 4000) -> str:
    return f"exit {p.returncode}\n{p.log[-n:]}"


def check_received(fetched: list[bytes]) -> None:
    """fetchmail's own Received: header comes first in every message, as documented."""
    for data in fetched:
        assert data.startswith(RECEIVED_PREFIX) and RECEIVED_WITH in data.split(b"\n\n", 1)[0], \
            data[:300]


def assert_auth_under_tls(srv, transport: str) -> None:
    """Every sign-in attempt the audit log holds happened inside TLS on the expected
    listener (STLS: the plain listener, after the upgrade)."""
    records = [r for r in read_audit(srv.data_dir / "audit.log") if r.get("event") == "auth"]
    assert records
    for r in records:
        assert r.get("listener") == listener(transport), r
        assert r.get("tls_version", "").startswith("TLSv1_"), r


@pytest.fixture
def fetchmail(server, tmp_path):
    srv = server()
    deliver_all(srv)
    return Fetchmail(srv, tmp_path / "fetchmail-home")


@pytest.mark.parametrize("auth", [None, "password"], ids=["own-choice", "auth-password"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetchmail_fetches_and_deletes_everything(fetchmail, transport, auth):
    """Default mode (delete): every message arrives intact, then the maildrop is empty.
    Both fetchmail's own choice of mechanism and `--auth password` sign in with USER."""
    srv = fetchmail.srv
    p = fetchmail.run(transport, auth=auth)
    assert p.returncode == OK, tail(p)
    fetched = fetchmail.delivered()
    check_received(fetched)
    assert_fetched_all(fetched, prepended=("received",))
    assert srv.message_files() == []
    assert wait_for_sign_ins(srv, 1) == [("USER", "success", listener(transport))]
    assert_auth_under_tls(srv, transport)
    log = p.log
    if transport == "stls":
        assert "POP3> STLS" in log and "upgrade to TLS succeeded" in log, tail(p)
    else:
        assert "STLS" not in log, tail(p)
    assert "POP3> PASS *" in log, tail(p)  # fetchmail masks the password in its transcript
    assert DEFAULT_PASSWORD not in log
    # Without fetchall, fetchmail reads with TOP n 99999999, not RETR.
    assert f"POP3> TOP {len(MESSAGES)} 99999999" in log and "POP3> RETR" not in log, tail(p)
    assert f"POP3> DELE {len(MESSAGES)}" in log, tail(p)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetchmail_keep(fetchmail, transport):
    """--keep: everything fetched, nothing deleted; a second --keep run finds nothing new
    (fetchmail remembers the UIDLs in its idfile); --keep --all fetches everything again,
    this time with RETR."""
    srv = fetchmail.srv
    before = srv.message_files()
    assert len(before) == len(MESSAGES)

    p = fetchmail.run(transport, keep=True)
    assert p.returncode == OK, tail(p)
    fetched = fetchmail.take_delivered()
    check_received(fetched)
    assert_fetched_all(fetched, prepended=("received",))
    assert srv.message_files() == before
    assert "POP3> DELE" not in p.log, tail(p)
    # fetchmail remembers what it saw: one "alice@localhost UID" line per message
    uids = (fetchmail.home / ".fetchids").read_text().splitlines()
    assert len({u for u in uids if u.startswith("alice@localhost ")}) == len(MESSAGES), uids

    p = fetchmail.run(transport, keep=True)
    assert p.returncode == NOMAIL, tail(p)
    assert fetchmail.take_delivered() == []
    assert srv.message_files() == before

    p = fetchmail.run(transport, keep=True, fetchall=True)
    assert p.returncode == OK, tail(p)
    assert f"POP3> RETR {len(MESSAGES)}" in p.log and "POP3> TOP" not in p.log, tail(p)
    assert_fetched_all(fetchmail.take_delivered(), prepended=("received",))
    assert srv.message_files() == before
    assert wait_for_sign_ins(srv, 3) == [("USER", "success", listener(transport))] * 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetchmail_wrong_password(fetchmail, transport):
    srv = fetchmail.srv
    before = srv.message_files()
    p = fetchmail.run(transport, password=WRONG_PASSWORD)
    assert p.returncode == AUTHFAIL, tail(p)
    assert "-ERR [AUTH]" in p.log and "Authorization failure on alice@localhost" in p.log, tail(p)
    assert WRONG_PASSWORD not in p.log
    assert fetchmail.delivered() == []
    assert srv.message_files() == before
    assert wait_for_sign_ins(srv, 1) == [("USER", "failure", listener(transport))]
    assert_auth_under_tls(srv, transport)


@pytest.mark.parametrize("auth,protocol,refusal", [
    # fetchmail sends AUTH CRAM-MD5 and takes the -ERR for a challenge it cannot decode.
    ("cram-md5", "POP3", "POP3> AUTH CRAM-MD5"),
    ("ntlm", "POP3", "POP3> AUTH NTLM"),
    # No <timestamp> in the greeting: fetchmail gives up before sending anything.
    (None, "APOP", "Required APOP timestamp not found in greeting"),
], ids=["cram-md5", "ntlm", "apop"])
def test_fetchmail_mechanisms_the_default_does_not_offer(fetchmail, auth, protocol, refusal):
    srv = fetchmail.srv
    before = srv.message_files()
    p = fetchmail.run("pop3s", auth=auth, protocol=protocol)
    assert p.returncode == AUTHFAIL, tail(p)
    assert refusal in p.log, tail(p)
    if auth:
        assert "-ERR unsupported authentication mechanism" in p.log, tail(p)
    assert "POP3> USER" not in p.log and "POP3> PASS" not in p.log, tail(p)
    assert fetchmail.delivered() == []
    assert srv.message_files() == before
    # Once the session's end is in the audit log, so is every sign-in it attempted.
    wait_for_disconnect(srv)
    assert not [s for s in sign_ins(srv) if s[1] == "success"], sign_ins(srv)
