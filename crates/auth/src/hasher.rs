//! Password hashing with argon2id (RFC 9106), stored as PHC strings.
//!
//! Hashing is deliberately slow and memory-hard; callers run it on the fixed hashing
//! threads (see [`crate::Authenticator`]). Verification reuses each thread's argon2
//! memory and compares outputs in constant time.
//!
//! A stored hash is checked if it costs no more than the configured cost or than
//! [`HashBounds::CHECKABLE`], the same bound [`crate::legacy::parse`] applies to imported
//! hashes: whatever import accepted, sign-in checks.

use std::cell::RefCell;

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher as _, Version};

use crate::legacy::{HashBounds, LegacyScheme, Parsed};

thread_local! {
    /// Each hashing thread's argon2 memory, allocated once and reused for every
    /// verification: the pool's memory stays at `threads × memory cost` under any load
    /// (per-hash allocations were measured to pile up in allocator arenas).
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Cost parameters for new argon2id hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory per hash in KiB (default 19456, the OWASP floor).
    pub memory_kib: u32,
    /// Passes over memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Argon2Params {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
        }
    }
}

/// Argon2 parameters the algorithm refuses (for example memory below 8 KiB per lane).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid argon2 parameters: {0}")]
pub struct InvalidParams(String);

impl InvalidParams {
    pub(crate) fn new(why: &str) -> Self {
        InvalidParams(why.to_owned())
    }
}

