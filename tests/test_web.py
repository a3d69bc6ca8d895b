"""The self-service security page, driven in a real browser: Debian's Chromium, headless,
through Playwright (the Python package; it downloads no browser of its own). TOTP codes
come from pyotp, an independent implementation; POP3 is Python's poplib.

Screenshots of every page go to tests/output/web/ (kept out of git), at a phone's
screen size unless the name says `desktop`.
"""

import base64
import http.client
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pyotp
import pytest
from conftest import EXTRA_SECRETS, REPO_ROOT, read_audit, require_peer, tls_context
from test_audit import wait_for
from test_mfa import enroll, poplib_login

PW = "alice account password"
FAILURE = b"-ERR [AUTH] invalid user name or password"
SHOTS = REPO_ROOT / "tests" / "output" / "web"
PHONE = {"width": 390, "height": 844}


def spki_pin(cert: Path) -> str:
    """base64 SHA-256 of the certificate's public key: Chromium then trusts exactly this
    server's key (--ignore-certificate-errors-spki-list), and every check stays on."""
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)],
                         check=True, capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         check=True, capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der,
                            check=True, capture_output=True).stdout
    return base64.b64encode(digest).decode()


@pytest.fixture(scope="module")
def playwright():
    def find():
        try:
            from playwright.sync_api import sync_playwright  # noqa: F401
        except ImportError:
            return None
        return shutil.which("chromium")
    require_peer("Debian's chromium and Playwright for Python", "install-chromium.sh", find)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright):
    """browser(srv, phone=True) -> a page in a fresh headless Chromium trusting srv's key."""
    opened = []

    def launch(srv, phone=True):
        b = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--no-first-run",
                  f"--ignore-certificate-errors-spki-list={spki_pin(srv.cert)}"],
        )
        opened.append(b)
        ctx = b.new_context(viewport=PHONE if phone else {"width": 1200, "height": 900},
                            device_scale_factor=2 if phone else 1, is_mobile=phone,
                            has_touch=phone)
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        return page

    yield launch
    for b in opened:
        b.close()


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def url(srv, path="/"):
    return f"https://localhost:{srv.web_port}{path}"


def sign_in(page, srv, user, password):
    page.goto(url(srv, "/signin"))
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("button[type=submit]")


def next_code(totp):
    """A code the server has not seen: the next step's (one step of drift is allowed)."""
    return totp.at(time.time() + 30)


def test_password_totp_app_password_pop3_and_revocation(server, browser):
    srv = server(users={"alice": PW}, mfa={"default": "optional"},
                 audit={"log": "audit.log"})
    srv.deliver(b"Subject: hello\n\nfrom the web test\n")
    totp, _ = enroll(srv)
    page = browser(srv)

    page.goto(url(srv, "/"))
    assert page.url.endswith("/signin"), "signed out: the page asks to sign in"
    shot(page, "01-sign-in")
    sign_in(page, srv, "alice", PW)
    page.wait_for_url("**/signin/code")
    assert "authenticator app" in page.inner_text("main")
    shot(page, "02-second-factor")
    page.fill("#code", next_code(totp))
    page.click("button[type=submit]")
    page.wait_for_url(url(srv, "/"))
    assert "On:" in page.inner_text("#two-step")
    assert "No app passwords" in page.inner_text("#apps")
    shot(page, "03-overview")

    page.fill("#label", "phone")
    page.check("input[name=read_only]")
    page.click("#apps form[action='/app-passwords'] button[type=submit]")
    app_pw = page.inner_text("#app-password").strip()
    EXTRA_SECRETS.add(app_pw)
    assert re.fullmatch(r"[a-z0-9]{4}(-[a-z0-9]{4}){3}", app_pw), app_pw
    shot(page, "04-new-app-password")

    # The app password opens POP3 (read-only: DELE refused) ...
    p = poplib_login(srv, "alice", app_pw)
    assert not isinstance(p, bytes), p
    assert p.stat()[0] == 1
    assert b"hello" in b"\n".join(p.retr(1)[1])
    with pytest.raises(Exception, match="read-only"):
        p.dele(1)
    p.quit()

    # ... and the page shows its last use.
    page.click("a.button")
    page.wait_for_url(url(srv, "/"))
    apps = page.inner_text("#app-passwords")
    assert "phone" in apps and "from 127.0.0.1" in apps and "read-only" in apps, apps
    history = page.inner_text("#history")
    assert "WEB+TOTP" in history and "success" in history, history
    shot(page, "05-app-password-listed")

    page.click("#app-passwords button.danger")
    page.wait_for_url(url(srv, "/"))
    assert "revoked" in page.inner_text("main")
    assert "No app passwords" in page.inner_text("#apps")
    shot(page, "06-revoked")

    refused = poplib_login(srv, "alice", app_pw)
    assert isinstance(refused, bytes) and refused.startswith(FAILURE), refused

    events = wait_for(srv, lambda r: r["event"] in ("web_auth", "account"))
    assert [(r["event"], r.get("mechanism") or r.get("action"), r.get("result"))
            for r in events] == [
        ("web_auth", "password", "code_required"),
        ("web_auth", "totp", "success"),
        ("account", "app_password_created", None),
        ("account", "app_password_revoked", None),
    ], events
    assert all(r["src_ip"] == "127.0.0.1" and r["listener"] == "web" for r in events)

    page.click("header button")  # sign out
    page.wait_for_url("**/signin")
    page.goto(url(srv, "/"))
    assert page.url.endswith("/signin"), "signed out for good"


