//! Legacy hash import: the forms that are refused (unsupported schemes, malformed
//! values, hostile costs, locked entries), and what never leaks or panics.

use auth::legacy::{ParseError, Parsed, is_legacy, parse, parse_passwd_line};
use proptest::prelude::*;

#[test]
fn refused_forms() {
    use ParseError::*;
    let sha512_hash = "a".repeat(86);
    let argon_tail = "$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let unsupported = |s: &str| Unsupported(s.to_owned());
    let cases: Vec<(String, ParseError)> = vec![
        // md5-crypt, DES crypt and other schemes Poplar does not verify.
        (
            "$1$2Ln.Di70$YweqXj2QnwfioLEGBXCQw1".into(),
            unsupported("MD5-CRYPT"),
        ),
        (
            "{CRYPT}$1$2Ln.Di70$YweqXj2QnwfioLEGBXCQw1".into(),
            unsupported("MD5-CRYPT"),
        ),
        (
            "{MD5-CRYPT}$1$2Ln.Di70$YweqXj2QnwfioLEGBXCQw1".into(),
            unsupported("MD5-CRYPT"),
        ),
        (
            "{MD5}$1$2Ln.Di70$YweqXj2QnwfioLEGBXCQw1".into(),
            unsupported("MD5"),
        ),
        ("abJnggxhB/yWI".into(), unsupported("DES-CRYPT")),
        ("{CRYPT}abJnggxhB/yWI".into(), unsupported("DES-CRYPT")),
        ("{DES-CRYPT}abJnggxhB/yWI".into(), unsupported("DES-CRYPT")),
        ("_J9..CCCCXBrJUJV154M".into(), unsupported("DES-CRYPT")),
        (
            "{PLAIN-MD5}5f4dcc3b5aa765d61d8327deb882cf99".into(),
            unsupported("PLAIN-MD5"),
        ),
        ("{smd5}kAFQmDzST7DWlj99KOF/cg==".into(), unsupported("SMD5")),
        (
            "{SCRAM-SHA-256}4096,c2FsdA==,a,b".into(),
            unsupported("SCRAM-SHA-256"),
        ),
        ("{PLAIN-TRUNC}8-password".into(), unsupported("PLAIN-TRUNC")),
        ("{SSHA.rot13}abcd".into(), unsupported("SSHA.ROT13")),
        (
            format!("{{SHA512-CRYPT.HEX}}$6$salt${sha512_hash}"),
            unsupported("SHA512-CRYPT.HEX"),
        ),
        ("{what is this?}x".into(), unsupported("unknown")),
        (
            "$2x$05$abcdefghijklmnopqrstuuNYK2D2WUcpBhVs0SGkD0wgfjuvzQ5K2".into(),
            unsupported("$2x$"),
        ),
        ("$7$CU..../....abc$def".into(), unsupported("$7$")),
        ("$gy$j9T$salt$hash".into(), unsupported("$gy$")),
        (
            format!("$argon2d$v=19$m=65536,t=3,p=1{argon_tail}"),
            unsupported("ARGON2D"),
        ),
        // Known schemes, broken values: garbage base64, truncation, wrong lengths.
        ("{SSHA}not base64!!".into(), Malformed("SSHA")),
        (
            "{SSHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=".into(),
            Malformed("SSHA"),
        ), // no salt
        ("{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2A==".into(), Malformed("SHA")), // 19 bytes
        ("{SHA256}ungQ0K1JM4yDZPKDkQ6C".into(), Malformed("SHA256")),
        (
            "{SHA.HEX}a9993e364706816aba3e25717850c26c9cd0d89".into(),
            Malformed("SHA"),
        ),
        ("$6$salt$tooshort".into(), Malformed("SHA512-CRYPT")),
        (format!("$6${sha512_hash}"), Malformed("SHA512-CRYPT")),
        (
            format!("$6$bad_salt${sha512_hash}"),
            Malformed("SHA512-CRYPT"),
        ),
        (
            format!("$6$12345678901234567${sha512_hash}"),
            Malformed("SHA512-CRYPT"),
        ),
        (
            format!("$6$rounds=999$salt${sha512_hash}"),
            Malformed("SHA512-CRYPT"),
        ),
        (
            format!("$6$rounds=ten$salt${sha512_hash}"),
            Malformed("SHA512-CRYPT"),
        ),
        ("$5$salt$".into(), Malformed("SHA256-CRYPT")),
        (
            "$2b$05$44rK9g7U9x2O5cMLCtKMkOxDtzehqkEB6bT3xpT6lnA8tXVREqIy".into(),
            Malformed("BLF-CRYPT"),
        ),
        (
            "{BLF-CRYPT}$2y$05$!!rK9g7U9x2O5cMLCtKMkOxDtzehqkEB6bT3xpT6lnA8tXVREqIyi".into(),
            Malformed("BLF-CRYPT"),
        ),
        (
            "$2b$03$44rK9g7U9x2O5cMLCtKMkOxDtzehqkEB6bT3xpT6lnA8tXVREqIyi".into(),
            Malformed("BLF-CRYPT"),
        ),
        (
            "$y$j9T$gncZ0rxv7rQg.p2j1xZgn0$short".into(),
            Malformed("YESCRYPT"),
        ),
        (
            format!("$y$!!$gncZ0rxv7rQg.p2j1xZgn0${}", "a".repeat(43)),
            Malformed("YESCRYPT"),
        ),
        ("{PBKDF2}garbage".into(), Malformed("PBKDF2")),
        ("{PBKDF2}$1$salt$5000$nothex".into(), Malformed("PBKDF2")),
        ("{ARGON2ID}garbage".into(), Malformed("ARGON2")),
        (
            "$argon2id$v=19$m=65536,t=3,p=1$c2FsdHNhbHRzYWx0".into(),
            Malformed("ARGON2ID"),
        ),
        (
            format!("$argon2id$v=99$m=65536,t=3,p=1{argon_tail}"),
            Malformed("ARGON2ID"),
        ),
        ("{SSHA".into(), Malformed("{SCHEME}")),
        ("hello".into(), Malformed("CRYPT")),
        ("$".into(), Malformed("CRYPT")),
        ("$6".into(), Malformed("CRYPT")),
        ("{CRYPT}$y".into(), Malformed("CRYPT")),
        (
            "$y$j9T$a$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
            Malformed("YESCRYPT"),
        ),
        ("{PLAIN.HEX}zz".into(), Malformed("PLAIN")),
        ("{PLAIN.B64}/w==".into(), Malformed("PLAIN")), // not UTF-8
        ("a".repeat(2000), Malformed("oversized")),
        // Nothing to verify.
        ("".into(), NoPassword),
        ("!".into(), NoPassword),
        ("*".into(), NoPassword),
        ("x".into(), NoPassword),
        (format!("!$6$salt${sha512_hash}"), NoPassword),
        ("{PLAIN}".into(), NoPassword),
    ];
    for (stored, error) in cases {
        assert_eq!(parse(&stored).unwrap_err(), error, "{stored}");
        assert!(!is_legacy(&stored), "{stored}");
    }
}

