//! The security page's HTML: plain server-rendered pages, no script, one stylesheet.
//! Everything that comes from a user or the directory goes through [`esc`].

use std::fmt::Write as _;

use directory::{AppPassword, SignInEntry};

/// HTML-escapes text for element content and quoted attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds since the epoch as `2026-12-04 14:33 UTC`.
pub(crate) fn when(ms: i64) -> String {
    let t = crate::audit::rfc3339_ms(ms);
    // 2026-12-04T14:33:05.123Z
    match (t.get(..10), t.get(11..16)) {
        (Some(day), Some(hm)) => format!("{day} {hm} UTC"),
        _ => t,
    }
}

/// What every page shares.
pub(crate) struct Frame<'a> {
    /// The server's host name, in the header.
    pub host: &'a str,
    /// The signed-in user and the session's CSRF token (for the sign-out button).
    pub user: Option<(&'a str, &'a str)>,
}

/// A whole page.
pub(crate) fn page(frame: &Frame<'_>, title: &str, body: &str) -> String {
    let signout = match frame.user {
        Some((user, csrf)) => format!(
            r#"<form method="post" action="/signout" class="signout"><span class="who">{}</span>{}<button type="submit" class="link">Sign out</button></form>"#,
            esc(user),
            csrf_field(csrf)
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · Poplar</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<header><div class="bar"><span class="brand">Poplar</span><span class="host">{host}</span>{signout}</div></header>
<main>
{body}
</main>
<footer>Mail sign-in security for {host}</footer>
</body>
</html>
"#,
        title = esc(title),
        host = esc(frame.host),
    )
}

/// The hidden CSRF field every form of a signed-in session carries.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// A notice box: `kind` is `ok`, `error` or `info`.
pub(crate) fn notice(kind: &str, text: &str) -> String {
    format!(
        r#"<p class="notice {kind}" role="status">{}</p>"#,
        esc(text)
    )
}

/// The sign-in form.
pub(crate) fn signin(user: &str, error: Option<&str>) -> String {
    format!(
        r#"<section class="card narrow">
<h1>Sign in</h1>
<p class="muted">Manage two-step verification, app passwords and your password.</p>
{error}
<form method="post" action="/signin">
<label for="user">User name</label>
<input id="user" name="user" type="text" autocomplete="username" autocapitalize="none" spellcheck="false" required value="{user}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Continue</button>
</form>
</section>"#,
        error = error.map(|e| notice("error", e)).unwrap_or_default(),
        user = esc(user),
    )
}

/// The second-factor form.
pub(crate) fn code(csrf: &str, error: Option<&str>) -> String {
    format!(
        r#"<section class="card narrow">
<h1>Two-step verification</h1>
<p class="muted">Enter the 6-digit code from your authenticator app, or one of your recovery codes.</p>
{error}
<form method="post" action="/signin/code">
{csrf}
<label for="code">Code</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" autocapitalize="none" spellcheck="false" required autofocus>
<button type="submit">Verify</button>
</form>
<form method="post" action="/signout">{csrf}<button type="submit" class="link">Cancel</button></form>
</section>"#,
        error = error.map(|e| notice("error", e)).unwrap_or_default(),
        csrf = csrf_field(csrf),
    )
}

/// The enrolment page: the QR code, the secret to type by hand, the confirmation form.
pub(crate) fn enrol(
    csrf: &str,
    qr_svg: &str,
    secret: &str,
    uri: &str,
    error: Option<&str>,
) -> String {
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!(
        r#"<section class="card">
<h1>Set up an authenticator app</h1>
{error}
<ol class="steps">
<li>Open an authenticator app (Google Authenticator, Microsoft Authenticator, Aegis, 1Password, ...) and add an account by scanning this code:</li>
</ol>
<div class="qr" role="img" aria-label="QR code of the authenticator secret">{qr_svg}</div>
<p class="muted">Cannot scan? Enter this key instead (time-based, 6 digits, every 30 seconds):</p>
<p class="secret" id="secret" data-secret="{secret}">{grouped}</p>
<details><summary>Setup link (for apps that take one)</summary><p class="secret"><code id="otpauth">{uri}</code></p></details>
<ol class="steps" start="2">
<li>Type the 6-digit code the app shows now.</li>
</ol>
<form method="post" action="/mfa/confirm">
{csrf}
<label for="code">Code</label>
<input id="code" name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required autofocus>
<button type="submit">Turn on two-step verification</button>
</form>
<p><a href="/">Cancel</a></p>
</section>"#,
        error = error.map(|e| notice("error", e)).unwrap_or_default(),
        secret = esc(secret),
        uri = esc(uri),
        grouped = esc(&grouped.join(" ")),
        csrf = csrf_field(csrf),
    )
}

/// The recovery codes, shown once.
pub(crate) fn recovery_codes(codes: &[String], intro: &str) -> String {
    let mut list = String::new();
    for c in codes {
        let _ = write!(list, "<li><code>{}</code></li>", esc(c));
    }
    format!(
        r#"<section class="card">
<h1>Your recovery codes</h1>
{intro}
<p>Each code signs you in once when your phone is not at hand. Keep them somewhere safe, such as a password manager or on paper. <strong>They are shown only now.</strong></p>
<ul class="codes" id="recovery-codes">{list}</ul>
<p><a class="button" href="/">Done</a></p>
</section>"#,
        intro = notice("ok", intro),
    )
}

/// A new app password, shown once.
pub(crate) fn new_app_password(
    label: &str,
    password: &str,
    user: &str,
    host: &str,
    protocol: &str,
) -> String {
    format!(
        r#"<section class="card">
<h1>App password for “{label}”</h1>
<p>Enter this password in the mail app instead of your account password. <strong>It is shown only now</strong>; create a new one if you lose it.</p>
<p class="secret big" id="app-password">{password}</p>
<dl class="settings">
<dt>User name</dt><dd>{user}</dd>
<dt>Server</dt><dd>{host}</dd>
<dt>Connection</dt><dd>{protocol}</dd>
</dl>
<p><a class="button" href="/">Done</a></p>
</section>"#,
        label = esc(label),
        password = esc(password),
        user = esc(user),
        host = esc(host),
        protocol = esc(protocol),
    )
}

/// What the overview shows.
pub(crate) struct Overview<'a> {
    pub csrf: &'a str,
    /// Signed in with two factors (or has just enrolled).
    pub two_factor_session: bool,
    pub status: &'a auth::MfaStatus,
    pub app_passwords: &'a [AppPassword],
    pub history: &'a [SignInEntry],
    pub flash: Option<&'a str>,
    pub now: i64,
}

