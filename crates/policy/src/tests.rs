//! The cases, judged as NIST SP 800-63B-4 §3.1.1.2 would.

use super::*;

const ALONE: Account<'static> = Account {
    user: "bartholomew@riverbank.example",
    hostname: "mail.riverbank.example",
    domain: "",
    mfa_required: false,
};
const WITH_MFA: Account<'static> = Account {
    mfa_required: true,
    ..ALONE
};

fn check(password: &str, account: &Account<'_>) -> Vec<Problem> {
    PasswordPolicy::default().check(password, account).unwrap()
}

fn too_short(length: usize, minimum: usize) -> Problem {
    Problem::TooShort { length, minimum }
}

#[test]
fn password_is_too_short_and_common() {
    let problems = check("password", &ALONE);
    assert_eq!(
        problems,
        [
            too_short(8, 15),
            Problem::TooEasy(Guessable::CommonPassword)
        ]
    );
    assert_eq!(
        describe(&problems),
        "too short: 8 characters, at least 15; too easy to guess: one of the most common passwords"
    );
    // Long enough for an account with two factors, still one of the most used.
    assert_eq!(
        check("password", &WITH_MFA),
        [Problem::TooEasy(Guessable::CommonPassword)]
    );
}

#[test]
fn summer2024_is_refused_alone_and_with_two_factors() {
    assert_eq!(
        check("Summer2024!", &ALONE),
        [
            too_short(11, 15),
            Problem::TooEasy(Guessable::SimilarToCommon)
        ]
    );
    assert_eq!(
        check("Summer2024!", &WITH_MFA),
        [Problem::TooEasy(Guessable::SimilarToCommon)]
    );
}

#[test]
fn the_users_own_name_is_refused() {
    assert_eq!(
        check("bartholomew", &ALONE),
        [too_short(11, 15), Problem::ContainsUserName]
    );
    assert_eq!(check("bartholomew", &WITH_MFA), [Problem::ContainsUserName]);
    // Whole, in another case, or as part of a longer password.
    let whole = check("Bartholomew@Riverbank.example", &ALONE);
    assert_eq!(
        whole,
        [Problem::ContainsUserName, Problem::ContainsServerName]
    );
    assert_eq!(
        check("my name is BARTHOLOMEW and I like boats", &ALONE),
        [Problem::ContainsUserName]
    );
    assert_eq!(
        describe(&check("bartholomew", &WITH_MFA)),
        "contains your user name"
    );
}

#[test]
fn the_servers_name_is_refused_but_role_labels_are_not() {
    assert_eq!(
        check("riverbank quilted lanterns", &ALONE),
        [Problem::ContainsServerName]
    );
    // "mail" is the host's role, not its name.
    assert_eq!(check("mailbox quilted lanterns", &ALONE), []);
}

#[test]
fn a_short_user_name_is_left_to_the_estimator() {
    let bob = Account {
        user: "bob",
        hostname: "localhost",
        domain: "",
        mfa_required: true,
    };
    // Three letters inside a strong password are no reason to refuse it...
    assert_eq!(check("bobsled tundra quartz", &bob), []);
    // ...but the name alone with a few digits is guessable.
    assert_eq!(
        check("bob12345", &bob),
        [Problem::TooEasy(Guessable::ContextWord)]
    );
}

#[test]
fn a_random_12_character_string_needs_a_second_factor() {
    assert_eq!(check("k7Qm2xVp9Lw4", &ALONE), [too_short(12, 15)]);
    assert_eq!(check("k7Qm2xVp9Lw4", &WITH_MFA), []);
    assert_eq!(
        describe(&check("k7Qm2xVp9Lw4", &ALONE)),
        "too short: 12 characters, at least 15"
    );
}

#[test]
fn a_20_character_passphrase_is_accepted() {
    let phrase = "purple tractor weave";
    assert_eq!(phrase.chars().count(), 20);
    assert_eq!(check(phrase, &ALONE), []);
    // No composition rules: no digits, capitals or symbols needed.
    assert_eq!(check("correct horse battery staple", &ALONE), []);
}

