//! LOGIN (draft-murchison-sasl-login-00): the server asks `Username:`, then
//! `Password:`; the client answers each. Clients may send the user name as an initial
//! response (curl does). Not standardised, but what Outlook and many devices use.

use crate::secret::Secret;
use crate::{Failure, Step};

#[derive(Debug, Default)]
pub(crate) struct Login {
    user: Option<String>,
}

impl Login {
    pub(crate) fn start(&mut self) -> Step {
        Step::Challenge(b"Username:".to_vec())
    }

    pub(crate) fn respond(&mut self, data: &[u8]) -> Step {
        match self.user.take() {
            None => match std::str::from_utf8(data) {
                Ok(user) if !user.is_empty() && !user.contains('\0') => {
                    self.user = Some(user.to_owned());
                    Step::Challenge(b"Password:".to_vec())
                }
                _ => Step::Fail(Failure::Malformed),
            },
            Some(user) => {
                if std::str::from_utf8(data).is_err() || data.contains(&0) {
                    return Step::Fail(Failure::Malformed);
                }
                Step::VerifyPassword {
                    authzid: None,
                    authcid: user,
                    password: Secret::new(data.to_vec()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_user_then_password() {
        let mut l = Login::default();
        assert!(matches!(l.start(), Step::Challenge(c) if c == b"Username:"));
        assert!(matches!(l.respond(b"alice"), Step::Challenge(c) if c == b"Password:"));
        let Step::VerifyPassword {
            authcid, password, ..
        } = l.respond(b"two words")
        else {
            panic!()
        };
        assert_eq!(
            (authcid.as_str(), password.expose()),
            ("alice", &b"two words"[..])
        );
    }

    #[test]
    fn rejects_empty_user_and_bad_utf8() {
        assert!(matches!(Login::default().respond(b""), Step::Fail(_)));
        let mut l = Login::default();
        l.respond(b"bob");
        assert!(matches!(l.respond(b"\xff"), Step::Fail(_)));
    }
}
