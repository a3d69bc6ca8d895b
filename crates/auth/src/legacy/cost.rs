//! What checking a stored hash costs, in one notion for every scheme: the memory a check
//! holds and an estimate of its time on one core.
//!
//! Both come from the parameters in the stored string ([`Work`]), never from running
//! anything, so that import, which only parses, and sign-in, which checks, judge a hash
//! alike. Two sets of [`HashBounds`] apply:
//!
//! - [`HashBounds::CHECKABLE`], fixed: beyond it Poplar never checks a hash, so
//!   [`super::parse`] refuses it ([`super::ParseError::Uncheckable`]) at import and at
//!   sign-in alike;
//! - the import bounds an administrator configures (`auth.import_max_memory_kib`,
//!   `auth.import_max_time_ms`; [`HashBounds::IMPORT_DEFAULT`] by default): import refuses
//!   a hash above them unless told to allow it, and sign-in then checks it like any
//!   other, within the hashing pool's memory budget.
//!
//! ## The time model
//!
//! Time is estimated as units of work times a rate per unit. The rates were measured on
//! the verifying crates in an optimised build (a shared two-core AMD EPYC virtual
//! machine) and rounded up; where that CPU hashes in hardware (SHA-1 and SHA-256), the
//! rate is that of SHA-512, which it does in software, so that a CPU without SHA
//! instructions is not underestimated.
//!
//! | scheme | unit of work | rate | measured |
//! |---|---|---|---|
//! | Argon2 (i, id) | KiB × (passes + 1): the fill counts as a pass | 0.7 µs | 256 MiB, t=3: 684 ms |
//! | yescrypt | KiB of 128·N·r·p·(t + 1) | 2.5 µs | N=4096, r=32 (`j9T`): 27 ms |
//! | SHA-crypt (`$5$`, `$6$`) | round | 0.3 µs | `$6$`, 656,000 rounds: 178 ms |
//! | bcrypt | 2^cost key-schedule rounds | 60 µs | cost 12: 234 ms |
//! | PBKDF2-HMAC-SHA1 | iteration | 0.2 µs | 1,000,000: 136 ms (SHA-1 in hardware) |
//! | salted and plain digests | — | 0 | under a microsecond |
//!
//! An estimate is an order of magnitude, not a promise: a faster machine checks sooner,
//! a loaded one later. What matters is that the same string always gets the same
//! estimate, so the bounds mean the same at import and at sign-in.

use super::LegacyScheme;

/// Nanoseconds per KiB and pass of Argon2 (passes + 1, the fill counting as one).
const ARGON2_NS_PER_KIB_PASS: u128 = 700;
/// Nanoseconds per KiB of yescrypt's 128·N·r·p·(t + 1) bytes.
const YESCRYPT_NS_PER_KIB: u128 = 2_500;
/// Nanoseconds per SHA-crypt round.
const SHA_CRYPT_NS_PER_ROUND: u128 = 300;
/// Nanoseconds per bcrypt key-schedule round (2^cost of them).
const BCRYPT_NS_PER_ROUND: u128 = 60_000;
/// Nanoseconds per PBKDF2-HMAC-SHA1 iteration.
const PBKDF2_NS_PER_ITERATION: u128 = 200;
/// Memory of one bcrypt state (Blowfish's S-boxes and subkeys), in KiB, rounded up.
const BCRYPT_MEMORY_KIB: u64 = 5;

