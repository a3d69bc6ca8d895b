r"""Perl's Net::POP3 (libnet 3.14, part of Debian 12's perl) with Authen::SASL 2.16
(Debian's libauthen-sasl-perl: its pure-Perl mechanisms, Authen::SASL::Perl) and
IO::Socket::SSL 2.081, against the default configuration.

The client is the Perl program NETPOP3 below, written to a temporary file and run as
`perl netpop3.pl TRANSPORT PORT CAFILE METHOD MODE FETCH OUTDIR` (user and password in
the environment, never on the command line):

- TRANSPORT `pop3s`: `Net::POP3->new('localhost', Port => ..., SSL => 1, SSL_ca_file =>
  ...)`; `stls`: a plain connection, then `$pop->starttls(SSL_ca_file => ...)`. Both verify
  the server's certificate (SSL_VERIFY_PEER, name `localhost`) against the server's own
  self-signed certificate.
- METHOD `login` (USER/PASS), `apop`, `auth` (user and password: Net::POP3 hands the
  server's whole SASL list to Authen::SASL, which picks), `auth-plain` / `auth-login` (an
  Authen::SASL object with that one mechanism).
- MODE `keep` or `delete` (DELE after each message, then QUIT commits).
- FETCH `get` (`$pop->get($n, $fh)`) or `getfh` (`$pop->getfh($n)`, read line by line):
  every message goes to OUTDIR/N.eml exactly as Net::POP3 hands it over.
- Exit status 0 on success, 2 on a failed sign-in (the server's reply on stderr), 3 on
  any other failure. Net::Cmd's debug transcript goes to stderr too, with every secret
  replaced by `....` (PASS's argument, the AUTH initial response, SASL continuations).

Line ends. Net::Cmd::getline (/usr/share/perl/5.36/Net/Cmd.pm) reads the socket in
1024-byte chunks, splits on /\015?\012/ and hands every line back with a bare "\n" —
but only on a plain connection. Over TLS (POP3S, and after STLS, which reblesses the
object) the object is a Net::POP3::_SSL, whose @ISA is (IO::Socket::SSL, Net::POP3):
IO::Socket::SSL has a getline method of its own (`sub getline { return(scalar
shift->readline()) }`), found before Net::Cmd's, and it returns each line exactly as it
came, CRLF and all (`perl -MNet::POP3 -e 'print Net::POP3::_SSL->can("getline") ==
\&IO::Socket::SSL::getline'` prints 1). So over either TLS transport Net::POP3 hands
over a message with CRLF line ends, as POP3 sends it: `crlf(source)` (every bare LF
becomes CRLF, it ends with CRLF; 8-bit bytes untouched) — not `lf()`, which is what the
same library gives over a plain connection (test_plain_connection_turns_crlf_into_lf,
the one test here that changes the configuration, to let a plain sign-in through).
`get` (Net::Cmd::read_until_dot) stops at the lone "." (/^\.\r?\n/) and removes the
stuffing (`s/^\.\././`). `getfh` does not: Net::Cmd's tied handle (READLINE) stops at
the lone "." but hands over stuffed lines as they came ("..leading dot"), so what it
writes is `stuffed(crlf(source))` — a libnet quirk, not the server's, and it doubles as
a check that the server stuffs exactly the lines that begin with ".". Also from the
same method resolution: over TLS, Net::Cmd's read timeout (its select() in getline) is
bypassed; reads rely on IO::Socket::SSL alone.

Mechanisms. The default configuration offers, under TLS, USER/PASS and SASL
SCRAM-SHA-256, PLAIN, LOGIN (and no APOP: the greeting has no <timestamp>). Net::POP3
offers `login` (USER/PASS), `apop` and `auth`; Authen::SASL::Perl brings ANONYMOUS,
PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, EXTERNAL and GSSAPI (CRAM-MD5 and DIGEST-MD5 only
with Digest::HMAC_MD5, libdigest-hmac-perl, which Debian merely suggests; GSSAPI only
with GSSAPI.pm) and no SCRAM. Both sides have: USER/PASS, PLAIN, LOGIN — each is
tested here over both transports, with the server's audit log as witness. `auth` on
its own picks PLAIN: Authen::SASL::Perl keeps the server's mechanisms it implements
(PLAIN, LOGIN), sorts them by its own preference (`_order`: both 1; Perl's mergesort
keeps their order), so the server's order decides and PLAIN comes first in `SASL
SCRAM-SHA-256 PLAIN LOGIN` (a server listing LOGIN first would get LOGIN; EXTERNAL, with
`_order` 2, would win over both wherever the server offers it). The client offers, the default does not: APOP, CRAM-MD5, DIGEST-MD5,
ANONYMOUS, GSSAPI, EXTERNAL (needs client-certificate configuration). `apop` against the
default fails cleanly: Net::POP3 finds no <timestamp> in the greeting, returns failure
without sending anything, and nothing is fetched.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from clientmail import MESSAGES, assert_fetched_all, deliver_all, lf, wait_for_sign_ins
from conftest import DEFAULT_PASSWORD, EXTRA_SECRETS, crlf, require_peer

#: A wrong password, long enough for test_zz_no_secrets to look for it in every log.
WRONG_PASSWORD = "not alice's password"
EXTRA_SECRETS.add(WRONG_PASSWORD)

PERL_TIMEOUT = 60

NETPOP3 = r"""
use strict;
use warnings;
use Net::POP3;
use IO::Socket::SSL qw(SSL_VERIFY_PEER);
use Authen::SASL;

