//! Canonical user names: one form for the CLI's `user add`, POP3 `USER` (RFC 1939 §7)
//! and the authorization identity of SASL mechanisms (RFC 4616 §2).
//!
//! The steps are SASLprep (RFC 4013), optional Unicode lowercasing, then the default
//! domain. The result is also a path component of the user's Maildir, which is why
//! path separators and a leading dot are refused.

use stringprep::saslprep;

use crate::BadInput;

/// Longest canonical user name, in bytes.
pub const MAX_USERNAME_BYTES: usize = 255;

/// Longest raw input worth preparing: NFKC can grow a string, but a name that is this
/// long before preparation is refused without spending work on it.
const MAX_RAW_USERNAME_BYTES: usize = 4 * MAX_USERNAME_BYTES;

/// How raw user names become canonical ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernamePolicy {
    /// Lowercase names (Unicode `to_lowercase`), so `Alice` and `alice` are one user.
    pub lowercase: bool,
    /// Domain appended as `@domain` to names without an `@`. Always lowercased; an
    /// empty string counts as none.
    pub default_domain: Option<String>,
}

impl UsernamePolicy {
    /// The canonical form of `raw`, or why it is refused.
    ///
    /// Canonicalising a canonical name gives it back unchanged, so callers may
    /// canonicalise names that already are.
    pub fn canonical(&self, raw: &str) -> Result<String, BadInput> {
        if raw.is_empty() {
            return Err(BadInput::Empty);
        }
        if raw.len() > MAX_RAW_USERNAME_BYTES {
            return Err(BadInput::TooLong);
        }
        let name = self.transform(raw)?;
        check(&name)?;
        // Lowercasing after NFKC is not always stable under a second NFKC; insisting on
        // a fixed point keeps "one canonical form" true for every accepted name.
        if self.transform(&name)? != name {
            return Err(BadInput::Unstable);
        }
        Ok(name)
    }

    fn transform(&self, raw: &str) -> Result<String, BadInput> {
        let prepared = saslprep(raw).map_err(|_| BadInput::Prohibited)?;
        let mut name = if self.lowercase {
            let lowered = prepared.to_lowercase();
            if lowered == prepared {
                lowered
            } else {
                // Lowercasing can leave text outside NFKC; prepare it once more.
                saslprep(&lowered)
                    .map_err(|_| BadInput::Prohibited)?
                    .into_owned()
            }
        } else {
            prepared.into_owned()
        };
        if let Some(domain) = self.default_domain.as_deref().filter(|d| !d.is_empty())
            && !name.contains('@')
        {
            name.push('@');
            name.push_str(&domain.to_lowercase());
        }
        Ok(name)
    }
}