def test_enrolment_recovery_codes_and_reused_codes(server, browser):
    srv = server(users={"bob": PW})
    page = browser(srv)
    sign_in(page, srv, "bob", PW)
    page.wait_for_url(url(srv, "/"))
    assert "Off:" in page.inner_text("#two-step")
    assert "Set up two-step verification" in page.inner_text("#apps"), \
        "no app password without a second factor"
    shot(page, "07-overview-password-only")

    page.click("#two-step button")
    page.wait_for_url("**/mfa/setup")
    assert page.locator(".qr svg").count() == 1, "a QR code as inline SVG"
    secret = page.get_attribute("#secret", "data-secret")
    page.click("details summary")
    uri = page.inner_text("#otpauth")
    shot(page, "08-enrol")
    totp = pyotp.parse_uri(uri)
    assert totp.secret == secret and totp.name == "bob", uri
    assert totp.interval == 30 and totp.digits == 6
    page.fill("#code", "000000" if totp.now() != "000000" else "111111")
    page.click("form[action='/mfa/confirm'] button")
    assert "not the current one" in page.inner_text("main")
    code = totp.now()
    page.fill("#code", code)
    page.click("form[action='/mfa/confirm'] button")
    codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10, codes
    EXTRA_SECRETS.update(codes)
    shot(page, "09-recovery-codes")
    page.click("a.button")
    page.wait_for_url(url(srv, "/"))
    assert "On:" in page.inner_text("#two-step")
    assert page.locator("form[action='/app-passwords']").count() == 1
    page.click("header button")
    page.wait_for_url("**/signin")

    # The code the enrolment used is spent; one two steps off is refused.
    sign_in(page, srv, "bob", PW)
    page.wait_for_url("**/signin/code")
    page.fill("#code", code)
    page.click("button[type=submit]")
    assert "not right" in page.inner_text("main"), "a reused code"
    page.fill("#code", totp.at(time.time() + 60))
    page.click("button[type=submit]")
    assert "not right" in page.inner_text("main"), "two steps off"
    shot(page, "10-code-refused")
    # A recovery code works once.
    page.fill("#code", codes[0])
    page.click("button[type=submit]")
    page.wait_for_url(url(srv, "/"))
    assert "recovery code" in page.inner_text("main")
    assert page.inner_text("#codes-left") == "9"
    page.click("header button")
    page.wait_for_url("**/signin")
    sign_in(page, srv, "bob", PW)
    page.wait_for_url("**/signin/code")
    page.fill("#code", codes[0])
    page.click("button[type=submit]")
    assert "not right" in page.inner_text("main"), "a recovery code used twice"


