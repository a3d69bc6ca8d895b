//! Legacy hash import against hashes made by the tools that make them in the wild
//! (`fixtures/make-legacy-hashes.sh` documents the tools and regenerates the fixtures).
//! What is refused, and why, is in `legacy_refused.rs`.

use auth::legacy::{
    LegacyScheme, ParseError, Parsed, StoredHash, is_legacy, parse, parse_passwd_line,
    passwd_line_user,
};

const HASHES: &str = include_str!("fixtures/legacy-hashes.txt");
const PASSWD: &str = include_str!("fixtures/legacy-passwd");

/// The scheme a fixture's tool makes, or `None` for cleartext (`doveadm pw -s PLAIN`).
/// Panics on a tool it does not know, so new fixtures get an expectation.
fn expected_scheme(tool: &str) -> Option<LegacyScheme> {
    use LegacyScheme::*;
    let words: Vec<&str> = tool.split(' ').collect();
    let after = |flag: &str| {
        let i = words.iter().position(|w| *w == flag).expect(tool);
        words[i + 1]
    };
    Some(match words[0] {
        "openssl" if words.contains(&"-6") => Sha512Crypt,
        "openssl" => Sha256Crypt,
        "mkpasswd" => match after("-m") {
            "sha-512" => Sha512Crypt,
            "sha-256" => Sha256Crypt,
            "bcrypt" | "bcrypt-a" => Bcrypt,
            "yescrypt" => Yescrypt,
            other => panic!("no expectation for mkpasswd -m {other}"),
        },
        "doveadm" => match after("-s").split('.').next().unwrap() {
            "SHA512-CRYPT" => Sha512Crypt,
            "SHA256-CRYPT" => Sha256Crypt,
            // Dovecot's CRYPT makes bcrypt where libxcrypt has it.
            "BLF-CRYPT" | "CRYPT" => Bcrypt,
            "SSHA" => Ssha,
            "SSHA256" => Ssha256,
            "SSHA512" => Ssha512,
            "SHA" => Sha1,
            "SHA256" => Sha256,
            "SHA512" => Sha512,
            "PBKDF2" => Pbkdf2Sha1,
            "ARGON2ID" => Argon2id,
            "ARGON2I" => Argon2i,
            "PLAIN" => return None,
            other => panic!("no expectation for doveadm pw -s {other}"),
        },
        "python" => Bcrypt,
        "passlib" => match words[1] {
            "bcrypt" => Bcrypt,
            "ldap_salted_sha1" => Ssha,
            "ldap_salted_sha256" => Ssha256,
            "ldap_salted_sha512" => Ssha512,
            "ldap_sha1" => Sha1,
            "sha512_crypt" => Sha512Crypt,
            "sha256_crypt" => Sha256Crypt,
            other => panic!("no expectation for passlib {other}"),
        },
        "argon2-cffi" if words[1] == "argon2id" => Argon2id,
        "argon2-cffi" => Argon2i,
        other => panic!("no expectation for tool {other}"),
    })
}

fn expect_hash(parsed: Result<Parsed, ParseError>, what: &str) -> StoredHash {
    match parsed {
        Ok(Parsed::Hash(hash)) => hash,
        other => panic!("{what}: expected a hash, got {other:?}"),
    }
}