/// Hashes and verifies prepared passwords (see [`crate::prepare_password`]).
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// A hash with the configured cost, verified against when there is no real one, so
    /// an unknown user costs as much as a known one.
    dummy_hash: String,
    /// The most an imported hash may cost unless the administrator allows more.
    import_bounds: HashBounds,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", self.argon2.params())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher for `params`. Computes the dummy hash, so it takes one hash's time.
    pub fn new(params: Argon2Params) -> Result<Self, InvalidParams> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| InvalidParams(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = PasswordHasher {
            argon2,
            dummy_hash: String::new(),
            import_bounds: HashBounds::IMPORT_DEFAULT,
        };
        // Its password is never a prepared password (those are non-empty), and the result
        // of verifying against it is ignored anyway.
        hasher.dummy_hash = hasher.hash("");
        Ok(hasher)
    }

    /// A PHC string (`$argon2id$v=19$m=...`) for `prepared`, with a fresh random salt.
    ///
    /// # Panics
    ///
    /// Only if the operating system's random generator fails.
    pub fn hash(&self, prepared: &str) -> String {
        self.argon2
            .hash_password(prepared.as_bytes())
            .expect("argon2 hashing failed (OS random generator?)")
            .to_string()
    }

    /// Whether `prepared` matches the PHC string `phc`.
    ///
    /// False for anything that is not an argon2 PHC string this hasher accepts (other
    /// schemes, corrupt strings, absurd costs); never panics.
    pub fn verify(&self, phc: &str, prepared: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        if !self.within_limits(phc, &parsed) {
            return false;
        }
        let (Ok(params), Ok(algorithm)) = (
            Params::try_from(&parsed),
            Algorithm::try_from(parsed.algorithm.as_str()),
        ) else {
            return false;
        };
        let version = match parsed.version.map(Version::try_from) {
            None => Version::V0x13,
            Some(Ok(v)) => v,
            Some(Err(_)) => return false,
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let expected = expected.as_bytes();
        let Ok(params) = Params::new(
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            Some(expected.len()),
        ) else {
            return false;
        };
        let argon2 = Argon2::new(algorithm, version, params);
        let mut out = zeroize::Zeroizing::new(vec![0u8; expected.len()]);
        let own_blocks = self.argon2.params().block_count();
        let computed = BLOCKS.with_borrow_mut(|blocks| {
            let needed = argon2.params().block_count();
            if blocks.len() < needed {
                blocks.resize(needed, Block::default());
            }
            let ok = argon2
                .hash_password_into_with_memory(
                    prepared.as_bytes(),
                    salt.as_ref(),
                    &mut out,
                    &mut blocks[..needed],
                )
                .is_ok();
            // Keep at most the configured cost's memory between hashes.
            if blocks.len() > own_blocks {
                blocks.truncate(own_blocks);
                blocks.shrink_to_fit();
            }
            ok
        });
        computed && bool::from(subtle::ConstantTimeEq::ct_eq(&out[..], expected))
    }

    /// Verifies `prepared` against the dummy hash, spending the time a real user would.
    pub fn verify_dummy(&self, prepared: &str) {
        let _ = self.verify(&self.dummy_hash, prepared);
    }

    /// Checks a password against whatever the directory stores: an argon2id hash of
    /// ours, or an imported legacy hash (checked against `as_sent`, the password as the
    /// client sent it, since the old system hashed those bytes). Anything else spends a
    /// dummy verification and fails. Returns whether it matched and whether the stored
    /// hash should then be replaced (always, for a legacy one).
    pub fn verify_stored(&self, stored: &str, prepared: &str, as_sent: &str) -> (bool, bool) {
        if crate::legacy::is_legacy(stored) {
            let matched = match crate::legacy::parse(stored) {
                Ok(Parsed::Hash(hash)) => hash.verify(as_sent),
                _ => {
                    self.verify_dummy(prepared);
                    false
                }
            };
            return (matched, matched);
        }
        let matched = self.verify(stored, prepared);
        (matched, matched && self.needs_rehash(stored))
    }

    /// The memory, in KiB, that checking a password against `stored` holds (see
    /// [`HashBounds`]): the hash's own for an imported or foreign one, the configured
    /// cost otherwise (ours, or the dummy verification anything unusable gets).
    pub fn memory_to_check(&self, stored: &str) -> u64 {
        match crate::legacy::parse(stored) {
            Ok(Parsed::Hash(hash)) => hash.work().memory_kib(),
            _ => self.memory_kib(),
        }
    }

    /// The configured memory cost, KiB: what hashing a new password or the dummy
    /// verification holds.
    pub fn memory_kib(&self) -> u64 {
        u64::from(self.argon2.params().m_cost())
    }

    /// The bounds import holds a hash to unless the administrator allows more
    /// ([`HashBounds::IMPORT_DEFAULT`] until set).
    pub fn import_bounds(&self) -> HashBounds {
        self.import_bounds
    }

    /// This hasher, with `bounds` for import.
    pub fn with_import_bounds(mut self, bounds: HashBounds) -> Self {
        self.import_bounds = bounds;
        self
    }

    /// Whether `phc` should be replaced by a fresh hash: it is not argon2id v19 with the
    /// configured parameters (or does not parse at all).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        let own = self.argon2.params();
        parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
            || params.m_cost() != own.m_cost()
            || params.t_cost() != own.t_cost()
            || params.p_cost() != own.p_cost()
            || params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
                != own.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)
    }

    /// No dearer than the configured cost, or an Argon2 hash import would accept with
    /// every cost allowed (within [`HashBounds::CHECKABLE`]): a corrupt or hostile row
    /// must not make one sign-in allocate gigabytes, and an imported hash must not be
    /// refused here after import took it.
    fn within_limits(&self, phc: &str, parsed: &PasswordHash) -> bool {
        let Ok(params) = Params::try_from(parsed) else {
            return false;
        };
        let own = self.argon2.params();
        let like_own = params.m_cost() <= own.m_cost()
            && params.t_cost() <= own.t_cost()
            && params.p_cost() <= own.p_cost();
        like_own
            || matches!(crate::legacy::parse(phc), Ok(Parsed::Hash(hash))
                if matches!(hash.scheme(), LegacyScheme::Argon2id | LegacyScheme::Argon2i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Argon2Params {
        Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn defaults_are_the_owasp_floor() {
        assert_eq!(
            Argon2Params::default(),
            Argon2Params {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1
            }
        );
    }

    #[test]
    fn hash_then_verify() {
        let h = PasswordHasher::new(small()).unwrap();
        let phc = h.hash("correct horse");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert!(h.verify(&phc, "correct horse"));
        assert!(!h.verify(&phc, "correct horsE"));
        assert!(!h.verify(&phc, ""));
        // Random salt: the same password hashes differently each time.
        assert_ne!(phc, h.hash("correct horse"));
    }

    #[test]
    fn verify_uses_the_parameters_of_the_stored_hash() {
        let other = PasswordHasher::new(Argon2Params {
            memory_kib: 2048,
            iterations: 2,
            parallelism: 2,
        })
        .unwrap();
        let phc = other.hash("pw");
        let h = PasswordHasher::new(small()).unwrap();
        assert!(h.verify(&phc, "pw"));
        assert!(h.needs_rehash(&phc));
        assert!(!h.needs_rehash(&h.hash("pw")));
    }

    #[test]
    fn garbage_never_verifies_nor_panics() {
        let h = PasswordHasher::new(small()).unwrap();
        let good = h.hash("pw");
        for phc in [
            "",
            "pw",
            "$",
            "$argon2id$",
            "$argon2id$v=19$m=1024,t=1,p=1$",
            "$argon2id$v=99$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$argon2id$v=19$m=1024,t=4294967295,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
            "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA",
            "$6$rounds=5000$salt$hash",
            "{SSHA}abcdef",
            &good[..good.len() - 3],
        ] {
            assert!(!h.verify(phc, "pw"), "{phc}");
            assert!(h.needs_rehash(phc), "{phc}");
        }
    }

    #[test]
    fn foreign_costs_are_bounded_like_imports() {
        let h = PasswordHasher::new(small()).unwrap();
        let limits = |phc: &str| h.within_limits(phc, &PasswordHash::new(phc).unwrap());
        let tail = "$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        // What import takes with every cost allowed is checked (nothing computed here)...
        for params in [
            "m=524288,t=2,p=1",
            "m=1048576,t=4,p=1",
            "m=262144,t=16,p=16",
        ] {
            assert!(
                limits(&format!("$argon2id$v=19${params}{tail}")),
                "{params}"
            );
            assert!(limits(&format!("$argon2i$v=19${params}{tail}")), "{params}");
        }
        // ...and what import never takes is not.
        for params in ["m=2097152,t=1,p=1", "m=1048576,t=5,p=1", "m=65536,t=3,p=17"] {
            assert!(
                !limits(&format!("$argon2id$v=19${params}{tail}")),
                "{params}"
            );
        }
        // Our own cost always is, even beyond those bounds.
        let own = PasswordHasher::new(Argon2Params {
            memory_kib: 1024,
            iterations: 40,
            parallelism: 1,
        })
        .unwrap();
        let phc = format!("$argon2id$v=19$m=1024,t=40,p=1{tail}");
        assert!(own.within_limits(&phc, &PasswordHash::new(&phc).unwrap()));
    }

    #[test]
    fn memory_to_check_is_the_stored_hash_s() {
        let h = PasswordHasher::new(small()).unwrap();
        let tail = "$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert_eq!(
            h.memory_to_check(&format!("$argon2id$v=19$m=524288,t=2,p=1{tail}")),
            524_288
        );
        assert_eq!(
            h.memory_to_check(&format!("{{ARGON2I}}$argon2i$v=19$m=32768,t=4,p=1{tail}")),
            32_768
        );
        assert_eq!(
            h.memory_to_check("{SSHA}GO30j0VLMXp0Xnzu/MYXUz8I5j9NxJuu"),
            0
        );
        // Ours, garbage and cleartext cost the configured memory (a dummy check).
        assert_eq!(h.memory_to_check(&h.hash("pw")), 1024);
        assert_eq!(h.memory_to_check("garbage"), 1024);
        assert_eq!(h.memory_to_check("{PLAIN}pw"), 1024);
    }

    #[test]
    fn verify_stored_checks_ours_and_legacy_ones() {
        let h = PasswordHasher::new(small()).unwrap();
        let ours = h.hash("pw");
        assert_eq!(h.verify_stored(&ours, "pw", "pw"), (true, false));
        assert_eq!(h.verify_stored(&ours, "px", "px"), (false, false));
        // RFC 6070's PBKDF2 vector, in Dovecot's layout: matched, to be replaced.
        let pbkdf2 = "{PBKDF2}$1$salt$4096$4b007901b765489abead49d926f721d065a429c1";
        assert_eq!(
            h.verify_stored(pbkdf2, "password", "password"),
            (true, true)
        );
        assert_eq!(
            h.verify_stored(pbkdf2, "Password", "Password"),
            (false, false)
        );
        assert_eq!(h.verify_stored("{PLAIN}pw", "pw", "pw"), (false, false));
    }

    #[test]
    fn invalid_params_are_refused() {
        let zero_memory = Argon2Params {
            memory_kib: 0,
            ..small()
        };
        assert!(PasswordHasher::new(zero_memory).is_err());
        let zero_lanes = Argon2Params {
            parallelism: 0,
            ..small()
        };
        assert!(PasswordHasher::new(zero_lanes).is_err());
        let zero_time = Argon2Params {
            iterations: 0,
            ..small()
        };
        assert!(PasswordHasher::new(zero_time).is_err());
    }

    #[test]
    fn debug_shows_no_hash() {
        let h = PasswordHasher::new(small()).unwrap();
        assert!(!format!("{h:?}").contains('$'));
    }
}
