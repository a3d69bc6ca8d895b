//! SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, server side (RFC 5802, RFC 7677), with the
//! `tls-exporter` channel binding (RFC 9266).
//!
//! Keys are stored in the RFC 5803 form `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`
//! beside the argon2id hash. They let the server check a proof without the password,
//! but they are a faster offline target than argon2id if the directory leaks: one
//! PBKDF2 run per guess instead of a memory-hard hash.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{ChannelBinding, Failure, Step};

type HmacSha256 = Hmac<Sha256>;

/// The channel-binding type Poplar supports (RFC 9266).
pub const TLS_EXPORTER: &str = "tls-exporter";

/// A user's SCRAM-SHA-256 keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// H(ClientKey).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramKeys")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl ScramKeys {
    /// Derives the keys from a password already prepared with SASLprep.
    pub fn derive(prepared_password: &str, salt: &[u8], iterations: u32) -> Self {
        let mut salted = zeroize::Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(
            prepared_password.as_bytes(),
            salt,
            iterations,
            salted.as_mut(),
        );
        let client_key = zeroize::Zeroizing::new(hmac(salted.as_ref(), b"Client Key"));
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: Sha256::digest(client_key.as_ref()).into(),
            server_key: hmac(salted.as_ref(), b"Server Key"),
        }
    }

    /// Derives keys with a fresh random 16-byte salt.
    pub fn generate(prepared_password: &str, iterations: u32) -> Result<Self, getrandom::Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)?;
        Ok(Self::derive(prepared_password, &salt, iterations))
    }

    /// Keys for a user who does not exist (or has none): derived from a server secret
    /// and the name, so the same name always gets the same salt and a probe cannot tell
    /// it from a real account. No proof can match them.
    pub fn fake(server_secret: &[u8], username: &str, iterations: u32) -> Self {
        let salt = hmac(server_secret, format!("scram-salt\0{username}").as_bytes());
        Self {
            iterations,
            salt: salt[..16].to_vec(),
            stored_key: hmac(
                server_secret,
                format!("scram-stored\0{username}").as_bytes(),
            ),
            server_key: hmac(
                server_secret,
                format!("scram-server\0{username}").as_bytes(),
            ),
        }
    }

    /// The RFC 5803 storage form.
    pub fn to_stored(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    /// Parses the RFC 5803 storage form.
    pub fn parse(stored: &str) -> Option<Self> {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        Some(Self {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored_key).ok()?.try_into().ok()?,
            server_key: STANDARD.decode(server_key).ok()?.try_into().ok()?,
        })
    }
}

#[derive(Debug)]
enum State {
    ClientFirst,
    AwaitKeys(First),
    ClientFinal(First, String, Box<ScramKeys>),
    Done,
}

#[derive(Debug)]
struct First {
    gs2_header: String,
    channel_binding: bool,
    bare: String,
    client_nonce: String,
}

/// The server side of one SCRAM exchange.
#[derive(Debug)]
pub(crate) struct ScramServer {
    plus: bool,
    binding: ChannelBinding,
    state: State,
}

impl ScramServer {
    pub(crate) fn new(plus: bool, binding: ChannelBinding) -> Self {
        Self {
            plus,
            binding,
            state: State::ClientFirst,
        }
    }

    pub(crate) fn respond(&mut self, data: &[u8]) -> Step {
        match std::mem::replace(&mut self.state, State::Done) {
            State::ClientFirst => match self.client_first(data) {
                Ok((first, authzid, username)) => {
                    self.state = State::AwaitKeys(first);
                    Step::LookupScram { authzid, username }
                }
                Err(f) => Step::Fail(f),
            },
            State::ClientFinal(first, server_first, keys) => {
                self.client_final(data, &first, &server_first, &keys)
            }
            State::AwaitKeys(_) | State::Done => Step::Fail(Failure::UnexpectedStep),
        }
    }

    pub(crate) fn keys(&mut self, keys: &ScramKeys) -> Step {
        let mut nonce = [0u8; 18];
        if getrandom::fill(&mut nonce).is_err() {
            self.state = State::Done;
            return Step::Fail(Failure::UnexpectedStep);
        }
        self.keys_with_nonce(keys, &STANDARD.encode(nonce))
    }