def test_password_change_under_the_policy(server, browser):
    srv = server(users={"carol": PW})
    page = browser(srv, phone=False)
    sign_in(page, srv, "carol", PW)
    page.wait_for_url(url(srv, "/"))
    shot(page, "11-overview-desktop")

    def change(current, new, confirm=None):
        page.click("#password summary")
        page.fill("#current", current)
        page.fill("#new", new)
        page.fill("#confirm", new if confirm is None else confirm)
        page.click("form[action='/password'] button")
        page.wait_for_url(url(srv, "/"))
        return page.inner_text("main .notice")

    assert "current password is not right" in change("wrong", "river copper lantern autumn")
    assert "differ" in change(PW, "river copper lantern autumn", "something else entirely")
    refused = change(PW, "Summer2024!")
    assert "too short" in refused, refused
    shot(page, "12-password-refused")
    assert "contains your user name" in change(PW, "carol carol carol carol")
    new = "river copper lantern autumn"
    EXTRA_SECRETS.add(new)
    assert "Password changed" in change(PW, new)
    assert isinstance(poplib_login(srv, "carol", PW), bytes), "the old password is gone"
    p = poplib_login(srv, "carol", new)
    assert not isinstance(p, bytes), p
    p.quit()


# ----------------------------------------------------------------- without a browser


class Http:
    """HTTPS requests to the page with Python's own client, verifying the certificate."""

    def __init__(self, srv):
        self.srv = srv
        self.cookie = None

    def request(self, method, path, form=None, headers=None):
        c = http.client.HTTPSConnection("localhost", self.srv.web_port, timeout=30,
                                        context=tls_context(self.srv.cert))
        h = dict(headers or {})
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            h["Cookie"] = self.cookie
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read().decode()
        set_cookie = r.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";")[0]
        c.close()
        return r, data


