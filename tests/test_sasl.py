"""SASL mechanisms with independent clients: curl for LOGIN and PLAIN, Python's scramp
for SCRAM-SHA-256 (SCRAM-SHA-256-PLUS is proven with rsasl in crates/poplar/tests)."""
import base64
import re
import ssl
import socket

import pytest
from scramp import ScramClient

from conftest import DEFAULT_PASSWORD, IO_TIMEOUT, Conn, tls_context
from test_clients import curl, ok

MESSAGE = b"Subject: sasl\r\n\r\nhello\r\n"


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def unb64(line: str) -> str:
    assert line.startswith("+ "), line
    return base64.b64decode(line[2:]).decode()


def sasl_line(c: Conn) -> str:
    c.transcript.append("(challenge)")
    return c.readline()


def sasl_mechs(capa: list[str]) -> list[str]:
    for line in capa:
        if line.startswith("SASL "):
            return line.split()[1:]
    return []


@pytest.fixture
def mail(server):
    srv = server()
    srv.deliver(MESSAGE)
    return srv


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"])
@pytest.mark.parametrize("mech", ["LOGIN", "PLAIN"])
@pytest.mark.parametrize("sasl_ir", [False, True])
def test_curl_login_options(mail, scheme, mech, sasl_ir):
    extra = ["--login-options", f"AUTH={mech}"] + (["--sasl-ir"] if sasl_ir else [])
    out = ok(curl(mail, scheme, "/1", *extra))
    assert out.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    bad = curl(mail, scheme, "/1", *extra, password="wrong password")
    assert bad.returncode == 67, bad  # curl: login denied


def test_login_transcript_and_abort(srv):
    with srv.tls() as c:
        c.send("AUTH LOGIN\r\n")
        assert unb64(sasl_line(c)) == "Username:"
        c.send(b64("alice") + "\r\n")
        assert unb64(sasl_line(c)) == "Password:"
        c.send("*\r\n")
        assert c.readline().startswith("-ERR authentication cancelled")
        c.send("AUTH LOGIN " + b64("alice") + "\r\n")
        assert unb64(sasl_line(c)) == "Password:"
        c.send("%%%\r\n")
        assert c.readline().startswith("-ERR invalid base64")
        c.send("AUTH LOGIN\r\n")
        sasl_line(c)
        c.send(b64("alice") + "\r\n")
        sasl_line(c)
        c.send(b64(DEFAULT_PASSWORD) + "\r\n")
        assert c.readline().startswith("+OK")
        assert c.stat() == (0, 0)
        c.quit()


def scram_sign_in(c: Conn, user: str, password: str, initial: bool = False) -> str:
    """Runs SCRAM-SHA-256 with scramp; returns the server's last status line."""
    client = ScramClient(["SCRAM-SHA-256"], user, password)
    first = client.get_client_first()
    if initial:
        c.send(f"AUTH SCRAM-SHA-256 {b64(first)}\r\n")
    else:
        c.send("AUTH SCRAM-SHA-256\r\n")
        assert sasl_line(c) == "+ "
        c.send(b64(first) + "\r\n")
    line = sasl_line(c)
    if not line.startswith("+ "):
        return line
    client.set_server_first(unb64(line))
    c.send(b64(client.get_client_final()) + "\r\n")
    line = sasl_line(c)
    if not line.startswith("+ "):
        return line
    client.set_server_final(unb64(line))  # raises if the server signature is wrong
    c.send("\r\n")
    return c.readline()


@pytest.mark.parametrize("initial", [False, True])
def test_scram_sha256_with_scramp(mail, initial):
    with mail.tls() as c:
        assert "SCRAM-SHA-256" in sasl_mechs(c.capa())
        r = scram_sign_in(c, "alice", DEFAULT_PASSWORD, initial)
        assert r.startswith("+OK"), r
        assert c.stat()[0] == 1
        c.quit()


def test_scram_after_stls_and_utf8_password(server):
    srv = server(users={"jörg": "pässwörd ünïcode"})
    with srv.stls() as c:
        r = scram_sign_in(c, "jörg", "pässwörd ünïcode")
        assert r.startswith("+OK"), r
        c.quit()


def test_scram_failures_look_alike(srv):
    with srv.tls() as c:
        wrong = scram_sign_in(c, "alice", "not the password")
        unknown = scram_sign_in(c, "nobody", "not the password")
        assert wrong.startswith("-ERR [AUTH]"), wrong
        assert wrong == unknown
        # The session goes on: a right password now works.
        assert scram_sign_in(c, "alice", DEFAULT_PASSWORD).startswith("+OK")
        c.quit()