#[test]
fn every_fixture_verifies_with_its_password_only() {
    let mut checked = 0;
    for line in HASHES.lines().filter(|l| !l.starts_with('#')) {
        let [tool, password, stored] = line.splitn(3, '\t').collect::<Vec<_>>()[..] else {
            panic!("bad fixture line {line:?}");
        };
        let what = format!("{tool} ({password})");
        let bare_argon2id = stored.starts_with("$argon2id$");
        assert_eq!(is_legacy(stored), !bare_argon2id, "{what}: is_legacy");
        let Some(scheme) = expected_scheme(tool) else {
            match parse(stored) {
                Ok(Parsed::Cleartext(text)) => assert_eq!(text.as_str(), password, "{what}"),
                other => panic!("{what}: expected cleartext, got {other:?}"),
            }
            continue;
        };
        let hash = expect_hash(parse(stored), &what);
        assert_eq!(hash.scheme(), scheme, "{what}");
        assert!(hash.verify(password), "{what}: right password refused");
        assert!(
            !hash.verify(&format!("{password}!")),
            "{what}: wrong password"
        );
        assert!(!hash.verify(""), "{what}: empty password");

        // The normalized form round-trips and says what it is.
        let again = expect_hash(parse(hash.as_stored()), &what);
        assert_eq!(again, hash, "{what}: round trip");
        assert!(!hash.as_stored().contains(['\n', '\r', ':']), "{what}");
        let argon2id = scheme == LegacyScheme::Argon2id;
        assert_eq!(is_legacy(hash.as_stored()), !argon2id, "{what}");
        checked += 1;
    }
    assert!(checked >= 70, "only {checked} fixtures");
}

/// The first fixture made by `tool`: its password and stored value.
fn fixture(tool: &str) -> (&'static str, &'static str) {
    HASHES
        .lines()
        .filter_map(|l| {
            let [t, password, stored] = l.splitn(3, '\t').collect::<Vec<_>>()[..] else {
                return None;
            };
            (t == tool).then_some((password, stored))
        })
        .next()
        .unwrap_or_else(|| panic!("no fixture from {tool}"))
}

#[test]
fn normalized_forms() {
    // The {SCHEME} prefix goes where the inner form describes itself.
    for (tool, prefix) in [
        ("doveadm pw -s SHA512-CRYPT", "{SHA512-CRYPT}"),
        ("doveadm pw -s BLF-CRYPT", "{BLF-CRYPT}"),
        ("doveadm pw -s CRYPT", "{CRYPT}"),
        ("doveadm pw -s ARGON2ID", "{ARGON2ID}"),
        ("doveadm pw -s ARGON2I", "{ARGON2I}"),
    ] {
        let (_, stored) = fixture(tool);
        let hash = expect_hash(parse(stored), tool);
        assert_eq!(
            Some(hash.as_stored()),
            stored.strip_prefix(prefix),
            "{tool}"
        );
    }
    // Already normal forms stay as they are.
    for tool in [
        "doveadm pw -s SSHA",
        "doveadm pw -s SHA512",
        "doveadm pw -s PBKDF2",
        "mkpasswd -m yescrypt",
    ] {
        let (_, stored) = fixture(tool);
        assert_eq!(
            expect_hash(parse(stored), tool).as_stored(),
            stored,
            "{tool}"
        );
    }
    // Hex, lower-case names, aliases and missing padding become Dovecot's defaults.
    let (password, stored) = fixture("doveadm pw -s SSHA.HEX");
    let h = expect_hash(parse(stored), stored);
    assert!(h.as_stored().starts_with("{SSHA}"), "{}", h.as_stored());
    assert!(h.verify(password));
    let (_, stored) = fixture("doveadm pw -s SHA");
    let alias = stored.replacen("{SHA}", "{sha1}", 1);
    assert_eq!(expect_hash(parse(&alias), &alias).as_stored(), stored);
    let (password, stored) = fixture("passlib ldap_salted_sha256");
    let unpadded = stored.trim_end_matches('=');
    assert_ne!(unpadded, stored);
    let h = expect_hash(parse(unpadded), unpadded);
    assert_eq!(h.as_stored(), stored);
    assert!(h.verify(password));
    let (_, stored) = fixture("doveadm pw -s PBKDF2");
    let upper = stored.to_uppercase().replacen("{PBKDF2}", "{pbkdf2}", 1);
    let upper = upper.replacen(&stored[11..27].to_uppercase(), &stored[11..27], 1);
    assert_eq!(expect_hash(parse(&upper), &upper).as_stored(), stored);
}