def test_refusals_look_alike_and_forms_need_their_token(server):
    srv = server(users={"alice": PW}, mfa={"default": "optional"})
    totp, _ = enroll(srv)
    h = Http(srv)
    r, page = h.request("GET", "/signin")
    assert r.status == 200
    for header, value in [("Content-Security-Policy", "default-src 'none'"),
                          ("X-Frame-Options", "DENY"), ("Cache-Control", "no-store"),
                          ("Referrer-Policy", "no-referrer")]:
        assert value in (r.getheader(header) or ""), (header, r.getheaders())
    # No HSTS: it would force HTTPS on every port of the host, the metrics port's too.
    assert r.getheader("Strict-Transport-Security") is None

    def refusal(user, password):
        r, body = Http(srv).request("POST", "/signin", {"user": user, "password": password})
        return r.status, re.sub(r'value="[^"]*"', "", body)

    wrong = refusal("alice", "wrong password")
    assert wrong[0] == 401 and "not right" in wrong[1]
    assert refusal("nobody", "wrong password") == wrong, "an unknown user looks the same"
    # An app password is not the account password here.
    app_pw = srv.cli("app-password", "create", "alice", "--label", "phone", check=True).stdout.decode().strip()
    EXTRA_SECRETS.add(app_pw)
    assert refusal("alice", app_pw) == wrong

    # A cross-site POST is refused before the password is even looked at: no attempt
    # reaches the audit log.
    attempts = len(wait_for(srv, lambda r: r["event"] == "web_auth"))
    r, _ = Http(srv).request("POST", "/signin", {"user": "alice", "password": PW},
                             {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status == 403
    time.sleep(0.3)
    assert len(wait_for(srv, lambda r: r["event"] == "web_auth")) == attempts

    r, _ = h.request("POST", "/signin", {"user": "alice", "password": PW})
    assert r.status == 303 and r.getheader("Location") == "/signin/code"
    cookie = r.getheader("Set-Cookie")
    assert cookie.startswith("__Host-poplar=") and "Secure" in cookie and "HttpOnly" in cookie \
        and "SameSite=Strict" in cookie, cookie
    r, _ = h.request("GET", "/")
    assert r.status == 303 and r.getheader("Location") == "/signin/code", \
        "the password alone does not open the page"
    r, page = h.request("GET", "/signin/code")
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    r, _ = h.request("POST", "/signin/code", {"code": next_code(totp)})
    assert r.status == 403, "no CSRF token"
    before = h.cookie
    r, _ = h.request("POST", "/signin/code", {"csrf": csrf, "code": next_code(totp)})
    assert r.status == 303 and r.getheader("Location") == "/"
    assert h.cookie != before, "a fresh session token after the second factor"
    stale = Http(srv)
    stale.cookie = before
    r, _ = stale.request("GET", "/")
    assert r.status == 303 and r.getheader("Location") == "/signin", "the old token is dead"
    r, page = h.request("GET", "/")
    assert r.status == 200 and "App passwords" in page
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)
    r, _ = h.request("POST", "/app-passwords", {"label": "x"})
    assert r.status == 403, "no CSRF token"
    r, _ = h.request("POST", "/app-passwords", {"csrf": "0" * 64, "label": "x"})
    assert r.status == 403, "a wrong CSRF token"
    r, _ = h.request("POST", "/app-passwords", {"csrf": csrf, "label": "<b>x</b>"})
    assert r.status == 303 and r.getheader("Location") == "/reveal"
    r, page = h.request("GET", "/reveal")
    assert r.status == 200 and "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    EXTRA_SECRETS.add(re.search(r'id="app-password">([^<]+)<', page).group(1))
    r, _ = h.request("GET", "/reveal")
    assert r.status == 303, "shown once: a reload shows nothing and creates nothing"


def test_guesses_on_the_page_are_throttled_like_pop3(server):
    srv = server(users={"alice": PW})
    for i in range(4):
        r, _ = Http(srv).request("POST", "/signin", {"user": "alice", "password": f"guess {i}"})
        assert r.status == 401
    listed = srv.cli("lockout", "list", check=True).stdout.decode()
    assert "alice  from 127.0.0.1  4 failures" in listed and "throttled until" in listed, listed
    # Throttled: the right password is refused unchecked, on the page and over POP3.
    r, body = Http(srv).request("POST", "/signin", {"user": "alice", "password": PW})
    assert r.status == 401 and "not right" in body
    refused = poplib_login(srv, "alice", PW)
    assert isinstance(refused, bytes) and refused.startswith(FAILURE), refused
    srv.cli("lockout", "clear", "--user", "alice", check=True)
    r, _ = Http(srv).request("POST", "/signin", {"user": "alice", "password": PW})
    assert r.status == 303 and r.getheader("Location") == "/"


def csrf_of(page):
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)


def signed_in(srv, user, password):
    """An Http client signed in with the password alone (an account without an
    authenticator), and its overview page."""
    h = Http(srv)
    r, _ = h.request("POST", "/signin", {"user": user, "password": password})
    assert r.status == 303 and r.getheader("Location") == "/", r.status
    r, page = h.request("GET", "/")
    assert r.status == 200
    return h, page


