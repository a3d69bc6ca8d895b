"""OAUTHBEARER (RFC 7628) and XOAUTH2 against a REAL OpenID provider on loopback.

The provider is panva's oidc-provider from the npm registry (tests/peers/oidc/server.mjs,
installed by tests/peers/install-oidc-provider.sh). Tokens are its real access tokens,
issued through the client_credentials grant with an RFC 8707 resource indicator: every
test user has a client of its own whose extra token claims carry the user's email, so
no browser is needed and every token is signed by the provider's own keys. Clients are
curl (--oauth2-bearer) and Python's poplib (AUTH sent by hand); refusals are checked on
the wire (RFC 7628 section 3.2.2 error challenge, %x01, -ERR [AUTH]) and in the audit
log, each with its own reason.
"""

import collections
import base64
import json
import re
import os
import poplib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import (EXTRA_SECRETS, IO_TIMEOUT, REPO_ROOT, free_port, read_audit, require_peer,
                      require_tool, tls_context)

OIDC_DIR = REPO_ROOT / "tests" / "peers" / "oidc"
ALICE = "alice@example.org"
BOB = "bob@example.org"
MAIL = "urn:poplar:mail"
OTHER = "urn:poplar:other"
B_AUD = "urn:poplar:b"
POPLAR_CLIENT = ("poplar", "poplar-introspection-secret-0123456789")