/// The parameters that set what a stored hash costs to check, as its string gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Argon2: memory in KiB (`m`), passes (`t`) and lanes (`p`).
    Argon2 {
        /// `m`, KiB.
        memory_kib: u32,
        /// `t`.
        passes: u32,
        /// `p` (run one after another here: it does not change the total).
        lanes: u32,
    },
    /// yescrypt's `N`, `r`, `p` and time parameter `t`.
    Yescrypt {
        /// Blocks of 128·r bytes.
        n: u64,
        /// Block size factor.
        r: u32,
        /// Parallelism.
        p: u32,
        /// Extra passes.
        t: u32,
    },
    /// SHA-crypt's `rounds=` (5,000 when absent).
    ShaCrypt {
        /// Rounds.
        rounds: u32,
    },
    /// bcrypt's cost: 2^cost key-schedule rounds.
    Bcrypt {
        /// The two-digit cost.
        cost: u32,
    },
    /// PBKDF2's iteration count.
    Pbkdf2 {
        /// Iterations.
        iterations: u32,
    },
    /// One digest of the password and salt: no work factor.
    Digest,
}

impl Work {
    /// Memory a check holds, in KiB.
    pub fn memory_kib(&self) -> u64 {
        match *self {
            Work::Argon2 { memory_kib, .. } => u64::from(memory_kib),
            Work::Yescrypt { n, r, p, .. } => {
                let bytes = (128 * u128::from(n))
                    .saturating_mul(u128::from(r))
                    .saturating_mul(u128::from(p));
                saturate(bytes.div_ceil(1024))
            }
            Work::Bcrypt { .. } => BCRYPT_MEMORY_KIB,
            Work::ShaCrypt { .. } | Work::Pbkdf2 { .. } | Work::Digest => 0,
        }
    }

    /// Estimated time of one check on one core, in microseconds (see the module's
    /// table of rates).
    pub fn estimate_us(&self) -> u64 {
        let ns = match *self {
            Work::Argon2 {
                memory_kib, passes, ..
            } => u128::from(memory_kib) * (u128::from(passes) + 1) * ARGON2_NS_PER_KIB_PASS,
            Work::Yescrypt { t, .. } => {
                u128::from(self.memory_kib()) * (u128::from(t) + 1) * YESCRYPT_NS_PER_KIB
            }
            Work::ShaCrypt { rounds } => u128::from(rounds) * SHA_CRYPT_NS_PER_ROUND,
            // Costs above 31 do not parse; an absurd one saturates anyway.
            Work::Bcrypt { cost } => 1u128.checked_shl(cost).map_or(u128::MAX, |rounds| {
                rounds.saturating_mul(BCRYPT_NS_PER_ROUND)
            }),
            Work::Pbkdf2 { iterations } => u128::from(iterations) * PBKDF2_NS_PER_ITERATION,
            Work::Digest => 0,
        };
        saturate(ns / 1000)
    }
}

impl std::fmt::Display for Work {
    /// The parameters, as an administrator finds them in the string (`m=65536,t=3,p=1`,
    /// `rounds=656000`, `cost 12`): never anything of the salt or hash.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Work::Argon2 {
                memory_kib,
                passes,
                lanes,
            } => write!(f, "m={memory_kib},t={passes},p={lanes}"),
            Work::Yescrypt { n, r, p, t } => write!(f, "N={n},r={r},p={p},t={t}"),
            Work::ShaCrypt { rounds } => write!(f, "rounds={rounds}"),
            Work::Bcrypt { cost } => write!(f, "cost {cost}"),
            Work::Pbkdf2 { iterations } => write!(f, "{iterations} iterations"),
            Work::Digest => f.write_str("one digest"),
        }
    }
}

/// The most a stored hash may cost to check: memory held, and estimated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashBounds {
    /// Memory of one check, KiB.
    pub max_memory_kib: u64,
    /// Estimated time of one check, milliseconds.
    pub max_time_ms: u64,
}

impl HashBounds {
    /// The most Poplar ever checks, whatever is configured or allowed: 1 GiB (libsodium's
    /// "sensitive" Argon2 level) and an estimated 4 s (bcrypt cost 16, Argon2 at 1 GiB
    /// and 4 passes). Every limit import had before fits under it.
    pub const CHECKABLE: HashBounds = HashBounds {
        max_memory_kib: 1 << 20,
        max_time_ms: 4_000,
    };