def test_sessions_follow_the_account(server):
    srv = server(users={"bob": PW, "carol": PW})
    # A: a password-only session (say, someone who learnt the password) starts to
    # set up an authenticator of its own and waits.
    a, page = signed_in(srv, "bob", PW)
    r, _ = a.request("POST", "/mfa/setup", {"csrf": csrf_of(page)})
    assert r.status == 303
    r, setup_a = a.request("GET", "/mfa/setup")
    secret_a = re.search(r'data-secret="([A-Z2-7]+)"', setup_a).group(1)
    # B: bob sets up his phone.
    b, page = signed_in(srv, "bob", PW)
    r, _ = b.request("POST", "/mfa/setup", {"csrf": csrf_of(page)})
    r, setup_b = b.request("GET", "/mfa/setup")
    totp_b = pyotp.TOTP(re.search(r'data-secret="([A-Z2-7]+)"', setup_b).group(1))
    r, _ = b.request("POST", "/mfa/confirm", {"csrf": csrf_of(setup_b), "code": totp_b.now()})
    assert r.status == 303 and r.getheader("Location") == "/reveal"
    r, codes_page = b.request("GET", "/reveal")
    EXTRA_SECRETS.update(re.findall(r"<code>([^<]+)</code>", codes_page))
    # A can no longer replace bob's authenticator, nor do anything else.
    r, _ = a.request("POST", "/mfa/confirm",
                     {"csrf": csrf_of(setup_a), "code": pyotp.TOTP(secret_a).now()})
    assert r.status == 303 and r.getheader("Location") == "/signin", "A's session ended"
    assert "authenticator enrolled" in srv.cli("mfa", "status", "bob", check=True).stdout.decode()
    r, _ = b.request("GET", "/")
    assert r.status == 200, "B goes on"
    # A password alone now only reaches the code step, which can do nothing.
    c = Http(srv)
    r, _ = c.request("POST", "/signin", {"user": "bob", "password": PW})
    assert r.getheader("Location") == "/signin/code"
    r, code_page = c.request("GET", "/signin/code")
    for path in ("/app-passwords", "/recovery-codes", "/mfa/setup", "/password"):
        r, _ = c.request("POST", path, {"csrf": csrf_of(code_page), "label": "x"})
        assert r.status == 303 and r.getheader("Location") == "/signin/code", path
    # The administrator disables bob: his session ends at once.
    srv.cli("user", "disable", "bob", check=True)
    r, _ = b.request("GET", "/")
    assert r.status == 303 and r.getheader("Location") == "/signin"

    # A password change ends carol's other sessions, not the one that made it.
    one, page = signed_in(srv, "carol", PW)
    two, _ = signed_in(srv, "carol", PW)
    new = "quiet harbour maple thunder"
    EXTRA_SECRETS.add(new)
    r, _ = one.request("POST", "/password", {"csrf": csrf_of(page), "current": PW,
                                             "new": new, "confirm": new})
    assert r.status == 303
    r, page = one.request("GET", "/")
    assert r.status == 200 and "Password changed" in page
    r, _ = two.request("GET", "/")
    assert r.status == 303 and r.getheader("Location") == "/signin"
    # A password-only session cannot create app passwords.
    r, _ = one.request("POST", "/app-passwords", {"csrf": csrf_of(page), "label": "x"})
    assert r.status == 403


def test_a_guess_whose_client_hangs_up_is_counted(server):
    """A sign-in whose client closes the connection while its password is being hashed
    is still counted: the defence reserves the attempt before the check, and an attempt
    that is never settled stays a failure (issue 18)."""
    srv = server(users={"alice": PW},
                 auth={"argon2_memory_kib": 65536, "argon2_iterations": 12})  # ~1 s a hash
    body = "user=alice&password=wrong+guess"
    for i in range(4):
        raw = socket.create_connection(("127.0.0.1", srv.web_port), timeout=10)
        s = tls_context(srv.cert).wrap_socket(raw, server_hostname="localhost")
        s.sendall((f"POST /signin HTTP/1.1\r\nHost: localhost\r\n"
                   f"Content-Type: application/x-www-form-urlencoded\r\n"
                   f"Content-Length: {len(body) + 1}\r\n\r\n{body}{i}").encode())
        time.sleep(0.1)
        s.close()
    deadline = time.monotonic() + 30
    while True:
        listed = srv.cli("lockout", "list", check=True).stdout.decode()
        if "alice  from 127.0.0.1  4 failures" in listed:
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    # And each was decided to its end: audited with its reason, as any other guess.
    while True:
        guesses = [r for r in read_audit(srv.data_dir / "audit.log")
                   if r.get("event") == "web_auth" and r.get("user") == "alice"]
        if len(guesses) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [(r["result"], r.get("reason")) for r in guesses] == [("failure", "bad_password")] * 4, guesses
