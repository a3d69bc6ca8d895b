"""mutt 2.2.12 and neomutt 20220429, as Debian 12 ships them (both built with GNU SASL
2.2), fetching the test maildrop (tests/clientmail.py) from a whole server with
`<fetch-mail>` into a local Maildir ($spoolfile), on a pseudo-terminal.

What each client does to a message: both write every fetched message into the local
Maildir's new/ exactly as `lf()` gives it: CRLF line ends (and the bare LF that POP3
sends as CRLF) become LF, and the file ends with LF. Neither adds or changes a header
(no Status:, X-UIDL:, Received: or mbox From_ line) nor a byte of the body, 8-bit bytes
included, so `prepended=()`.

Both are configured the same way (`Client` below writes one muttrc for either); neomutt
differs only in how its debug log is named (`-d 2 -l FILE`, to which it appends "0";
mutt writes $HOME/.muttdebug0). The certificate is
verified against the server's self-signed one (`certificate_file`, host `localhost`);
`ssl_force_tls` is set, and for STLS `ssl_starttls`.

Sign-in mechanisms. Both clients offer USER/PASS (`user`), APOP (`apop`), OAUTHBEARER
(`oauthbearer`; mutt also `xoauth2`; each only with a token command, never by their own
choice) and every client mechanism of GNU SASL 2.2:
ANONYMOUS, EXTERNAL, LOGIN, PLAIN, SECURID, NTLM, DIGEST-MD5, CRAM-MD5, SCRAM-SHA-1,
SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, SAML20, OPENID20, GSSAPI and
GS2-KRB5. Left to choose ($pop_authenticators unset) they let GNU SASL pick from the
server's SASL capability (SCRAM-SHA-256 from the default list), falling back to APOP,
then USER/PASS ($pop_auth_try_all). The default configuration offers USER/PASS,
SCRAM-SHA-256, PLAIN and LOGIN under TLS; tested here, with the mechanism read from the
server's audit log:
  mutt:    its own choice (SCRAM-SHA-256), scram-sha-256, plain, login, user
  neomutt: its own choice (SCRAM-SHA-256), user. neomutt 20220429 built with GNU SASL
           cannot be told a SASL mechanism: its $pop_authenticators validator knows only
           "user", "apop" and "oauthbearer" ("Option pop_authenticators: plain is not a
           valid authenticator"), so PLAIN and LOGIN are never its choice against the
           default list.
Not offered by the default configuration: APOP (off by default; the greeting carries no
timestamp, so both clients find it unavailable: test_apop_is_not_offered), OAUTHBEARER
and XOAUTH2 (only with [[oauth.issuers]]), EXTERNAL (only with a client certificate from
tls.client_ca), SCRAM-SHA-256-PLUS (opt-in, see test_scram_plus_opt_in_breaks_gnu_sasl_clients)
and every other GNU SASL mechanism (CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1(-PLUS), NTLM, ...).

mutt (not neomutt) sleeps 2 s after each failed sign-in attempt whatever $sleep_time
says, so its failure tests take about 4 s each.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from clientmail import (MESSAGES, assert_fetched_all, deliver_all, maildir_messages, make_maildir,
                        require_client, run_in_pty, sign_ins)
from conftest import DEFAULT_PASSWORD, read_audit

PROGRAMS = ["mutt", "neomutt"]
#: pops: implicit TLS on the pop3s port; stls: the plain port, upgraded with STLS.
TRANSPORTS = ["pops", "stls"]
LISTENER = {"pops": "pop3s", "stls": "pop3"}
#: A whole fetch of the 1 MB maildrop takes well under a second; failures about 4 s.
CLIENT_TIMEOUT = 30
WRONG_PASSWORD = "not the password of alice"


def _quote(value: str) -> str:
    """A muttrc string: single quotes, in which mutt expands nothing."""
    assert "'" not in value, value
    return f"'{value}'"


class Client:
    """One mutt or neomutt with its own $HOME, local Maildir and muttrc."""

    def __init__(self, program: str, srv, home: Path, transport: str = "pops", delete: bool = False,
                 authenticators: str | None = None, password: str = DEFAULT_PASSWORD):
        require_client(program)
        self.program = program
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.inbox = make_maildir(home / "Mail" / "inbox")
        # mutt writes $HOME/.muttdebug0; neomutt appends the 0 to the name -l gives it.
        self.debug_log = home / (".muttdebug0" if program == "mutt" else "neomutt-debug.log0")
        if transport == "pops":
            url = f"pops://alice@localhost:{srv.pop3s_port}"
        else:
            url = f"pop://alice@localhost:{srv.pop3_port}"
        lines = [
            f"set pop_host={_quote(url)}",
            f"set pop_pass={_quote(password)}",
            f"set certificate_file={_quote(str(srv.cert))}",
            f"set folder={_quote(str(home / 'Mail'))}",
            f"set spoolfile={_quote(str(self.inbox))}",
            "set mbox_type=Maildir",
            f"set pop_delete={'yes' if delete else 'no'}",
            "set quit=yes",
            "set ssl_force_tls=yes",
            f"set ssl_starttls={'yes' if transport == 'stls' else 'no'}",
            "set sleep_time=0",
        ]
        if authenticators is not None:
            lines.append(f"set pop_authenticators={_quote(authenticators)}")
        self.rc = home / "muttrc"
        self.rc.write_text("\n".join(lines) + "\n")
        self.env = {"HOME": str(home), "TERM": "xterm", "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "LC_ALL": "C.UTF-8", "TMPDIR": str(home)}

    def argv(self, keys: str) -> list[str]:
        debug = ["-d", "2"] + (["-l", str(self.debug_log)[:-1]] if self.program == "neomutt" else [])
        return [self.program, "-n", "-F", str(self.rc), *debug, "-e", f"push {keys}"]

    def fetch(self) -> tuple[int | None, str]:
        """<fetch-mail>, then <quit>: (exit status, screen text)."""
        status, out = run_in_pty(self.argv("<fetch-mail><quit>"), self.env, timeout=CLIENT_TIMEOUT)
        return status, screen_text(out)

    def fetch_failing(self, message: str) -> tuple[int | None, str]:
        """<fetch-mail>, then, once `message` (a regular expression) is on the screen or,
        unexpectedly, mail has arrived in the local Maildir, types q (quit).

        Keys pushed with -e are a macro, and mutt draws nothing while a macro has keys
        left, then clears the message line at the next key: an error of <fetch-mail>
        reaches the screen only when the client waits for the terminal."""
        def ready(out: bytes) -> bool:
            return bool(re.search(message, screen_text(out))) or any((self.inbox / "new").iterdir())

        status, out = run_in_pty(self.argv("<fetch-mail>"), self.env, ready=ready, keys=b"q",
                                 timeout=CLIENT_TIMEOUT)
        return status, screen_text(out)

    def fetched(self) -> list[bytes]:
        return maildir_messages(self.inbox)

    def debug(self) -> str:
        try:
            return self.debug_log.read_text(errors="replace")
        except OSError:
            return "<no debug log>"

    def diagnosis(self, screen: str) -> str:
        """For assertion messages: the screen and the protocol lines of the debug log."""
        protocol = [l for l in self.debug().splitlines()
                    if re.search(r"\d[<>] |> |failed|Login|Authenticat|mech|\b[Ee]rror", l)
                    and "notification" not in l]
        return f"\n--- {self.program} screen ---\n{screen[-2000:]}\n--- debug log ---\n" + \
            "\n".join(protocol[-60:])


def screen_text(out: bytes) -> str:
    """What a terminal program drew, without its control sequences."""
    out = re.sub(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78]", b"", out)
    return out.decode("utf-8", "replace")


def sign_ins_after(srv, sessions: int, timeout: float = 10) -> list[tuple[str, str, str]]:
    """The audit log's sign-ins once `sessions` connections have ended (their disconnect
    records written after any sign-in record of theirs), for asserting that a session
    left no record, or no more records than expected."""
    deadline = time.monotonic() + timeout
    while True:
        ended = sum(1 for r in read_audit(srv.data_dir / "audit.log") if r.get("event") == "disconnect")
        if ended >= sessions or time.monotonic() > deadline:
            return sign_ins(srv)
        time.sleep(0.05)


def server_contents(srv) -> dict[str, bytes]:
    """The server's maildrop: base file name -> contents."""
    return {p.name.split(":", 1)[0]: p.read_bytes() for p in srv.message_files()}