def find_provider():
    node = shutil.which("node")
    ok = node and (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").exists()
    return node if ok else None


def node_binary() -> str:
    return require_peer("the oidc-provider npm package and Node.js", "install-oidc-provider.sh",
                        find_provider)


def unavailable(message: str):
    """A provider that cannot run: a failure under CI=true, a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def secret(name: str) -> str:
    return f"{name}-client-secret-0123456789abcdef"


class Provider:
    """One oidc-provider process, restartable with other keys (key rotation)."""

    def __init__(self, root: Path, clients: list, resources: dict, keys: list):
        self.root = root
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients = clients
        self.resources = resources
        self.keys = keys
        self.proc = None
        EXTRA_SECRETS.update(secret(c["client_id"]) for c in clients)

    def start(self):
        node = node_binary()
        cfg = {
            "port": self.port,
            "keyDir": str(self.root / "keys"),
            "keys": self.keys,
            "clients": [{**c, "client_secret": secret(c["client_id"])} for c in self.clients],
            "resources": self.resources,
        }
        path = self.root / f"provider-{self.port}.json"
        path.write_text(json.dumps(cfg))
        self.log = open(self.root / f"provider-{self.port}.log", "ab")
        self.proc = subprocess.Popen([node, str(OIDC_DIR / "server.mjs"), str(path)],
                                     cwd=OIDC_DIR, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration",
                                            timeout=2) as r:
                    if json.load(r)["issuer"] == self.issuer:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        unavailable("oidc-provider did not start:\n"
                    + (self.root / f"provider-{self.port}.log").read_text(errors="replace")[-2000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, keys: list):
        self.stop()
        self.keys = keys
        return self.start()

    def _post(self, path: str, client: str, fields: dict, client_secret: str | None = None):
        data = urllib.parse.urlencode(fields).encode()
        req = urllib.request.Request(f"{self.issuer}{path}", data=data, method="POST")
        auth = base64.b64encode(f"{client}:{client_secret or secret(client)}".encode()).decode()
        req.add_header("Authorization", f"Basic {auth}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{path}: HTTP {e.code}: {e.read()[:500]!r}") from None
        return json.loads(body) if body else None

    def token(self, client: str, resource: str = MAIL, scope: str = "pop3") -> str:
        answer = self._post("/token", client, {"grant_type": "client_credentials",
                                               "resource": resource, "scope": scope})
        token = answer["access_token"]
        EXTRA_SECRETS.add(token)
        return token

    def revoke(self, client: str, token: str):
        self._post("/token/revocation", client, {"token": token})


def user_client(name: str, email: str, scope="pop3 other", verified=True, **extra) -> dict:
    claims = {"email": email, "email_verified": verified}
    return {"client_id": name, "scope": scope, "claims": claims, **extra}


def jwt_resources(aud: str, prefix: str) -> dict:
    out = {prefix: {"audience": aud, "scope": "pop3 other", "alg": "RS256"}}
    for alg in ("PS256", "ES256", "EdDSA"):
        out[f"{prefix}:{alg.lower()}"] = {"audience": aud, "scope": "pop3 other", "alg": alg}
    return out


ALL_KEYS = [{"kid": "rsa-1", "type": "RSA"}, {"kid": "ec-1", "type": "EC"},
            {"kid": "ed-1", "type": "OKP"}]


def issuer_config(p: Provider, name: str, audience: str, **extra) -> dict:
    return {"name": name, "issuer": p.issuer, "audience": [audience],
            "required_scopes": ["pop3"], "user_claim": "email", "leeway_secs": 0,
            "jwks_min_refresh_secs": 1, **extra}


@pytest.fixture(scope="module")
def provider_a(tmp_path_factory):
    root = tmp_path_factory.mktemp("oidc-a")
    resources = {**jwt_resources(MAIL, MAIL),
                 OTHER: {"audience": OTHER, "scope": "pop3 other", "alg": "RS256"},
                 B_AUD: {"audience": B_AUD, "scope": "pop3 other", "alg": "ES256"},
                 "urn:poplar:opaque": {"audience": MAIL, "scope": "pop3 other",
                                       "format": "opaque"}}
    clients = [user_client("alice", ALICE), user_client("alice-short", ALICE, ttl=1),
               user_client("alice-later", ALICE, nbfOffset=3600),
               # An address the provider has not verified, the same address in
               # full-width letters (NFKC would fold it into alice's) and in capitals.
               user_client("alice-unverified", ALICE, verified=False),
               user_client("alice-fullwidth", "\uff41\uff4c\uff49\uff43\uff45@example.org"),
               user_client("alice-capitals", ALICE.upper()),
               {"client_id": "nobody", "scope": "pop3 other"},
               {"client_id": POPLAR_CLIENT[0], "scope": "pop3"}]
    p = Provider(root, clients, resources, ALL_KEYS).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def provider_b(tmp_path_factory):
    root = tmp_path_factory.mktemp("oidc-b")
    resources = {B_AUD: {"audience": B_AUD, "scope": "pop3", "alg": "ES256"},
                 MAIL: {"audience": MAIL, "scope": "pop3", "alg": "ES256"}}
    p = Provider(root, [user_client("bob", BOB, scope="pop3")], resources,
                 [{"kid": "b-ec-1", "type": "EC"}, {"kid": "b-rsa-1", "type": "RSA"}]).start()
    yield p
    p.stop()


MESSAGE = b"From: a@example.org\r\nSubject: oauth\r\n\r\nSigned in with a bearer token.\r\n"

DEFENCE = {"throttle_after": 1000, "lockout_threshold": 100, "ban_accounts": 0}


@pytest.fixture(scope="module")
def poplar_a(module_server, provider_a):
    """Poplar trusting issuer A only (JWKS by discovery, introspection with Poplar's
    own client)."""
    EXTRA_SECRETS.add(POPLAR_CLIENT[1])
    issuer = issuer_config(provider_a, "idp-a", MAIL, client_id=POPLAR_CLIENT[0],
                           client_secret=secret(POPLAR_CLIENT[0]), introspection_cache_secs=1)
    srv = module_server(users={ALICE: "alice password 1", BOB: "bob password 1"},
                        oauth={"issuers": [issuer]}, defence=DEFENCE)
    srv.deliver(MESSAGE, user=ALICE)
    return srv


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def oauthbearer(user: str | None, token: str) -> str:
    gs2 = f"n,a={user}," if user else "n,,"
    return b64(f"{gs2}\x01host=127.0.0.1\x01port=995\x01auth=Bearer {token}\x01\x01".encode())


def xoauth2(user: str, token: str) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01".encode())


def audit_reasons(srv) -> list[dict]:
    return read_audit(srv.data_dir / "audit.log")


def wait_audit(srv, reason: str, mechanism: str = "OAUTHBEARER", after: int = 0) -> dict:
    """The first audit line with `reason` among those after the first `after` lines."""
    for _ in range(100):
        for line in audit_reasons(srv)[after:]:
            if line.get("reason") == reason and line.get("mechanism") == mechanism:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no audit line with reason {reason}: {audit_reasons(srv)[-5:]}")


def poplib_sign_in(srv, mechanism: str, user: str, token: str) -> poplib.POP3_SSL:
    p = poplib.POP3_SSL("127.0.0.1", srv.pop3s_port, timeout=IO_TIMEOUT,
                        context=tls_context(srv.cert))
    ir = oauthbearer(user, token) if mechanism == "OAUTHBEARER" else xoauth2(user, token)
    assert p._shortcmd(f"AUTH {mechanism} {ir}").startswith(b"+OK")
    return p


def refused(srv, token: str, user: str | None = ALICE, mechanism="OAUTHBEARER") -> dict:
    """Signs in with a token that must be refused; checks the RFC 7628 section 3.2.2
    exchange and returns the error JSON the server sent."""
    with srv.tls() as c:
        ir = oauthbearer(user, token) if mechanism == "OAUTHBEARER" else xoauth2(user, token)
        reply = c.cmd(f"AUTH {mechanism} {ir}")
        assert reply.startswith("+ "), reply
        error = json.loads(base64.b64decode(reply[2:]))
        # RFC 7628: the client answers %x01; XOAUTH2 clients send an empty line.
        final = c.cmd("AQ==" if mechanism == "OAUTHBEARER" else "")
        assert final == "-ERR [AUTH] bearer token refused", final
        c.ok("CAPA")  # the session goes on
    return error


def test_capa_offers_oauth_only_under_tls(poplar_a, server):
    with poplar_a.tls() as c:
        sasl = next(line for line in c.capa() if line.startswith("SASL "))
        assert "OAUTHBEARER" in sasl.split() and "XOAUTH2" in sasl.split(), sasl
    with poplar_a.plain() as c:
        assert not any("OAUTHBEARER" in line for line in c.capa())
        assert c.cmd("AUTH OAUTHBEARER " + oauthbearer(ALICE, "x.y.z")).startswith("-ERR")
    # Without an issuer, nothing is offered even under TLS.
    srv = server()
    with srv.tls() as c:
        assert not any("OAUTHBEARER" in line for line in c.capa())


def test_curl_signs_in_with_oauthbearer_and_xoauth2(poplar_a, provider_a, module_server):
    curl = require_tool("curl")
    # curl (7.88 here) sends OAUTHBEARER whenever the server offers it, even with
    # AUTH=XOAUTH2; a server that offers XOAUTH2 alone is signed in to with XOAUTH2.
    xoauth2_only = module_server(
        users={ALICE: "alice password 4"}, sasl={"mechanisms": ["XOAUTH2", "PLAIN"]},
        oauth={"issuers": [issuer_config(provider_a, "idp-a", MAIL)]}, defence=DEFENCE)
    xoauth2_only.deliver(MESSAGE, user=ALICE)
    for srv, mechanism in ((poplar_a, "OAUTHBEARER"), (xoauth2_only, "XOAUTH2")):
        token = provider_a.token("alice")
        r = subprocess.run([curl, "-sS", "--cacert", str(srv.cert), "--login-options",
                            f"AUTH={mechanism}", "--user", f"{ALICE}:", "--oauth2-bearer", token,
                            f"pop3s://localhost:{srv.pop3s_port}/1"],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, (mechanism, r.stderr)
        assert b"Signed in with a bearer token." in r.stdout, r.stdout
        line = wait_audit_success(srv, mechanism)
        assert line["user_resolved"] == ALICE


def wait_audit_success(srv, mechanism: str) -> dict:
    for _ in range(100):
        for line in audit_reasons(srv):
            if line.get("mechanism") == mechanism and line.get("result") == "success":
                return line
        time.sleep(0.05)
    raise AssertionError(f"no successful {mechanism} sign-in in the audit log")


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_poplib_retrieves_with_every_signature_algorithm(poplar_a, provider_a, alg):
    resource = MAIL if alg == "RS256" else f"{MAIL}:{alg.lower()}"
    token = provider_a.token("alice", resource)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == alg and header["typ"] == "at+jwt"
    for mechanism in ("OAUTHBEARER", "XOAUTH2"):
        p = poplib_sign_in(poplar_a, mechanism, ALICE, token)
        _, lines, _ = p.retr(1)
        assert b"Signed in with a bearer token." in lines
        p.quit()


def test_opaque_token_by_introspection_and_revoked(poplar_a, provider_a):
    token = provider_a.token("alice", "urn:poplar:opaque")
    assert token.count(".") == 0, "an opaque token"
    p = poplib_sign_in(poplar_a, "OAUTHBEARER", None, token)
    p.stat()
    p.quit()
    revoked = provider_a.token("alice", "urn:poplar:opaque")
    provider_a.revoke("alice", revoked)
    error = refused(poplar_a, revoked)
    assert error["status"] == "invalid_token"
    wait_audit(poplar_a, "token_inactive")


def tamper(token: str, header: dict | None = None, payload: dict | None = None,
           signature: str | None = None) -> str:
    h, p, s = token.split(".")
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    dec = lambda x: json.loads(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))
    if header is not None:
        h = enc({**dec(h), **header})
    if payload is not None:
        p = enc({**dec(p), **payload})
    return f"{h}.{p}.{s if signature is None else signature}"


def flip(sig: str) -> str:
    """One character of the signature changed, well inside (valid base64url still)."""
    c = "A" if sig[10] != "A" else "B"
    return sig[:10] + c + sig[11:]


def hs256(token: str, key: bytes) -> str:
    """Re-signs with HMAC keyed by `key` (the classic public-key confusion forgery)."""
    import hashlib
    import hmac
    h, p, _ = tamper(token, header={"alg": "HS256"}).split(".")
    sig = hmac.new(key, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"


def test_refusals_each_with_its_reason(poplar_a, provider_a, provider_b):
    good = provider_a.token("alice")
    expiring = provider_a.token("alice-short")
    jwks = urllib.request.urlopen(f"{provider_a.issuer}/jwks", timeout=10).read()
    cases = [
        ("token_audience", provider_a.token("alice", OTHER)),
        ("token_issuer", provider_b.token("bob", MAIL)),
        ("token_signature", tamper(good, signature=flip(good.split(".")[2]))),
        ("token_algorithm", tamper(good, header={"alg": "none"}, signature="")),
        ("token_algorithm", hs256(good, jwks)),
        ("token_scope", provider_a.token("alice", scope="other")),
        ("token_not_yet_valid", provider_a.token("alice-later")),
        ("token_no_user", provider_a.token("nobody")),
        ("token_malformed", tamper(good, header={"typ": "dpop+jwt"})),
        ("token_no_user", provider_a.token("alice-unverified")),
        ("token_no_user", provider_a.token("alice-fullwidth")),
    ]
    for reason, token in cases:
        EXTRA_SECRETS.add(token)
        before = len(audit_reasons(poplar_a))
        error = refused(poplar_a, token)
        assert error["status"] == ("insufficient_scope" if reason == "token_scope"
                                   else "invalid_token"), (reason, error)
        assert error["openid-configuration"] == \
            f"{provider_a.issuer}/.well-known/openid-configuration"
        assert error["scope"] == "pop3"
        line = wait_audit(poplar_a, reason, after=before)
        assert line["result"] == "failure" and line["user"] == ALICE
    # A valid token for alice, but the client names bob.
    refused(poplar_a, good, user=BOB)
    wait_audit(poplar_a, "token_user_mismatch")
    # The payload changed after signing: the signature no longer matches.
    refused(poplar_a, tamper(good, payload={"email": BOB}), user=BOB)
    # XOAUTH2 refuses the way Gmail does: its JSON, then -ERR after the empty line.
    error = refused(poplar_a, provider_a.token("alice", OTHER), mechanism="XOAUTH2")
    assert error == {"status": "401", "schemes": "Bearer", "scope": "pop3"}
    wait_audit(poplar_a, "token_audience", "XOAUTH2")
    # Expired: the provider issued it for one second; the leeway is 0 here.
    time.sleep(2.2)
    refused(poplar_a, expiring)
    wait_audit(poplar_a, "token_expired")
    text = (poplar_a.data_dir / "audit.log").read_text()
    assert good not in text and good.split(".")[2] not in text


def sys_temp(srv, token: str) -> bool:
    with srv.tls() as c:
        reply = c.cmd("AUTH OAUTHBEARER " + oauthbearer(ALICE, token))
        assert reply.startswith("-ERR [SYS/TEMP]"), reply
        c.ok("CAPA")
    return True


def test_key_rotation_and_provider_down(module_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("oidc-rot")
    p = Provider(root, [user_client("alice", ALICE)], jwt_resources(MAIL, MAIL),
                 [{"kid": "rot-1", "type": "RSA"}]).start()
    try:
        srv = module_server(users={ALICE: "alice password 2"},
                            oauth={"issuers": [issuer_config(p, "rotating", MAIL)]},
                            defence=DEFENCE)
        srv.deliver(MESSAGE, user=ALICE)
        old = p.token("alice")
        poplib_sign_in(srv, "OAUTHBEARER", ALICE, old).quit()
        # The provider rotates: rot-1 out, rot-2 in. Poplar keeps running.
        p.restart([{"kid": "rot-2", "type": "RSA"}])
        new = p.token("alice")
        assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == "rot-2"
        time.sleep(1.2)  # past jwks_min_refresh_secs (1 here) since the last fetch
        poplib_sign_in(srv, "OAUTHBEARER", ALICE, new).quit()
        # The unknown kid made Poplar fetch again; one more fetch is not allowed yet, so
        # the rotated-out key cannot be ruled out: try again later...
        assert sys_temp(srv, old)
        # ... and once a fetch is allowed, the key is known to be gone: refused.
        time.sleep(1.2)
        refused(srv, old)
        wait_audit(srv, "token_unknown_key")
        # The provider goes away: keys already fetched keep working...
        p.stop()
        poplib_sign_in(srv, "XOAUTH2", ALICE, new).quit()
        # ... and a token whose key Poplar does not hold cannot be checked now.
        time.sleep(1.2)  # past jwks_min_refresh_secs, so Poplar tries the provider
        before = len(audit_reasons(srv))
        assert sys_temp(srv, tamper(new, header={"kid": "rot-3"}))
        for _ in range(100):
            fresh = [l for l in audit_reasons(srv)[before:] if l.get("event") == "auth"]
            if fresh:
                break
            time.sleep(0.05)
        assert [(l["result"], l["mechanism"]) for l in fresh] == \
            [("unavailable", "OAUTHBEARER")], fresh
    finally:
        p.stop()


def test_two_issuers_each_for_its_own_audience(module_server, provider_a, provider_b):
    srv = module_server(users={ALICE: "alice password 3", BOB: "bob password 3"},
                        oauth={"issuers": [
                            issuer_config(provider_a, "idp-a", MAIL),
                            issuer_config(provider_b, "idp-b", B_AUD,
                                          jwks_url=f"{provider_b.issuer}/jwks"),
                        ]}, defence=DEFENCE)
    srv.deliver(MESSAGE, user=ALICE)
    srv.deliver(MESSAGE, user=BOB)
    for provider, client, user in ((provider_a, "alice", ALICE), (provider_b, "bob", BOB)):
        p = poplib_sign_in(srv, "OAUTHBEARER", user, provider.token(client, MAIL if
                                                                    provider is provider_a
                                                                    else B_AUD))
        _, lines, _ = p.retr(1)
        assert b"Signed in with a bearer token." in lines
        p.quit()
    # Each issuer's tokens for the other's audience are refused.
    refused(srv, provider_a.token("alice", B_AUD))
    refused(srv, provider_b.token("bob", MAIL), user=BOB)
    reasons = [l.get("reason") for l in audit_reasons(srv) if l.get("result") == "failure"]
    assert reasons.count("token_audience") == 2, reasons


def test_config_check_validates_oauth(server, tmp_path):
    srv = server(start=False, oauth={"issuers": [{
        "name": "corp", "issuer": "https://login.example.org/tenant/v2.0",
        "audience": ["api://poplar"], "client_id": "poplar", "client_secret": "s3cret-value-xyz"}]})
    r = srv.cli("config", "check")
    assert r.returncode == 0, r.stderr
    assert b"s3cret-value-xyz" not in r.stdout and b"(redacted)" in r.stdout
    for bad in ({"issuer": "http://idp.example.org"}, {"audience": []},
                {"algorithms": ["HS256"]}, {"client_secret": None}):
        issuer = {"name": "corp", "issuer": "https://login.example.org/t/v2.0",
                  "audience": ["api://poplar"], "client_id": "poplar",
                  "client_secret": "x", **bad}
        issuer = {k: v for k, v in issuer.items() if v is not None}
        srv = server(users={}, start=False, oauth={"issuers": [issuer]})
        r = srv.cli("config", "check")
        assert r.returncode != 0 and b"oauth" in r.stderr, (bad, r.stderr)
    # Two issuers that both introspect: an opaque token cannot say whose it is, so
    # one would be shown the other's users' tokens.
    two = [{"name": n, "issuer": f"https://{n}.example.org", "audience": ["api://poplar"],
            "client_id": "poplar", "client_secret": "x"} for n in ("corp", "partner")]
    srv = server(users={}, start=False, oauth={"issuers": two})
    r = srv.cli("config", "check")
    assert r.returncode != 0 and b"at most one issuer may have client_id" in r.stderr, r.stderr


def test_the_token_must_name_the_account_as_it_is(poplar_a, provider_a):
    # Letter case is all that may differ (user names are lower-cased here) ...
    token = provider_a.token("alice-capitals")
    EXTRA_SECRETS.add(token)
    p = poplib_sign_in(poplar_a, "OAUTHBEARER", ALICE, token)
    assert p.stat()[0] >= 1
    p.quit()
    # ... and with no name given, the token's (verified) address picks the account.
    with poplar_a.tls() as c:
        assert c.cmd("AUTH OAUTHBEARER " + oauthbearer(None, token)).startswith("+OK")
        c.quit()


def test_bad_anonymous_tokens_lock_no_one(server, provider_a):
    """Token sign-ins that name no user are limited per source only: fifty bad tokens
    from fifty addresses (each checked) lock no 'empty' account, and a valid token
    that names no one signs in from another address afterwards (issue 18)."""
    issuer = issuer_config(provider_a, "idp-a", MAIL)
    srv = server(users={ALICE: "alice password 1"}, oauth={"issuers": [issuer]},
                 defence={"lockout_threshold": 50, "ban_accounts": 0})
    for i in range(50):
        with srv.tls(source=f"127.76.{i}.1") as c:
            reply = c.cmd("AUTH OAUTHBEARER " + oauthbearer(None, f"not-a-token-{i}"))
            assert reply.startswith("+ "), reply
            assert c.cmd("AQ==") == "-ERR [AUTH] bearer token refused"
    reasons = [r.get("reason") for r in audit_reasons(srv) if r.get("event") == "auth"]
    assert reasons.count("token_malformed") == 50, collections.Counter(reasons)
    token = provider_a.token("alice")
    with srv.tls(source="127.77.0.1") as c:
        assert c.cmd("AUTH OAUTHBEARER " + oauthbearer(None, token)).startswith("+OK")
        c.quit()
    listed = srv.cli("lockout", "list", check=True).stdout.decode()
    assert re.search(r"accounts locked for unfamiliar networks:\s+none", listed), listed