    /// The default import bounds: 256 MiB, the memory up to which the argon2 verifier
    /// always checked a foreign hash, and an estimated 1000 ms, the default failure
    /// delay (a check longer than the delay answers a failed sign-in late, which tells
    /// such accounts apart). They admit the common defaults: Dovecot's PBKDF2 (5,000),
    /// SHA-crypt at glibc's 5,000 and passlib's 656,000 rounds, bcrypt up to cost 14,
    /// yescrypt `j9T`, libsodium's interactive and moderate Argon2 levels (64 MiB
    /// × 2, 256 MiB × 3), RFC 9106's second recommended option (64 MiB × 3) and OWASP's
    /// (19 MiB × 2). RFC 9106's first option (2 GiB) is beyond even
    /// [`HashBounds::CHECKABLE`].
    pub const IMPORT_DEFAULT: HashBounds = HashBounds {
        max_memory_kib: 256 * 1024,
        max_time_ms: 1_000,
    };

    /// Whether a hash of `scheme` with `work` is within these bounds; if not, which
    /// bound it passes (memory first).
    pub fn check(&self, scheme: LegacyScheme, work: &Work) -> Result<(), Exceeds> {
        self.check_as(scheme, work, false)
    }

    pub(super) fn check_as(
        &self,
        scheme: LegacyScheme,
        work: &Work,
        checkable: bool,
    ) -> Result<(), Exceeds> {
        let exceeds = |dimension| Exceeds {
            scheme,
            work: *work,
            dimension,
            bounds: *self,
            beyond_checkable: checkable,
        };
        if work.memory_kib() > self.max_memory_kib {
            return Err(exceeds(Dimension::Memory));
        }
        if work.estimate_us() > self.max_time_ms.saturating_mul(1000) {
            return Err(exceeds(Dimension::Time));
        }
        Ok(())
    }
}

impl Default for HashBounds {
    fn default() -> Self {
        HashBounds::IMPORT_DEFAULT
    }
}

/// Which bound a hash passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Its memory.
    Memory,
    /// Its estimated time.
    Time,
}

/// A hash above a bound: what it costs and which bound it passes. Its message names the
/// scheme, the parameters and the bound, never the salt or the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeds {
    /// The scheme.
    pub scheme: LegacyScheme,
    /// Its parameters.
    pub work: Work,
    /// The bound it passes.
    pub dimension: Dimension,
    /// The bounds it was held to.
    pub bounds: HashBounds,
    /// True: beyond [`HashBounds::CHECKABLE`], never checked; false: above configured
    /// import bounds.
    pub beyond_checkable: bool,
}

impl std::fmt::Display for Exceeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, work) = (self.scheme.name(), self.work);
        match (self.dimension, self.beyond_checkable) {
            (Dimension::Memory, false) => write!(
                f,
                "{scheme} hash ({work}) needs {} of memory to check, above auth.import_max_memory_kib = {} ({})",
                kib(self.work.memory_kib()),
                self.bounds.max_memory_kib,
                kib(self.bounds.max_memory_kib),
            ),
            (Dimension::Time, false) => write!(
                f,
                "{scheme} hash ({work}) takes about {} to check, above auth.import_max_time_ms = {}",
                micros(self.work.estimate_us()),
                self.bounds.max_time_ms,
            ),
            (Dimension::Memory, true) => write!(
                f,
                "{scheme} hash ({work}) needs {} of memory to check, beyond the {} Poplar ever checks",
                kib(self.work.memory_kib()),
                kib(self.bounds.max_memory_kib),
            ),
            (Dimension::Time, true) => write!(
                f,
                "{scheme} hash ({work}) takes about {} to check, beyond the {} Poplar ever spends on one",
                micros(self.work.estimate_us()),
                micros(self.bounds.max_time_ms.saturating_mul(1000)),
            ),
        }
    }
}

impl std::error::Error for Exceeds {}