#[test]
fn a_passphrase_of_64_characters_and_more_is_accepted() {
    let phrase = "the quiet orchard keeps its winter apples under a blanket of straw";
    assert!(phrase.chars().count() >= 64);
    assert_eq!(check(phrase, &ALONE), []);
    // Up to the stored limit, and quickly (zxcvbn reads the first 100 characters).
    let long = format!("{phrase} ").repeat(60);
    assert!(long.len() <= auth::MAX_PASSWORD_BYTES);
    assert_eq!(check(&long, &ALONE), []);
    assert_eq!(
        check(&"a".repeat(4000), &ALONE),
        [Problem::TooEasy(Guessable::Repeats)]
    );
    let longest = &long.repeat(2)[..auth::MAX_PASSWORD_BYTES];
    assert_eq!(check(longest, &ALONE), []);
    assert!(matches!(
        check(&"x".repeat(auth::MAX_PASSWORD_BYTES + 1), &ALONE)[..],
        [Problem::Unusable(auth::BadInput::TooLong)]
    ));
}

#[test]
fn length_is_counted_in_code_points_after_saslprep() {
    // 15 x "e" + combining acute accent: 30 code points typed, 15 after NFKC.
    let decomposed = "e\u{301}".repeat(15);
    assert!(
        !check(&decomposed, &ALONE)
            .iter()
            .any(|p| matches!(p, Problem::TooShort { .. })),
    );
    assert_eq!(check(&"é".repeat(14), &ALONE)[0], too_short(14, 15));
    // Non-ASCII letters count one each: 15 characters, 30 bytes.
    let greek = "ωραίοςκαιήσυχος";
    assert_eq!((greek.chars().count(), greek.len()), (15, 30));
    assert!(
        !check(greek, &ALONE)
            .iter()
            .any(|p| matches!(p, Problem::TooShort { .. }))
    );
    // A no-break space is mapped to a space (RFC 4013 §2.1) and counts once.
    assert_eq!(check("k7Qm2xVp9Lw4\u{a0}a", &ALONE), [too_short(14, 15)]);
    assert_eq!(
        check("control\u{7}character", &ALONE),
        [Problem::Unusable(auth::BadInput::Prohibited)]
    );
}

#[test]
fn breached_passwords_are_refused_through_the_filter() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("pwned.txt");
    let strong = "Glacier-Harbor-Violin-42";
    let lines: String = [strong, "password", "Summer2024!"]
        .iter()
        .map(|p| {
            let hex: String = breached::password_digest(p)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
            format!("{hex}:17\n")
        })
        .collect();
    std::fs::write(&corpus, lines).unwrap();
    let out = dir.path().join("breached.filter");
    breached::build(&corpus, &out, 1).unwrap();
    let policy = PasswordPolicy {
        breached: BreachedFilter::open(&out).unwrap(),
        ..PasswordPolicy::default()
    };
    // Strong by every other measure, but in the corpus.
    assert_eq!(check(strong, &ALONE), []);
    assert_eq!(policy.check(strong, &ALONE).unwrap(), [Problem::Breached]);
    assert_eq!(
        describe(&policy.check(strong, &ALONE).unwrap()),
        "found in a list of breached passwords"
    );
    assert_eq!(
        policy.check("password", &ALONE).unwrap(),
        [
            too_short(8, 15),
            Problem::Breached,
            Problem::TooEasy(Guessable::CommonPassword)
        ]
    );
    assert_eq!(policy.check("purple tractor weave", &ALONE).unwrap(), []);
}

#[test]
fn the_minimums_follow_the_configuration() {
    let policy = PasswordPolicy {
        min_length: 20,
        min_length_with_mfa: 12,
        breached: None,
    };
    assert_eq!(policy.check("purple tractor weave", &ALONE).unwrap(), []);
    assert_eq!(policy.check("purple tractor", &WITH_MFA).unwrap(), []);
    assert_eq!(
        policy.check("k7Qm2xVp9Lw", &WITH_MFA).unwrap(),
        [too_short(11, 12)]
    );
    assert_eq!(policy.minimum(&ALONE), 20);
}