@ARGV == 7 or die "usage: netpop3.pl TRANSPORT PORT CAFILE METHOD MODE FETCH OUTDIR\n";
my ($transport, $port, $cafile, $method, $mode, $fetch, $outdir) = @ARGV;
my ($user, $pass) = ($ENV{NETPOP3_USER}, $ENV{NETPOP3_PASSWORD});
$| = 1;

# Net::Cmd's transcript (Debug => 1) on stderr, without secrets: the commands that carry
# none as they are, AUTH without its initial response, anything else (PASS's argument,
# SASL continuations) as "....".
{
  no warnings 'redefine';
  *Net::POP3::debug_text = sub {
    my ($cmd, $out, $text) = @_;
    return $text unless $out and ref $cmd;  # (a class name: the version banner)
    return $text if $text =~ /^(USER|STAT|LIST|RETR|DELE|QUIT|CAPA|STLS|UIDL|TOP|NOOP|RSET)\b/i;
    return "$1 ....\n" if $text =~ /^(AUTH \S+|APOP \S+|PASS) \S/i;
    return $text if $text =~ /^AUTH \S+\r?\n/i;
    return "....\n";
  };
}

sub fail {
  my ($status, $what) = @_;
  print STDERR "netpop3: $what\n";
  exit $status;
}

my %ssl = (SSL_ca_file => $cafile, SSL_verify_mode => SSL_VERIFY_PEER);
my $pop;
if ($transport eq 'pop3s') {
  $pop = Net::POP3->new('localhost', Port => $port, SSL => 1, %ssl, Timeout => 20, Debug => 1)
    or fail(3, "cannot connect over TLS: $@");
} elsif ($transport eq 'plain') {
  $pop = Net::POP3->new('localhost', Port => $port, Timeout => 20, Debug => 1)
    or fail(3, "cannot connect: $@");
} elsif ($transport eq 'stls') {
  $pop = Net::POP3->new('localhost', Port => $port, Timeout => 20, Debug => 1)
    or fail(3, "cannot connect: $@");
  $pop->starttls(%ssl) or fail(3, "STLS failed: " . $pop->code . " " . $pop->message . " $@");
} else {
  fail(3, "unknown transport $transport");
}
print "banner: ", $pop->banner;