def test_scram_unknown_user_gets_stable_parameters(srv):
    def server_first(user):
        with srv.tls() as c:
            c.send("AUTH SCRAM-SHA-256 " + b64(f"n,,n={user},r=abcdef") + "\r\n")
            line = unb64(sasl_line(c))
            c.send("*\r\n")
            c.readline()
            parts = dict(p.split("=", 1) for p in line.split(","))
            return parts["s"], parts["i"]

    assert server_first("ghost") == server_first("ghost")
    salt, iterations = server_first("ghost")
    assert iterations == server_first("alice")[1]
    assert salt != server_first("alice")[0]


def test_scram_malformed_and_abort(srv):
    with srv.tls() as c:
        c.send("AUTH SCRAM-SHA-256 " + b64("x,,garbage") + "\r\n")
        assert c.readline().startswith("-ERR")
        c.send("AUTH SCRAM-SHA-256 !!!\r\n")
        assert c.readline().startswith("-ERR invalid base64")
        c.send("AUTH SCRAM-SHA-256\r\n")
        assert sasl_line(c) == "+ "
        c.send("*\r\n")
        assert c.readline().startswith("-ERR authentication cancelled")
        # A client-final with the wrong nonce.
        c.send("AUTH SCRAM-SHA-256 " + b64("n,,n=alice,r=abc") + "\r\n")
        sasl_line(c)
        c.send(b64("c=biws,r=WRONG,p=" + b64(b"\0" * 32)) + "\r\n")
        assert c.readline().startswith("-ERR")
        assert "TOP" in c.capa()