#[test]
fn hostile_costs_are_refused_before_any_hashing() {
    let sha512_hash = "a".repeat(86);
    let bcrypt_tail = "44rK9g7U9x2O5cMLCtKMkOxDtzehqkEB6bT3xpT6lnA8tXVREqIyi";
    let argon_tail = "$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let hex = "4b007901b765489abead49d926f721d065a429c1";
    // Beyond what Poplar ever checks (1 GiB, an estimated 4 s): refused with the
    // scheme, the parameters and the bound, whatever import allows.
    let cases = [
        (
            format!("$6$rounds=20000000$salt${sha512_hash}"),
            "SHA512-CRYPT hash (rounds=20000000) takes about 6.0 s to check, beyond the 4.0 s Poplar ever spends on one",
        ),
        (
            format!("$6$rounds=999999999$salt${sha512_hash}"),
            "SHA512-CRYPT hash (rounds=999999999) takes about 300 s to check, beyond the 4.0 s Poplar ever spends on one",
        ),
        (
            format!("$2b$17${bcrypt_tail}"),
            "BLF-CRYPT hash (cost 17) takes about 7.9 s to check, beyond the 4.0 s Poplar ever spends on one",
        ),
        (
            format!("$2y$31${bcrypt_tail}"),
            "BLF-CRYPT hash (cost 31) takes about 128849 s to check, beyond the 4.0 s Poplar ever spends on one",
        ),
        (
            format!("{{PBKDF2}}$1$salt$30000000${hex}"),
            "PBKDF2 hash (30000000 iterations) takes about 6.0 s to check, beyond the 4.0 s Poplar ever spends on one",
        ),
        (
            format!("$argon2id$v=19$m=2097152,t=1,p=4{argon_tail}"),
            "ARGON2ID hash (m=2097152,t=1,p=4) needs 2 GiB of memory to check, beyond the 1 GiB Poplar ever checks",
        ),
        (
            format!("$argon2id$v=19$m=1048576,t=5,p=1{argon_tail}"),
            "ARGON2ID hash (m=1048576,t=5,p=1) takes about 4.4 s to check, beyond the 4.0 s Poplar ever spends on one",
        ),
        (
            format!("{{ARGON2I}}$argon2i$v=19$m=2097152,t=3,p=1{argon_tail}"),
            "ARGON2I hash (m=2097152,t=3,p=1) needs 2 GiB of memory to check, beyond the 1 GiB Poplar ever checks",
        ),
        // yescrypt N = 2^21, r = 32: 8 GiB.
        (
            format!("$y$jIT$gncZ0rxv7rQg.p2j1xZgn0${}", "a".repeat(43)),
            "YESCRYPT hash (N=2097152,r=32,p=1,t=0) needs 8 GiB of memory to check, beyond the 1 GiB Poplar ever checks",
        ),
    ];
    for (stored, reason) in cases {
        let error = parse(&stored).unwrap_err();
        assert!(matches!(error, ParseError::Uncheckable(_)), "{stored}");
        assert_eq!(error.to_string(), reason, "{stored}");
        assert!(!is_legacy(&stored), "{stored}");
    }
    // Lanes beyond 16 do not parse at all; a zero count is malformed, not cheap.
    assert_eq!(
        parse(&format!(
            "{{ARGON2I}}$argon2i$v=19$m=65536,t=3,p=64{argon_tail}"
        ))
        .unwrap_err(),
        ParseError::Malformed("ARGON2I")
    );
    assert_eq!(
        parse(&format!("{{PBKDF2}}$1$salt$0${hex}")).unwrap_err(),
        ParseError::Malformed("PBKDF2")
    );
    // Up to the bound, and every limit import had before, parse.
    for stored in [
        format!("$6$rounds=5000000$salt${sha512_hash}"),
        format!("$6$rounds=13000000$salt${sha512_hash}"),
        format!("$2b$16${bcrypt_tail}"),
        format!("{{PBKDF2}}$1$salt$10000000${hex}"),
        format!("{{PBKDF2}}$1$salt$20000000${hex}"),
        format!("$argon2id$v=19$m=1048576,t=4,p=1{argon_tail}"),
        format!("$argon2id$v=19$m=262144,t=16,p=16{argon_tail}"),
    ] {
        assert!(matches!(parse(&stored), Ok(Parsed::Hash(_))), "{stored}");
    }
}

