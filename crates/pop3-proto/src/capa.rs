//! The CAPA response (RFC 2449 section 5), built from what the session may do now.
//!
//! An honest CAPA lists only what works in the current state: STLS only before TLS on
//! a listener that offers it, USER and SASL only where sign-in may be attempted now.

use crate::response;

/// Server-wide facts that shape CAPA.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// `IMPLEMENTATION` text.
    pub implementation: String,
    /// `EXPIRE` days (RFC 2449 section 6.7): how long a message is kept after a client
    /// retrieved it. `None` advertises `EXPIRE NEVER` and must mean that the server
    /// deletes nothing by itself. The session applies it at UPDATE (see
    /// [`crate::Action::Update`]); the store must expire what it marks.
    pub expire_days: Option<u32>,
    /// `LOGIN-DELAY` seconds; advertised only when a policy sets one.
    pub login_delay_secs: Option<u32>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            implementation: concat!("Poplar ", env!("CARGO_PKG_VERSION")).to_string(),
            expire_days: None,
            login_delay_secs: None,
        }
    }
}

/// What the session can do at the moment CAPA is asked.
#[derive(Debug, Clone, Copy)]
pub struct CapaState<'a> {
    /// STLS may be issued now.
    pub stls: bool,
    /// USER/PASS may be used now.
    pub sign_in: bool,
    /// SASL mechanisms usable now.
    pub mechanisms: &'a [sasl::Mechanism],
}

impl Capabilities {
    /// Appends the whole multi-line CAPA response.
    pub fn write(&self, state: CapaState, out: &mut Vec<u8>) {
        response::ok(out, "Capability list follows");
        for cap in ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"] {
            response::line(out, cap);
        }
        // RFC 6856 section 2: the USER argument says USER/PASS accept UTF-8.
        response::line(out, if state.sign_in { "UTF8 USER" } else { "UTF8" });
        match self.expire_days {
            Some(days) => response::line(out, &format!("EXPIRE {days}")),
            None => response::line(out, "EXPIRE NEVER"),
        }
        if let Some(secs) = self.login_delay_secs {
            response::line(out, &format!("LOGIN-DELAY {secs}"));
        }
        if state.stls {
            response::line(out, "STLS");
        }
        if state.sign_in {
            response::line(out, "USER");
        }
        if !state.mechanisms.is_empty() {
            let names: Vec<&str> = state.mechanisms.iter().map(|m| m.name()).collect();
            response::line(out, &format!("SASL {}", names.join(" ")));
        }
        response::line(out, &format!("IMPLEMENTATION {}", self.implementation));
        response::end(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capa(state: CapaState) -> String {
        let mut out = Vec::new();
        Capabilities::default().write(state, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn before_tls_offers_stls_but_no_sign_in() {
        let text = capa(CapaState {
            stls: true,
            sign_in: false,
            mechanisms: &[],
        });
        assert!(text.contains("\r\nSTLS\r\n"));
        assert!(!text.contains("\r\nUSER\r\n"));
        assert!(!text.contains("SASL"));
        assert!(text.contains("\r\nEXPIRE NEVER\r\n"));
        assert!(!text.contains("LOGIN-DELAY"));
        assert!(text.ends_with("\r\n.\r\n"));
    }

    #[test]
    fn after_tls_offers_sign_in_and_no_stls() {
        let text = capa(CapaState {
            stls: false,
            sign_in: true,
            mechanisms: &[sasl::Mechanism::ScramSha256, sasl::Mechanism::Plain],
        });
        assert!(!text.contains("STLS"));
        assert!(text.contains("\r\nUSER\r\n"));
        assert!(text.contains("\r\nSASL SCRAM-SHA-256 PLAIN\r\n"));
        assert!(text.contains("\r\nUTF8 USER\r\n"));
    }
}
