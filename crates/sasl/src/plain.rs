//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, UTF-8.

use crate::secret::Secret;
use crate::{Failure, Step};

pub(crate) fn parse(message: &[u8]) -> Step {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail(Failure::Malformed);
    };
    if authcid.is_empty() || password.contains(&0) {
        return Step::Fail(Failure::Malformed);
    }
    let (Ok(authzid), Ok(authcid), Ok(_)) = (
        std::str::from_utf8(authzid),
        std::str::from_utf8(authcid),
        std::str::from_utf8(password),
    ) else {
        return Step::Fail(Failure::Malformed);
    };
    Step::VerifyPassword {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: authcid.to_owned(),
        password: Secret::new(password.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain() {
        let Step::VerifyPassword {
            authzid,
            authcid,
            password,
        } = parse(b"\0alice\0pass word")
        else {
            panic!()
        };
        assert_eq!((authzid, authcid.as_str()), (None, "alice"));
        assert_eq!(password.expose(), b"pass word");
        let Step::VerifyPassword { authzid, .. } = parse(b"admin\0alice\0pw") else {
            panic!()
        };
        assert_eq!(authzid.as_deref(), Some("admin"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"alice"[..],
            b"\0\0pw",
            b"\0a\0p\0w",
            b"\0a\0\xff",
            b"\0\xff\0pw",
        ] {
            assert!(
                matches!(parse(bad), Step::Fail(Failure::Malformed)),
                "{bad:?}"
            );
        }
    }
}