#[test]
fn weak_schemes_are_marked() {
    use LegacyScheme::*;
    for scheme in [Sha1, Sha256, Sha512] {
        assert!(scheme.is_weak() && scheme.is_unsalted(), "{scheme:?}");
    }
    for scheme in [Ssha, Ssha256, Ssha512] {
        assert!(scheme.is_weak() && !scheme.is_unsalted(), "{scheme:?}");
    }
    for scheme in [
        Sha512Crypt,
        Sha256Crypt,
        Bcrypt,
        Yescrypt,
        Argon2id,
        Argon2i,
        Pbkdf2Sha1,
    ] {
        assert!(!scheme.is_weak() && !scheme.is_unsalted(), "{scheme:?}");
    }
    assert_eq!(Sha512Crypt.name(), "SHA512-CRYPT");
    assert_eq!(Bcrypt.name(), "BLF-CRYPT");
    assert_eq!(Sha1.name(), "SHA");
}

/// What a passwd-file entry should give: a scheme and the password, cleartext, or an
/// error.
enum Expect {
    Hash(LegacyScheme, &'static str),
    Cleartext(&'static str),
    Error(ParseError),
}

#[test]
fn dovecot_passwd_file() {
    use Expect::*;
    const P1: &str = "correct horse battery staple";
    const P2: &str = "pässwörd ünïcødé";
    const P3: &str = "p@ss:w0rd$with{braces}";
    const P4: &str = "日本語のパスワード";
    let unsupported = |name: &str| Error(ParseError::Unsupported(name.to_owned()));
    let expected = [
        ("alice@example.org", Hash(LegacyScheme::Sha512Crypt, P1)),
        ("bob@example.org", Hash(LegacyScheme::Bcrypt, P2)),
        ("carol@example.org", Hash(LegacyScheme::Ssha256, P3)),
        ("dave@example.org", Hash(LegacyScheme::Pbkdf2Sha1, P4)),
        ("erin@example.org", Hash(LegacyScheme::Argon2id, P1)),
        ("frank@example.org", Cleartext(P2)),
        ("grace", Hash(LegacyScheme::Yescrypt, P3)),
        ("heidi", Hash(LegacyScheme::Sha256Crypt, P4)),
        ("ivan", Error(ParseError::NoPassword)),
        ("judy", unsupported("MD5-CRYPT")),
        ("mallory", unsupported("DES-CRYPT")),
        ("niaj", Error(ParseError::NoPassword)),
        ("oscar", Error(ParseError::NoPassword)),
        ("peggy", unsupported("CRAM-MD5")),
        ("trent", Hash(LegacyScheme::Ssha512, "x")),
    ];
    let mut seen = Vec::new();
    // Split on '\n' only, so that the CRLF line stays CRLF.
    for line in PASSWD.split('\n') {
        let result = parse_passwd_line(line);
        let Some(user) = passwd_line_user(line) else {
            assert!(matches!(result, Ok(None)), "{line:?}");
            continue;
        };
        let (_, expect) = expected
            .iter()
            .find(|(u, _)| *u == user)
            .unwrap_or_else(|| panic!("unexpected user {user}"));
        match (expect, result) {
            (Hash(scheme, password), Ok(Some((u, Parsed::Hash(hash))))) => {
                assert_eq!(u, user);
                assert_eq!(hash.scheme(), *scheme, "{user}");
                assert!(hash.verify(password), "{user}");
                assert!(!hash.verify("wrong"), "{user}");
            }
            (Cleartext(password), Ok(Some((u, Parsed::Cleartext(text))))) => {
                assert_eq!((u.as_str(), text.as_str()), (user, *password));
            }
            (Error(error), Err(e)) => assert_eq!(&e, error, "{user}"),
            (_, other) => panic!("{user}: unexpected {other:?}"),
        }
        seen.push(user.to_owned());
    }
    let all: Vec<&str> = expected.iter().map(|(u, _)| *u).collect();
    assert_eq!(seen, all);
}
