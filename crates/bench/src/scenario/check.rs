//! `check`: a smoke test of what a client sees first: CAPA on the plain and TLS ports,
//! whether USER/PASS is accepted without TLS, STLS, CAPA after STLS, sign-in with both
//! USER/PASS and AUTH PLAIN over TLS.

use serde_json::{Map, Value, json};

use super::{Dialer, SMALL_CHUNK};
use crate::Env;
use crate::conn::{AuthKind, Mode, Pop3, Result};

async fn capa(c: &mut Pop3) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    c.multi("CAPA", |l| {
        lines.push(String::from_utf8_lossy(l).into_owned())
    })
    .await?;
    Ok(lines)
}

fn show(what: &str, r: &Result<Vec<String>>) -> Value {
    match r {
        Ok(l) => {
            println!("CAPA {what}: {}", l.join(" | "));
            json!(l)
        }
        Err(e) => {
            println!("CAPA {what}: error: {e}");
            json!(format!("error: {e}"))
        }
    }
}

pub async fn run(env: &Env) -> anyhow::Result<bool> {
    let base = Dialer::new(env);
    let user = base.users.name(0);
    let with = |mode: Mode, auth: AuthKind| Dialer {
        mode,
        auth,
        ..base.clone()
    };
    let mut res = Map::new();
    res.insert("bench".into(), json!("check"));
    let mut ok = true;

    // Plain port: capabilities, and whether a password may cross it in the clear.
    let plain = with(Mode::Plain, AuthKind::User);
    match plain.connect(SMALL_CHUNK).await {
        Ok(mut c) => {
            let caps = capa(&mut c).await;
            res.insert("plain_capa".into(), show("on the plain port", &caps));
            if let Ok(l) = &caps
                && !l.iter().any(|x| x.eq_ignore_ascii_case("STLS"))
            {
                println!("  STLS not offered on the plain port");
                ok = false;
            }
            let r = c
                .login(AuthKind::User, &user, base.passwords.of(&user))
                .await;
            let verdict = match &r {
                Ok(()) => "ACCEPTED".to_string(),
                Err(e) => format!("rejected: {e}"),
            };
            println!("  USER/PASS without TLS: {verdict}");
            res.insert("plaintext_user_pass".into(), json!(verdict));
            let _ = c.quit().await;
        }
        Err(e) => {
            println!("plain port {}: {e}", base.target.port);
            res.insert("plain_capa".into(), json!(format!("error: {e}")));
            ok = false;
        }
    }

    // Implicit TLS port.
    match with(Mode::Tls, AuthKind::User).connect(SMALL_CHUNK).await {
        Ok(mut c) => {
            let caps = capa(&mut c).await;
            ok &= caps.is_ok();
            res.insert("tls_capa".into(), show("on the TLS port", &caps));
            let _ = c.quit().await;
        }
        Err(e) => {
            println!("TLS port {}: {e}", base.target.tls_port);
            res.insert("tls_capa".into(), json!(format!("error: {e}")));
            ok = false;
        }
    }

    // STLS, then sign in with each method.
    for auth in [AuthKind::User, AuthKind::Plain] {
        let d = with(Mode::Starttls, auth);
        let name = match auth {
            AuthKind::User => "USER/PASS",
            AuthKind::Plain => "AUTH PLAIN",
        };
        let r = async {
            let mut c = d.connect(SMALL_CHUNK).await?;
            let caps = capa(&mut c).await;
            c.login(auth, &user, base.passwords.of(&user)).await?;
            let stat = c.cmd("STAT").await?;
            c.quit().await?;
            Ok::<_, crate::conn::Pop3Error>((caps, String::from_utf8_lossy(&stat).into_owned()))
        }
        .await;
        match r {
            Ok((caps, stat)) => {
                if auth == AuthKind::User {
                    res.insert("stls_capa".into(), show("after STLS", &caps));
                }
                println!("  STLS + {name} as {user}: OK ({stat})");
                res.insert(format!("stls_{}", auth_key(auth)), json!("ok"));
            }
            Err(e) => {
                println!("  STLS + {name} as {user}: {e}");
                res.insert(format!("stls_{}", auth_key(auth)), json!(e.to_string()));
                ok = false;
            }
        }
    }
    res.insert("pass".into(), json!(ok));
    env.report.emit(res)?;
    Ok(ok)
}

fn auth_key(a: AuthKind) -> &'static str {
    match a {
        AuthKind::User => "user_pass",
        AuthKind::Plain => "auth_plain",
    }
}