#: The default mechanisms with SCRAM-SHA-256-PLUS added, as an administrator opts in.
WITH_PLUS = {"mechanisms": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"]}


def test_scram_y_flag_is_refused_where_plus_is_offered(server):
    """RFC 5802 section 6: 'y' says the client thinks the server cannot bind; where
    -PLUS is advertised (TLS 1.3) that is a downgrade and must fail."""
    srv = server(sasl=WITH_PLUS)
    with srv.tls() as c:
        assert "SCRAM-SHA-256-PLUS" in sasl_mechs(c.capa())
        c.send("AUTH SCRAM-SHA-256 " + b64("y,,n=alice,r=abcdef") + "\r\n")
        assert c.readline().startswith("-ERR [AUTH]")


def test_tls12_offers_no_plus_and_accepts_y(server):
    srv = server(sasl=WITH_PLUS)
    s = socket.create_connection(("127.0.0.1", srv.pop3s_port), timeout=IO_TIMEOUT)
    ctx = tls_context(srv.cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c = Conn(ctx.wrap_socket(s, server_hostname="localhost"), cafile=srv.cert, server=srv)
    with c:
        c.read_greeting()
        mechs = sasl_mechs(c.capa())
        assert "SCRAM-SHA-256" in mechs and "SCRAM-SHA-256-PLUS" not in mechs, mechs
        c.send("AUTH SCRAM-SHA-256-PLUS\r\n")
        assert c.readline().startswith("-ERR unsupported")
        c.send("AUTH SCRAM-SHA-256 " + b64("y,,n=alice,r=abcdef") + "\r\n")
        assert sasl_line(c).startswith("+ ")
        c.send("*\r\n")
        c.readline()


def test_mechanisms_follow_config_and_connection(server):
    srv = server(sasl={"mechanisms": ["PLAIN"]})
    with srv.plain() as c:
        assert sasl_mechs(c.capa()) == []
        c.send("AUTH\r\n")
        assert c.readline().startswith("+OK")
        assert c.readline() == "."
        c.starttls()
        assert sasl_mechs(c.capa()) == ["PLAIN"]
        c.send("AUTH\r\n")
        assert c.readline().startswith("+OK")
        assert c.readline() == "PLAIN"
        assert c.readline() == "."
        for disabled in ("LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"):
            assert c.cmd(f"AUTH {disabled}").startswith("-ERR unsupported"), disabled
        c.quit()


def test_default_capa_leaves_plus_to_the_administrator(srv):
    """SCRAM-SHA-256-PLUS is opt-in (GNU SASL clients pick it and cannot bind): by
    default it is neither listed nor accepted, and a client that could bind but sees no
    -PLUS ('y') is not taken for a downgrade."""
    with srv.tls() as c:
        assert sasl_mechs(c.capa()) == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        assert c.cmd("AUTH SCRAM-SHA-256-PLUS").startswith("-ERR unsupported")
        c.send("AUTH SCRAM-SHA-256 " + b64("y,,n=alice,r=abcdef") + "\r\n")
        assert unb64(sasl_line(c)).startswith("r=abcdef")


def test_plus_listed_on_tls13_when_configured(server):
    srv = server(sasl=WITH_PLUS)
    with srv.tls() as c:
        assert sasl_mechs(c.capa()) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "LOGIN"]


def test_sasl_continuation_line_cap(srv):
    with srv.tls() as c:
        c.send("AUTH LOGIN\r\n")
        sasl_line(c)
        c.send("A" * 20000 + "\r\n")
        assert c.readline().startswith("-ERR line too long")
        assert "TOP" in c.capa()


def test_apop_with_poplib(server):
    import poplib
    srv = server(apop={"enabled": True})
    r = srv.cli("user", "apop-secret", "alice", "--password-stdin", stdin="tanstaaf\n")
    assert r.returncode == 0, r
    srv.deliver(MESSAGE)
    p = poplib.POP3_SSL("127.0.0.1", srv.pop3s_port, context=tls_context(srv.cert), timeout=IO_TIMEOUT)
    assert p.welcome.decode().count("<") == 1 and p.welcome.endswith(b">")
    with pytest.raises(poplib.error_proto) as e:
        p.apop("alice", "wrong secret")
    assert str(e.value).startswith("b'-ERR [AUTH]")
    p.apop("alice", "tanstaaf")
    assert p.stat()[0] == 1
    p.quit()
    # The account password is not the APOP secret.
    p = poplib.POP3_SSL("127.0.0.1", srv.pop3s_port, context=tls_context(srv.cert), timeout=IO_TIMEOUT)
    with pytest.raises(poplib.error_proto):
        p.apop("alice", DEFAULT_PASSWORD)
    p.quit()


def test_apop_timestamps_are_unique_and_absent_when_off(server):
    srv = server(apop={"enabled": True})
    greetings = set()
    for _ in range(5):
        with srv.tls(greet=False) as c:
            greetings.add(c.read_greeting())
    assert len(greetings) == 5
    off = server()
    with off.tls(greet=False) as c:
        assert "<" not in c.read_greeting()
        assert c.cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb").startswith("-ERR APOP is not enabled")


def test_apop_refused_before_tls_and_without_secret(server):
    srv = server(apop={"enabled": True})
    with srv.plain() as c:
        assert c.cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb").startswith("-ERR TLS required")
    with srv.tls() as c:
        # alice has no APOP secret: the same answer as a wrong digest.
        assert c.cmd("APOP alice c4c9334bac560ecc979e58001b3e22fb") == "-ERR [AUTH] invalid user name or password"
        assert c.cmd("APOP nobody c4c9334bac560ecc979e58001b3e22fb") == "-ERR [AUTH] invalid user name or password"
        assert c.cmd("APOP alice nothex").startswith("-ERR invalid argument")


def test_plain_can_be_disabled(server):
    srv = server(sasl={"mechanisms": ["SCRAM-SHA-256", "LOGIN"]})
    with srv.tls() as c:
        mechs = sasl_mechs(c.capa())
        assert "PLAIN" not in mechs and "LOGIN" in mechs, mechs
        assert c.cmd("AUTH PLAIN " + b64("\0alice\0" + DEFAULT_PASSWORD)).startswith("-ERR unsupported")
        assert scram_sign_in(c, "alice", DEFAULT_PASSWORD).startswith("+OK")
        c.quit()


def test_scram_salt_and_count_stay_the_same_when_the_asker_is_throttled(srv):
    """What a SCRAM client is shown depends on the name alone: a real account's salt
    and count, or an unknown name's fakes, are the same before and after the asker is
    throttled (issue 18). Abandoned exchanges count as failed attempts."""
    for name in ("alice", "nobody"):
        seen = set()
        for i in range(7):
            with srv.tls() as c:
                c.send("AUTH SCRAM-SHA-256 " + b64(f"n,,n={name},r=nonce{i}") + "\r\n")
                fields = dict(kv.split("=", 1) for kv in unb64(sasl_line(c)).split(","))
                seen.add((fields["s"], fields["i"]))
                c.send("*\r\n")
                assert c.readline().startswith("-ERR")
        assert len(seen) == 1, (name, seen)
    listed = srv.cli("lockout", "list", check=True).stdout.decode()
    for name in ("alice", "nobody"):
        # Four counted, then throttled: the last three were refused unchecked.
        assert re.search(rf"{name}  from 127\.0\.0\.1  4 failures, .* throttled until", listed), listed