def delivered(bases: dict[str, str]) -> dict[str, bytes]:
    return {base: MESSAGES[name] for name, base in bases.items()}


@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("program", PROGRAMS)
def test_fetch_all(server, tmp_path, program, transport, delete):
    """The whole maildrop, byte for byte as lf(source), over POP3S and over STLS, signed
    in with the client's own choice (SCRAM-SHA-256). Keep mode (pop_delete=no) leaves
    every message on the server; delete mode (pop_delete=yes) empties the maildrop."""
    srv = server()
    bases = deliver_all(srv)
    client = Client(program, srv, tmp_path / "home", transport=transport, delete=delete)
    status, screen = client.fetch()
    why = client.diagnosis(screen)
    assert status == 0, f"{program} exit status {status}" + why
    assert_fetched_all(client.fetched(), prepended=())
    assert list((client.inbox / "tmp").iterdir()) == [], why
    if delete:
        assert srv.message_files() == [], why
    else:
        assert server_contents(srv) == delivered(bases), why
    assert sign_ins_after(srv, 1) == [("SCRAM-SHA-256", "success", LISTENER[transport])], why


@pytest.mark.parametrize("program,authenticators,mechanism", [
    ("mutt", None, "SCRAM-SHA-256"),
    ("mutt", "scram-sha-256", "SCRAM-SHA-256"),
    ("mutt", "plain", "PLAIN"),
    ("mutt", "login", "LOGIN"),
    ("mutt", "user", "USER"),
    ("neomutt", None, "SCRAM-SHA-256"),
    ("neomutt", "user", "USER"),
], ids=lambda v: v if isinstance(v, str) else "own-choice")
def test_sign_in_mechanism(server, tmp_path, program, authenticators, mechanism):
    """Each mechanism both the client and the default configuration offer signs in and
    fetches the whole maildrop; the server's audit log names the mechanism. With
    $pop_authenticators unset the client's own choice is SCRAM-SHA-256."""
    srv = server()
    deliver_all(srv)
    client = Client(program, srv, tmp_path / "home", authenticators=authenticators)
    status, screen = client.fetch()
    why = client.diagnosis(screen)
    assert status == 0, f"{program} exit status {status}" + why
    assert sign_ins_after(srv, 1) == [(mechanism, "success", "pop3s")], why
    assert_fetched_all(client.fetched(), prepended=())