/// The signed-in overview.
pub(crate) fn overview(o: &Overview<'_>) -> String {
    let csrf = csrf_field(o.csrf);
    let mut out = String::new();
    if let Some(f) = o.flash {
        out.push_str(&notice("ok", f));
    }
    out.push_str(&two_step_card(o, &csrf));
    out.push_str(&app_passwords_card(o, &csrf));
    out.push_str(&password_card(&csrf));
    out.push_str(&history_card(o.history));
    out
}

fn two_step_card(o: &Overview<'_>, csrf: &str) -> String {
    let s = o.status;
    let state = if s.enrolled {
        r#"<p class="state on">On: sign-ins to this page ask for a code from your authenticator app.</p>"#
    } else {
        r#"<p class="state off">Off: your password alone opens this page.</p>"#
    };
    let pop3 = if s.password_alone_opens_pop3 {
        "Mail apps sign in with your account password."
    } else {
        "Mail apps need an app password: your account password alone does not open your mailbox."
    };
    let policy = match s.policy {
        auth::MfaPolicy::Required if !s.enrolled => notice(
            "error",
            "Your organisation requires two-step verification: set it up now.",
        ),
        _ => String::new(),
    };
    let mut actions = String::new();
    if !s.enrolled || o.two_factor_session {
        let label = if s.enrolled {
            "Replace authenticator app"
        } else {
            "Set up authenticator app"
        };
        let _ = write!(
            actions,
            r#"<form method="post" action="/mfa/setup">{csrf}<button type="submit">{label}</button></form>"#
        );
    }
    if s.enrolled && o.two_factor_session {
        let _ = write!(
            actions,
            r#"<form method="post" action="/recovery-codes">{csrf}<button type="submit" class="secondary">New recovery codes</button></form>"#
        );
    }
    let codes = if s.enrolled {
        format!(
            r#"<p class="muted">Recovery codes left: <strong id="codes-left">{}</strong> of 10.</p>"#,
            s.recovery_codes_left
        )
    } else {
        String::new()
    };
    format!(
        r#"<section class="card" id="two-step">
<h2>Two-step verification</h2>
{policy}{state}
<p class="muted">{pop3}</p>
{codes}
<div class="actions">{actions}</div>
</section>
"#
    )
}