fn saturate(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `512 MiB`, `1 GiB`, `1.5 GiB`, `16 MiB`, `5 KiB`.
fn kib(n: u64) -> String {
    let (value, unit) = if n >= 1 << 20 {
        (n as f64 / f64::from(1 << 20), "GiB")
    } else if n >= 1 << 10 {
        (n as f64 / f64::from(1 << 10), "MiB")
    } else {
        (n as f64, "KiB")
    };
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// `under 1 ms`, `240 ms`, `1.9 s`, `300 s`.
fn micros(us: u64) -> String {
    match us {
        0..1_000 => "under 1 ms".to_owned(),
        1_000..1_000_000 => format!("{} ms", (us + 500) / 1000),
        1_000_000..10_000_000 => format!("{:.1} s", us as f64 / 1e6),
        _ => format!("{} s", us.saturating_add(500_000) / 1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(work: Work) -> u64 {
        work.estimate_us() / 1000
    }

    #[test]
    fn estimates_follow_the_table() {
        let argon2 = |memory_kib, passes| Work::Argon2 {
            memory_kib,
            passes,
            lanes: 1,
        };
        // libsodium moderate: 256 MiB × (3 + 1) × 0.7 µs.
        assert_eq!(ms(argon2(262_144, 3)), 734);
        assert_eq!(ms(argon2(19_456, 2)), 40);
        assert_eq!(ms(Work::ShaCrypt { rounds: 656_000 }), 196);
        assert_eq!(ms(Work::Bcrypt { cost: 12 }), 245);
        assert_eq!(ms(Work::Bcrypt { cost: 16 }), 3_932);
        assert_eq!(ms(Work::Pbkdf2 { iterations: 5_000 }), 1);
        let j9t = Work::Yescrypt {
            n: 4096,
            r: 32,
            p: 1,
            t: 0,
        };
        assert_eq!(j9t.memory_kib(), 16 * 1024);
        assert_eq!(ms(j9t), 40);
        assert_eq!(Work::Digest.estimate_us(), 0);
        // Absurd parameters saturate, never overflow.
        let absurd = Work::Yescrypt {
            n: u64::MAX,
            r: u32::MAX,
            p: u32::MAX,
            t: u32::MAX,
        };
        assert_eq!(absurd.estimate_us(), u64::MAX);
        assert_eq!(Work::Bcrypt { cost: 200 }.estimate_us(), u64::MAX);
    }

    #[test]
    fn bounds_name_the_dimension_and_the_parameters() {
        let big = Work::Argon2 {
            memory_kib: 524_288,
            passes: 2,
            lanes: 1,
        };
        let e = HashBounds::IMPORT_DEFAULT
            .check(LegacyScheme::Argon2id, &big)
            .unwrap_err();
        assert_eq!(e.dimension, Dimension::Memory);
        assert_eq!(
            e.to_string(),
            "ARGON2ID hash (m=524288,t=2,p=1) needs 512 MiB of memory to check, above auth.import_max_memory_kib = 262144 (256 MiB)"
        );
        let slow = Work::Bcrypt { cost: 15 };
        let e = HashBounds::IMPORT_DEFAULT
            .check(LegacyScheme::Bcrypt, &slow)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "BLF-CRYPT hash (cost 15) takes about 2.0 s to check, above auth.import_max_time_ms = 1000"
        );
        assert!(
            HashBounds::CHECKABLE
                .check(LegacyScheme::Bcrypt, &slow)
                .is_ok()
        );
    }

    #[test]
    fn formats() {
        assert_eq!(kib(5), "5 KiB");
        assert_eq!(kib(19_456), "19 MiB");
        assert_eq!(kib(1 << 20), "1 GiB");
        assert_eq!(kib(3 << 19), "1.5 GiB");
        assert_eq!(micros(999), "under 1 ms");
        assert_eq!(micros(245_000), "245 ms");
        assert_eq!(micros(1_920), "2 ms");
        assert_eq!(micros(1_966_080), "2.0 s");
        assert_eq!(micros(299_999_999), "300 s");
    }
}