@pytest.mark.parametrize("program", PROGRAMS)
def test_wrong_password(server, tmp_path, program):
    """A wrong password, in delete mode: the client says so on the screen and exits at
    `q` (it does not prompt for another password: $pop_pass is set); nothing is
    fetched and nothing deleted. With $pop_auth_try_all (the default) both clients try
    their SASL choice, SCRAM-SHA-256, and then USER/PASS; the audit log has both
    failures and no success."""
    srv = server()
    bases = deliver_all(srv)
    client = Client(program, srv, tmp_path / "home", delete=True, password=WRONG_PASSWORD)
    status, screen = client.fetch_failing(r"Login failed")
    why = client.diagnosis(screen)
    assert status == 0, f"{program} did not exit after the failure (status {status})" + why
    assert "SASL authentication failed" in screen, why
    assert re.search(r"Login failed\.? PASS: \[AUTH\] invalid user name or password", screen), why
    assert client.fetched() == [], why
    assert server_contents(srv) == delivered(bases), why
    assert sign_ins_after(srv, 1) == [("SCRAM-SHA-256", "failure", "pop3s"),
                                      ("USER", "failure", "pop3s")], why


@pytest.mark.parametrize("program", PROGRAMS)
def test_apop_is_not_offered(server, tmp_path, program):
    """Both clients offer APOP; the default configuration does not (its greeting carries
    no timestamp), so a client told to use only APOP finds no way to sign in, sends no
    credentials and fetches nothing."""
    srv = server()
    bases = deliver_all(srv)
    client = Client(program, srv, tmp_path / "home", delete=True, authenticators="apop")
    status, screen = client.fetch_failing(r"No authenticators available")
    why = client.diagnosis(screen)
    assert status == 0, f"{program} exit status {status}" + why
    assert "No authenticators available" in screen, why
    assert client.fetched() == [], why
    assert server_contents(srv) == delivered(bases), why
    assert sign_ins_after(srv, 1) == [], why


@pytest.mark.parametrize("program", PROGRAMS)
def test_scram_plus_opt_in_breaks_gnu_sasl_clients(server, tmp_path, program):
    """Why SCRAM-SHA-256-PLUS is opt-in (sasl.mechanisms): an administrator who offers it
    cuts off Debian 12's mutt and neomutt. GNU SASL 2.2 picks SCRAM-SHA-256-PLUS whenever
    the server lists it, but these programs give it no channel-binding data, so the
    library fails on the client's side ("a tls-exporter channel binding was not
    provided"); the client cancels with `*` and does not read the -ERR answering it,
    reads that -ERR as the answer to its next command (USER: "authentication
    cancelled") and fetches nothing.

    This is the behaviour of Debian 12's GNU SASL (libgsasl 2.2.0) and of these
    programs, not of the server. If this test ever fails because the client signed in
    and fetched the mail (a GNU SASL that binds to tls-exporter on TLS 1.3, or that does
    not choose -PLUS without binding data), offering -PLUS by default can be
    reconsidered."""
    srv = server(sasl={"mechanisms": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"]})
    bases = deliver_all(srv)
    with srv.tls() as c:
        assert "SASL SCRAM-SHA-256-PLUS SCRAM-SHA-256 PLAIN LOGIN" in c.capa()
    client = Client(program, srv, tmp_path / "home", delete=True)
    status, screen = client.fetch_failing(r"Login failed")
    why = client.diagnosis(screen)
    debug = client.debug()
    assert client.fetched() == [], (
        f"{program} fetched mail with SCRAM-SHA-256-PLUS offered: see this test's docstring" + why)
    assert status == 0, f"{program} exit status {status}" + why
    assert "AUTH SCRAM-SHA-256-PLUS" in debug, why
    assert "tls-exporter channel binding was not provided" in debug, why
    assert "SASL authentication failed" in screen, why
    # One reply late: the server's answer to `*` read as the answer to USER.
    assert re.search(r"Login failed\.? USER: authentication cancelled", screen), why
    assert server_contents(srv) == delivered(bases), why
    # Two sessions: the CAPA check above and the client's.
    assert [s for s in sign_ins_after(srv, 2) if s[1] == "success"] == [], why