fn app_passwords_card(o: &Overview<'_>, csrf: &str) -> String {
    let mut rows = String::new();
    for a in o.app_passwords {
        let expires = match a.expires_at {
            Some(t) if t <= o.now => format!("expired {}", when(t)),
            Some(t) => format!("until {}", when(t)),
            None => "never expires".into(),
        };
        let last = match (a.last_used_at, &a.last_used_from) {
            (Some(t), Some(from)) => format!("last used {} from {}", when(t), from),
            (Some(t), None) => format!("last used {}", when(t)),
            _ => "never used".into(),
        };
        let mut facts = vec![format!("created {}", when(a.created_at)), expires, last];
        if let Some(n) = &a.networks {
            facts.push(format!("only from {}", n.replace(',', ", ")));
        }
        if a.read_only {
            facts.push("read-only: mail stays on the server".into());
        }
        let facts: Vec<String> = facts.iter().map(|f| esc(f)).collect();
        let _ = write!(
            rows,
            r#"<li class="app" data-id="{id}"><div><strong class="label">{label}</strong><span class="muted">{facts}</span></div><form method="post" action="/app-passwords/revoke">{csrf}<input type="hidden" name="id" value="{id}"><button type="submit" class="danger" aria-label="Revoke {label}">Revoke</button></form></li>"#,
            id = a.id,
            label = esc(&a.label),
            facts = facts.join(" · "),
        );
    }
    let list = if rows.is_empty() {
        r#"<p class="muted">No app passwords.</p>"#.to_owned()
    } else {
        format!(r#"<ul class="apps" id="app-passwords">{rows}</ul>"#)
    };
    let create = if o.two_factor_session {
        format!(
            r#"<details class="create"{open}><summary>Create an app password</summary>
<form method="post" action="/app-passwords">
{csrf}
<label for="label">Name (what it is for)</label>
<input id="label" name="label" type="text" maxlength="64" placeholder="Phone, scanner, fetchmail ..." required>
<label for="expires_days">Expires after (days, empty for never)</label>
<input id="expires_days" name="expires_days" type="number" min="1" max="3650" inputmode="numeric">
<label for="networks">Only from these networks (optional, e.g. 192.0.2.0/24, 2001:db8::/48)</label>
<input id="networks" name="networks" type="text" autocapitalize="none" spellcheck="false">
<label class="check"><input type="checkbox" name="read_only" value="1"> Read-only: the app cannot delete mail</label>
<button type="submit">Create</button>
</form></details>"#,
            open = if o.app_passwords.is_empty() {
                " open"
            } else {
                ""
            },
        )
    } else {
        notice(
            "info",
            "Set up two-step verification (and sign in with it) to create app passwords.",
        )
    };
    format!(
        r#"<section class="card" id="apps">
<h2>App passwords</h2>
<p class="muted">Each mail app or device gets a password of its own; revoking one stops that app at once.</p>
{list}
{create}
</section>
"#
    )
}

fn password_card(csrf: &str) -> String {
    format!(
        r#"<section class="card" id="password">
<details><summary>Change your password</summary>
<form method="post" action="/password">
{csrf}
<label for="current">Current password</label>
<input id="current" name="current" type="password" autocomplete="current-password" required>
<label for="new">New password</label>
<input id="new" name="new" type="password" autocomplete="new-password" required>
<label for="confirm">New password again</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password" required>
<p class="muted">A few unrelated words make a strong passphrase that is easy to type. No digits or symbols needed; your name and the server's name are not allowed.</p>
<button type="submit">Change password</button>
</form></details>
</section>
"#
    )
}

fn history_card(history: &[SignInEntry]) -> String {
    let mut rows = String::new();
    for h in history {
        let _ = write!(
            rows,
            r#"<tr class="{result}"><td data-h="When">{when}</td><td data-h="From">{addr}</td><td data-h="How">{mech}</td><td data-h="Result">{result}</td></tr>"#,
            when = esc(&when(h.at)),
            addr = esc(&h.address),
            mech = esc(&h.mechanism),
            result = esc(&h.result),
        );
    }
    let table = if rows.is_empty() {
        r#"<p class="muted">No sign-ins yet.</p>"#.to_owned()
    } else {
        format!(
            r#"<table class="history" id="history"><thead><tr><th>When</th><th>From</th><th>How</th><th>Result</th></tr></thead><tbody>{rows}</tbody></table>"#
        )
    };
    format!(
        r#"<section class="card" id="recent">
<h2>Recent sign-ins</h2>
<p class="muted">If you do not recognise a sign-in, change your password and revoke your app passwords.</p>
{table}
</section>
"#
    )
}

/// A page with one message and a way back.
pub(crate) fn message(title: &str, text: &str) -> String {
    format!(
        r#"<section class="card narrow"><h1>{}</h1><p>{}</p><p><a href="/">Back</a></p></section>"#,
        esc(title),
        esc(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_break_out() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_label_cannot_inject_markup() {
        let apps = [AppPassword {
            id: 7,
            user: "alice".into(),
            label: "<script>x</script>".into(),
            hash: String::new(),
            created_at: 0,
            expires_at: None,
            networks: None,
            read_only: false,
            last_used_at: None,
            last_used_from: None,
        }];
        let status = auth::MfaStatus {
            policy: auth::MfaPolicy::Optional,
            own_policy: false,
            enrolled: true,
            pending: false,
            recovery_codes_left: 10,
            app_passwords: 1,
            password_alone_opens_pop3: false,
        };
        let html = overview(&Overview {
            csrf: "c",
            two_factor_session: true,
            status: &status,
            app_passwords: &apps,
            history: &[],
            flash: None,
            now: 0,
        });
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
    }

    #[test]
    fn times_read_as_utc_minutes() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
    }
}