my $ok;
if ($method eq 'login') {
  $ok = $pop->login($user, $pass);
} elsif ($method eq 'apop') {
  $ok = $pop->apop($user, $pass);
} elsif ($method eq 'auth') {
  $ok = $pop->auth($user, $pass);
} elsif ($method =~ /^auth-(\S+)$/) {
  my $sasl = Authen::SASL->new(mechanism => uc $1,
                               callback => { user => $user, pass => $pass, authname => $user });
  $ok = $pop->auth($sasl);
} else {
  fail(3, "unknown method $method");
}
unless ($ok) {
  my $reply = $pop->message;
  $reply =~ s/\s+\z//;
  $reply .= " (no <timestamp> in the greeting)" if $method eq 'apop' and $pop->banner !~ /<.*>/;
  fail(2, "sign-in ($method) failed: " . $pop->code . " $reply");
}
print "signed in ($method)\n";
my $sasl = $pop->capabilities->{SASL};
if (defined $sasl) {
  $sasl =~ s/\s+\z//;
  print "server SASL: $sasl\n";
}

my $list = $pop->list or fail(3, "LIST failed: " . $pop->message);
for my $n (sort { $a <=> $b } keys %$list) {
  open(my $fh, '>:raw', "$outdir/$n.eml") or fail(3, "cannot write $outdir/$n.eml: $!");
  if ($fetch eq 'get') {
    $pop->get($n, $fh) or fail(3, "RETR $n failed: " . $pop->message);
  } elsif ($fetch eq 'getfh') {
    my $in = $pop->getfh($n) or fail(3, "RETR $n failed: " . $pop->message);
    while (defined(my $line = <$in>)) {
      print $fh $line;
    }
  } else {
    fail(3, "unknown fetch $fetch");
  }
  close($fh) or fail(3, "cannot write $outdir/$n.eml: $!");
  if ($mode eq 'delete') {
    $pop->delete($n) or fail(3, "DELE $n failed: " . $pop->message);
  } elsif ($mode ne 'keep') {
    fail(3, "unknown mode $mode");
  }
  print "fetched $n ($list->{$n} octets)\n";
}
$pop->quit;
$pop->code eq '200' or fail(3, "QUIT failed: " . $pop->code . " " . $pop->message);
print "quit\n";
exit 0;
"""


def _perl_modules() -> bool:
    p = subprocess.run(["perl", "-MAuthen::SASL", "-MIO::Socket::SSL", "-MNet::POP3", "-e1"],
                       capture_output=True)
    return p.returncode == 0


@pytest.fixture(scope="module")
def netpop3(tmp_path_factory) -> Path:
    """The Perl program, once Net::POP3, Authen::SASL and IO::Socket::SSL are there."""
    require_peer("Perl's Net::POP3 with Authen::SASL and IO::Socket::SSL",
                 "install-mail-clients.sh", _perl_modules)
    script = tmp_path_factory.mktemp("netpop3") / "netpop3.pl"
    script.write_text(NETPOP3)
    p = subprocess.run(["perl", "-c", str(script)], capture_output=True)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return script


@dataclass(repr=False)
class Run:
    """One run of the Perl program; shown in a failed assertion as its exit status,
    stdout and stderr (the transcript), not the megabyte it fetched."""
    status: int
    stdout: str
    stderr: str
    fetched: list[bytes]

    def __repr__(self) -> str:
        return (f"exit {self.status}, fetched {len(self.fetched)} messages\n--- stdout\n"
                f"{self.stdout}\n--- stderr\n{self.stderr}")

    def sent(self) -> list[str]:
        """The commands Net::POP3 sent (Net::Cmd's transcript, secrets redacted)."""
        return [l.rstrip("\r") for l in re.findall(r"^\S+=GLOB\(\w+\)>>> (.*)$", self.stderr, re.M)]

    def received(self) -> list[str]:
        """The single-line replies it read (multi-line bodies are not in the transcript)."""
        return [l.rstrip("\r") for l in re.findall(r"^\S+=GLOB\(\w+\)<<< (.*)$", self.stderr, re.M)]


def run_netpop3(script: Path, srv, tmp_path: Path, transport: str, method: str,
                mode: str = "keep", fetch: str = "get", password: str = DEFAULT_PASSWORD) -> Run:
    out = tmp_path / f"fetched-{transport}-{method}-{mode}-{fetch}-{time.monotonic_ns()}"
    out.mkdir()
    port = srv.pop3s_port if transport == "pop3s" else srv.pop3_port
    env = {**os.environ, "NETPOP3_USER": "alice", "NETPOP3_PASSWORD": password}
    p = subprocess.run(["perl", str(script), transport, str(port), str(srv.cert), method, mode,
                        fetch, str(out)], capture_output=True, timeout=PERL_TIMEOUT, env=env)
    files = sorted(out.iterdir(), key=lambda f: int(f.stem))
    return Run(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"),
               [f.read_bytes() for f in files])


def listener(transport: str) -> str:
    return "pop3s" if transport == "pop3s" else "pop3"


def stuffed(data: bytes) -> bytes:
    """`crlf(data)` with every line that begins with "." stuffed: the lines as POP3
    sends them."""
    return re.sub(rb"(?m)^\.", b"..", crlf(data))


TRANSPORTS = ["pop3s", "stls"]


@pytest.fixture
def maildrop(server):
    srv = server()
    srv.bases = deliver_all(srv)
    return srv


# ---------------------------------------------------------------- fetching


@pytest.mark.parametrize("mode", ["keep", "delete"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fetches_every_message(netpop3, maildrop, tmp_path, transport, mode):
    """The whole maildrop, fetched with `get`, equals crlf(source) (over TLS Net::POP3
    keeps the CRLF of the wire) and each message is as long as LIST said; keep leaves
    every message on the server, delete empties the maildrop (DELE each, QUIT commits)."""
    before = maildrop.message_files()
    assert len(before) == len(MESSAGES)
    run = run_netpop3(netpop3, maildrop, tmp_path, transport, "login", mode)
    assert run.status == 0, run
    assert run.stdout.endswith("quit\n"), run
    assert_fetched_all(run.fetched, transform=crlf)
    sent = run.sent()
    if transport == "stls":
        assert sent[0] == "STLS", run
    assert sent[-1] == "QUIT", run
    deles = [c for c in sent if c.startswith("DELE")]
    assert deles == ([f"DELE {n}" for n in range(1, len(MESSAGES) + 1)] if mode == "delete" else [])
    listed = [int(n) for n in re.findall(r"^fetched \d+ \((\d+) octets\)$", run.stdout, re.M)]
    assert listed == [len(m) for m in run.fetched], run.stdout
    after = maildrop.message_files()
    if mode == "keep":
        assert [p.name.split(":")[0] for p in after] == [p.name.split(":")[0] for p in before]
        assert sorted(p.read_bytes() for p in after) == sorted(MESSAGES.values())
    else:
        assert after == [], after
    assert wait_for_sign_ins(maildrop, 1) == [("USER", "success", listener(transport))]


def test_getfh_hands_over_stuffed_lines(netpop3, maildrop, tmp_path):
    """`getfh` (Net::Cmd's tied handle) stops at the terminating "." but leaves the
    stuffing in place: over TLS the file is exactly the lines of the wire, CRLF and all.
    That makes it a check of the server's stuffing: every line that begins with "." (and
    no other) gets one more."""
    run = run_netpop3(netpop3, maildrop, tmp_path, "pop3s", "login", fetch="getfh")
    assert run.status == 0, run
    assert_fetched_all(run.fetched, transform=stuffed)
    dots = next(m for m in run.fetched if b"Subject: dots" in m)
    assert b"\r\n..leading dot\r\n...two dots\r\n..\r\n.. space after\r\n" in dots, dots
    assert len(maildrop.message_files()) == len(MESSAGES)


# ---------------------------------------------------------------- sign-in mechanisms

#: Method -> (the AUTH command Net::POP3 sends, the audit log's mechanism).
METHODS = {
    "login": (None, "USER"),
    "auth": ("AUTH PLAIN ....", "PLAIN"),  # Net::POP3 and Authen::SASL's own choice
    "auth-plain": ("AUTH PLAIN ....", "PLAIN"),
    "auth-login": ("AUTH LOGIN", "LOGIN"),
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sign_in_mechanism(netpop3, maildrop, tmp_path, transport, method):
    """Each mechanism both sides have, over both transports: the server's audit log
    records exactly one successful sign-in with the mechanism the client was meant to
    use, and the whole maildrop arrives intact."""
    run = run_netpop3(netpop3, maildrop, tmp_path, transport, method)
    assert run.status == 0, run
    assert f"signed in ({method})" in run.stdout, run
    auth_command, mechanism = METHODS[method]
    sent = run.sent()
    auths = [c for c in sent if c.startswith(("AUTH", "USER", "PASS", "APOP"))]
    if auth_command is None:
        assert auths == ["USER alice", "PASS ...."], run
    else:
        assert auths == [auth_command], run
        # auth() reads the server's SASL list from CAPA (after STLS: the TLS one).
        assert "server SASL: SCRAM-SHA-256 PLAIN LOGIN" in run.stdout, run
        assert "CAPA" in sent, run
    if method == "auth-login":
        # Two challenges (user name, password), each answered; then +OK.
        assert [r for r in run.received() if r.startswith("+ ")] == \
            ["+ VXNlcm5hbWU6", "+ UGFzc3dvcmQ6"], run
    assert wait_for_sign_ins(maildrop, 1) == [(mechanism, "success", listener(transport))]
    assert_fetched_all(run.fetched, transform=crlf)
    assert len(maildrop.message_files()) == len(MESSAGES)


def test_plain_connection_turns_crlf_into_lf(netpop3, server, tmp_path):
    """Where Net::Cmd's own getline reads (a plain connection, allowed here from
    loopback by auth.plaintext_networks), every CRLF becomes LF: the message is
    lf(source). The contrast to every TLS test above, which get crlf(source)."""
    srv = server(auth={"plaintext_networks": ["127.0.0.0/8"]})
    deliver_all(srv)
    run = run_netpop3(netpop3, srv, tmp_path, "plain", "login")
    assert run.status == 0, run
    assert_fetched_all(run.fetched, transform=lf)
    assert wait_for_sign_ins(srv, 1) == [("USER", "success", "pop3")]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_apop_fails_cleanly_against_the_default(netpop3, maildrop, tmp_path, transport):
    """APOP is off by default, so the greeting carries no <timestamp>: Net::POP3's apop()
    returns failure without sending APOP (or anything else), nothing is fetched, and the
    server saw no sign-in attempt."""
    run = run_netpop3(netpop3, maildrop, tmp_path, transport, "apop", "delete")
    assert run.status == 2, run
    assert run.stderr.rstrip().endswith("(no <timestamp> in the greeting)"), run
    banner = run.stdout.splitlines()[0]
    assert banner.startswith("banner: ") and "<" not in banner, run
    assert not any(c.startswith(("APOP", "USER", "PASS", "AUTH", "RETR", "DELE"))
                   for c in run.sent()), run
    assert run.fetched == []
    assert sorted(p.read_bytes() for p in maildrop.message_files()) == sorted(MESSAGES.values())
    # The audit log is written in order: once the next session's sign-in is there, an
    # APOP attempt would be before it.
    again = run_netpop3(netpop3, maildrop, tmp_path, transport, "login")
    assert again.status == 0, again
    assert wait_for_sign_ins(maildrop, 1) == [("USER", "success", listener(transport))]


# ---------------------------------------------------------------- wrong password


@pytest.mark.parametrize("method", ["login", "auth", "auth-login"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_password(netpop3, maildrop, tmp_path, transport, method):
    """A wrong password: exit status 2 with the server's -ERR [AUTH] reply on stderr,
    nothing fetched or deleted (delete mode), and the audit log records the failure."""
    run = run_netpop3(netpop3, maildrop, tmp_path, transport, method, "delete",
                      password=WRONG_PASSWORD)
    assert run.status == 2, run
    final = run.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"netpop3: sign-in \({re.escape(method)}\) failed: 500 \[AUTH\] .+",
                        final), run
    assert run.received()[-1].startswith("-ERR [AUTH] "), run
    assert [r for r in run.received() if r.startswith("-ERR")] == [run.received()[-1]], run
    assert not any(c.startswith(("RETR", "DELE", "LIST")) for c in run.sent()), run
    assert run.fetched == []
    assert sorted(p.read_bytes() for p in maildrop.message_files()) == sorted(MESSAGES.values())
    mechanism = METHODS[method][1]
    assert wait_for_sign_ins(maildrop, 1) == [(mechanism, "failure", listener(transport))]