/// The rules on the final form, beyond what SASLprep already refuses.
fn check(name: &str) -> Result<(), BadInput> {
    if name.is_empty() {
        return Err(BadInput::Empty);
    }
    if name.len() > MAX_USERNAME_BYTES {
        return Err(BadInput::TooLong);
    }
    if name.starts_with('.') {
        return Err(BadInput::LeadingDot);
    }
    // NUL is a control character; spelled out because it is the one C code truncates at.
    if name
        .chars()
        .any(|c| c == '\0' || c.is_control() || c.is_whitespace() || c == '/' || c == '\\')
    {
        return Err(BadInput::ForbiddenCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> UsernamePolicy {
        UsernamePolicy::default()
    }

    fn lower() -> UsernamePolicy {
        UsernamePolicy {
            lowercase: true,
            default_domain: None,
        }
    }

    fn domain() -> UsernamePolicy {
        UsernamePolicy {
            lowercase: true,
            default_domain: Some("Example.ORG".into()),
        }
    }

    #[test]
    fn ascii_names_pass_through() {
        assert_eq!(plain().canonical("alice").unwrap(), "alice");
        assert_eq!(plain().canonical("Alice").unwrap(), "Alice");
        assert_eq!(
            plain().canonical("a.b-c_d+e@x.org").unwrap(),
            "a.b-c_d+e@x.org"
        );
    }

    #[test]
    fn lowercase_folds_case_including_non_ascii() {
        assert_eq!(lower().canonical("Alice").unwrap(), "alice");
        assert_eq!(lower().canonical("JÖRG").unwrap(), "jörg");
        assert_eq!(lower().canonical("ΣΟΦΊΑ").unwrap(), "σοφία");
    }

    #[test]
    fn saslprep_normalises() {
        // NFKC: the "fi" ligature and full-width letters become ASCII.
        assert_eq!(plain().canonical("\u{FB01}le").unwrap(), "file");
        assert_eq!(plain().canonical("\u{FF41}\u{FF42}").unwrap(), "ab");
        // Composed and decomposed ö are one name.
        assert_eq!(
            plain().canonical("jo\u{0308}rg").unwrap(),
            plain().canonical("j\u{00F6}rg").unwrap()
        );
        // Soft hyphen maps to nothing (RFC 3454 B.1).
        assert_eq!(plain().canonical("al\u{00AD}ice").unwrap(), "alice");
    }

    #[test]
    fn default_domain_is_appended_once_and_lowercased() {
        assert_eq!(domain().canonical("Alice").unwrap(), "alice@example.org");
        assert_eq!(
            domain().canonical("alice@Other.net").unwrap(),
            "alice@other.net"
        );
        let keep_case = UsernamePolicy {
            lowercase: false,
            default_domain: Some("Example.ORG".into()),
        };
        assert_eq!(keep_case.canonical("Alice").unwrap(), "Alice@example.org");
        let empty = UsernamePolicy {
            lowercase: false,
            default_domain: Some(String::new()),
        };
        assert_eq!(empty.canonical("alice").unwrap(), "alice");
    }

    #[test]
    fn refusals() {
        let p = plain();
        assert_eq!(p.canonical(""), Err(BadInput::Empty));
        assert_eq!(p.canonical("\u{00AD}"), Err(BadInput::Empty));
        assert_eq!(p.canonical(&"a".repeat(255)).map(|s| s.len()), Ok(255));
        assert_eq!(p.canonical(&"a".repeat(256)), Err(BadInput::TooLong));
        assert_eq!(p.canonical(&"a".repeat(5000)), Err(BadInput::TooLong));
        assert_eq!(p.canonical(".alice"), Err(BadInput::LeadingDot));
        assert_eq!(p.canonical(".."), Err(BadInput::LeadingDot));
        for bad in ["a/b", "a\\b", "a b", "alice ", " alice"] {
            assert_eq!(
                p.canonical(bad),
                Err(BadInput::ForbiddenCharacter),
                "{bad:?}"
            );
        }
        // Non-ASCII spaces map to U+0020, which is then refused.
        assert_eq!(p.canonical("a\u{00A0}b"), Err(BadInput::ForbiddenCharacter));
        // Controls, NUL included, are prohibited by SASLprep itself.
        for bad in ["a\0b", "a\nb", "a\tb", "a\u{7f}", "a\u{85}b", "\u{E000}"] {
            assert_eq!(p.canonical(bad), Err(BadInput::Prohibited), "{bad:?}");
        }
    }

    #[test]
    fn domain_counts_towards_the_length() {
        let name = "a".repeat(250);
        assert_eq!(domain().canonical(&name), Err(BadInput::TooLong));
    }

    #[test]
    fn canonical_is_idempotent_on_samples() {
        let samples = [
            "Alice",
            "JÖRG",
            "jo\u{0308}rg",
            "\u{FB01}le",
            "İstanbul",
            "ß",
            "ẞ",
            "ǅ",
            "ΣΑΣ",
            "x@Y.z",
            "\u{212A}elvin",
            "\u{2168}",
        ];
        for policy in [plain(), lower(), domain()] {
            for raw in samples {
                if let Ok(once) = policy.canonical(raw) {
                    assert_eq!(policy.canonical(&once).as_ref(), Ok(&once), "{raw:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Every accepted name is a fixed point and obeys the final-form rules.
        #[test]
        fn canonical_is_a_fixed_point(raw in "(?s).{0,40}", lowercase: bool, with_domain: bool) {
            let policy = UsernamePolicy {
                lowercase,
                default_domain: with_domain.then(|| "Example.org".to_owned()),
            };
            if let Ok(name) = policy.canonical(&raw) {
                prop_assert_eq!(policy.canonical(&name), Ok(name.clone()));
                prop_assert!(check(&name).is_ok());
            }
        }
    }
}