#[test]
fn nothing_secret_in_debug_or_errors() {
    let parsed = parse("{PLAIN}hunter2").unwrap();
    assert!(!format!("{parsed:?}").contains("hunter2"));
    let stored = "{SSHA}GO30j0VLMXp0Xnzu/MYXUz8I5j9NxJuu";
    let debug = format!("{:?}", parse(stored).unwrap());
    assert!(!debug.contains("GO30j0VLMXp0Xnzu"), "{debug}");
    assert!(debug.contains("Ssha"), "{debug}");
    let error = parse("{SSHA}GO30j0VLMXp0Xnzu").unwrap_err().to_string();
    assert_eq!(error, "malformed SSHA hash");
}

#[test]
fn is_legacy_spares_only_bare_argon2id() {
    let argon2id = "$argon2id$v=19$m=8192,t=1,p=4$i56e3ftvV5DuUBpo8PWB1w$LsQsfQO30S7gpNBizxeIhFsGaDPB0SqaIJxdQGWbAFk";
    assert!(!is_legacy(argon2id));
    assert!(is_legacy(&format!("{{ARGON2ID}}{argon2id}")));
    assert!(is_legacy("{PLAIN}secret"));
    assert!(is_legacy("{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0="));
    assert!(!is_legacy("$1$2Ln.Di70$YweqXj2QnwfioLEGBXCQw1"));
    assert!(!is_legacy("garbage"));
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(
        s in "(\\{[A-Za-z0-9.-]{0,14}\\}?)?(\\$(1|2a|2b|2x|2y|5|6|y|7|argon2id|argon2i)\\$?)?[ -~]{0,120}"
    ) {
        if let Ok(Parsed::Hash(hash)) = parse(&s) {
            let _ = hash.verify("password");
        }
        let _ = is_legacy(&s);
        let _ = parse_passwd_line(&s);
        let _ = parse_passwd_line(&format!("user:{s}:1000:1000::/home/user::"));
    }
}