    fn keys_with_nonce(&mut self, keys: &ScramKeys, server_nonce: &str) -> Step {
        let State::AwaitKeys(first) = std::mem::replace(&mut self.state, State::Done) else {
            return Step::Fail(Failure::UnexpectedStep);
        };
        let server_first = format!(
            "r={}{server_nonce},s={},i={}",
            first.client_nonce,
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        let challenge = server_first.clone().into_bytes();
        self.state = State::ClientFinal(first, server_first, Box::new(keys.clone()));
        Step::Challenge(challenge)
    }

    /// `gs2-header client-first-message-bare` (RFC 5802 section 7).
    fn client_first(&self, data: &[u8]) -> Result<(First, Option<String>, String), Failure> {
        let text = std::str::from_utf8(data).map_err(|_| Failure::Malformed)?;
        let (flag, rest) = text.split_once(',').ok_or(Failure::Malformed)?;
        let (raw_authzid, bare) = rest.split_once(',').ok_or(Failure::Malformed)?;
        let channel_binding = match flag {
            "n" if !self.plus => false,
            // "y": the client could bind but thinks we cannot. If we offer -PLUS, a
            // man in the middle stripped it from CAPA (RFC 5802 section 6).
            "y" if !self.plus && !self.binding.plus_offered => false,
            f if self.plus && f.strip_prefix("p=") == Some(TLS_EXPORTER) => {
                if self.binding.tls_exporter.is_none() {
                    return Err(Failure::ChannelBinding);
                }
                true
            }
            "n" | "y" => return Err(Failure::ChannelBinding),
            f if f.starts_with("p=") => return Err(Failure::ChannelBinding),
            _ => return Err(Failure::Malformed),
        };
        let authzid = match raw_authzid {
            "" => None,
            a => Some(saslname(a.strip_prefix("a=").ok_or(Failure::Malformed)?)?),
        };
        let mut attrs = bare.split(',');
        let username = saslname(
            attrs
                .next()
                .and_then(|a| a.strip_prefix("n="))
                .ok_or(Failure::Malformed)?,
        )?;
        let client_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b)))
            .ok_or(Failure::Malformed)?;
        if username.is_empty() {
            return Err(Failure::Malformed);
        }
        let first = First {
            gs2_header: format!("{flag},{raw_authzid},"),
            channel_binding,
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        };
        Ok((first, authzid, username))
    }

    /// `c=...,r=...[,ext],p=...` (RFC 5802 section 7), then the proof check.
    fn client_final(
        &self,
        data: &[u8],
        first: &First,
        server_first: &str,
        keys: &ScramKeys,
    ) -> Step {
        let Ok(text) = std::str::from_utf8(data) else {
            return Step::Fail(Failure::Malformed);
        };
        let Some((without_proof, proof)) = text.rsplit_once(",p=") else {
            return Step::Fail(Failure::Malformed);
        };
        let mut attrs = without_proof.split(',');
        let (Some(c), Some(r)) = (
            attrs.next().and_then(|a| a.strip_prefix("c=")),
            attrs.next().and_then(|a| a.strip_prefix("r=")),
        ) else {
            return Step::Fail(Failure::Malformed);
        };
        let Ok(cbind_input) = STANDARD.decode(c) else {
            return Step::Fail(Failure::Malformed);
        };
        let mut expected = first.gs2_header.as_bytes().to_vec();
        if first.channel_binding {
            match &self.binding.tls_exporter {
                Some(data) => expected.extend_from_slice(data),
                None => return Step::Fail(Failure::ChannelBinding),
            }
        }
        if !bool::from(cbind_input.ct_eq(&expected)) {
            return Step::Fail(Failure::ChannelBinding);
        }
        let nonce_ok = server_first
            .strip_prefix("r=")
            .and_then(|s| s.split(',').next())
            .is_some_and(|n| n == r);
        let proof: Option<[u8; 32]> = STANDARD.decode(proof).ok().and_then(|p| p.try_into().ok());
        let (true, Some(proof)) = (nonce_ok, proof) else {
            return Step::Fail(Failure::Malformed);
        };
        let auth_message = format!("{},{server_first},{without_proof}", first.bare);
        let signature = hmac(&keys.stored_key, auth_message.as_bytes());
        let mut client_key = zeroize::Zeroizing::new([0u8; 32]);
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *k = p ^ s;
        }
        let computed: [u8; 32] = Sha256::digest(client_key.as_ref()).into();
        let proof_ok = bool::from(computed.ct_eq(&keys.stored_key));
        let server_signature = hmac(&keys.server_key, auth_message.as_bytes());
        Step::ScramProof {
            proof_ok,
            server_final: format!("v={}", STANDARD.encode(server_signature)).into_bytes(),
        }
    }
}

/// Decodes a saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn saslname(raw: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(Failure::Malformed),
        }
        rest = &rest[i + 3..];
    }
    if rest.contains(',') {
        return Err(Failure::Malformed);
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
