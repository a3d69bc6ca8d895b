//! Guessability: zxcvbn's estimate with the account's own words as extra dictionary
//! entries, and the plain "does it contain the name" rule that does not depend on a
//! score (NIST SP 800-63B-4 §3.1.1.2: context-specific words such as the user name and
//! the name of the service).

use std::fmt;

use zxcvbn::feedback::Warning;
use zxcvbn::matching::patterns::MatchPattern;

use crate::{Account, MIN_NAME_CHARS, MIN_SCORE, Problem};

/// How the estimator would guess a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guessable {
    /// On a list of the most used passwords.
    CommonPassword,
    /// A common password with small changes.
    SimilarToCommon,
    /// A dictionary word with little around it.
    CommonWord,
    /// A first name or surname with little around it.
    Name,
    /// The user's name, the server's name or the product's.
    ContextWord,
    /// Keys next to each other (`qwerty`, `zxcvbn`).
    KeyboardPattern,
    /// `aaaa` or `abcabc`.
    Repeats,
    /// `abcd`, `6543`.
    Sequence,
    /// A date or a recent year.
    Dates,
    /// No single pattern, just too few guesses.
    Predictable,
}

impl fmt::Display for Guessable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Guessable::CommonPassword => "one of the most common passwords",
            Guessable::SimilarToCommon => "similar to a common password",
            Guessable::CommonWord => "based on a common word",
            Guessable::Name => "based on a common name",
            Guessable::ContextWord => "based on your user name or the server's name",
            Guessable::KeyboardPattern => "a keyboard pattern",
            Guessable::Repeats => "repeated characters or words",
            Guessable::Sequence => "a sequence like abc or 6543",
            Guessable::Dates => "based on a date or a recent year",
            Guessable::Predictable => "a predictable pattern",
        })
    }
}

/// Host name labels that name a role rather than the organisation: `mail.example.org`
/// is identified by `example`, not `mail`, and a password with "mail" in it is not
/// built from the server's name.
const GENERIC_LABELS: &[&str] = &[
    "localhost",
    "localdomain",
    "mail",
    "email",
    "webmail",
    "mailhost",
    "pop",
    "pops",
    "pop3",
    "pop3s",
    "imap",
    "imaps",
    "smtp",
    "mx",
    "www",
    "web",
    "host",
    "server",
    "srv",
    "mailserver",
];

/// The label that names an organisation in a host or domain name: the first one that
/// is not a role (`mail`, `pop3`, with or without a number) and not the top-level
/// domain. `mail.example.org` → `example`; `localhost` → none.
fn identifying_label(name: &str) -> Option<String> {
    let labels: Vec<String> = name
        .split('.')
        .filter(|l| !l.is_empty())
        .map(str::to_lowercase)
        .collect();
    let candidates = match labels.len() {
        0 => return None,
        1 => &labels[..],
        n => &labels[..n - 1],
    };
    candidates
        .iter()
        .find(|l| {
            let role = l.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
            !GENERIC_LABELS.contains(&role) && !role.is_empty()
        })
        .cloned()
}

/// The words of one account.
pub(crate) struct Context {
    /// The user name's local part and its pieces (`john.smith` → `john.smith`, `john`,
    /// `smith`), lower-cased, at least `MIN_NAME_CHARS` long.
    user_words: Vec<String>,
    /// The identifying labels of the host name and the mail domains.
    server_words: Vec<String>,
    /// Everything zxcvbn gets as user inputs.
    inputs: Vec<String>,
}

impl Context {
    pub(crate) fn new(account: &Account<'_>) -> Self {
        let user = account.user.to_lowercase();
        let (local, user_domain) = match user.rsplit_once('@') {
            Some((local, domain)) => (local.to_string(), Some(domain.to_string())),
            None => (user.clone(), None),
        };
        let mut user_words = vec![local.clone()];
        let pieces = local.split(['.', '_', '-', '+']).map(str::to_string);
        user_words.extend(pieces.filter(|p| *p != local));
        user_words.retain(|w| w.chars().count() >= MIN_NAME_CHARS);
        user_words.dedup();

        let hostname = account.hostname.to_lowercase();
        let domain = account.domain.to_lowercase();
        let mut server_words = Vec::new();
        for name in [Some(&hostname), user_domain.as_ref(), Some(&domain)]
            .into_iter()
            .flatten()
        {
            if let Some(label) = identifying_label(name)
                && label.chars().count() >= MIN_NAME_CHARS
                && !server_words.contains(&label)
            {
                server_words.push(label);
            }
        }

        let mut inputs = vec![user.clone(), local];
        inputs.extend(user_words.iter().cloned());
        inputs.extend(user_domain);
        inputs.extend([hostname, domain, "poplar".to_string()]);
        inputs.extend(server_words.iter().cloned());
        inputs.retain(|w| !w.is_empty());
        Context {
            user_words,
            server_words,
            inputs,
        }
    }

    /// The name rule, independent of any score.
    pub(crate) fn contained_in(&self, password: &str) -> Vec<Problem> {
        let password = password.to_lowercase();
        let mut problems = Vec::new();
        if self
            .user_words
            .iter()
            .any(|w| password.contains(w.as_str()))
        {
            problems.push(Problem::ContainsUserName);
        }
        if self
            .server_words
            .iter()
            .any(|w| password.contains(w.as_str()))
        {
            problems.push(Problem::ContainsServerName);
        }
        problems
    }

    /// How the password would be guessed, if zxcvbn scores it below [`MIN_SCORE`].
    /// zxcvbn looks at the first 100 characters only, which bounds its time.
    pub(crate) fn guessable(&self, password: &str) -> Option<Guessable> {
        let inputs: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
        let estimate = zxcvbn::zxcvbn(password, &inputs);
        if u8::from(estimate.score()) >= MIN_SCORE {
            return None;
        }
        let dictionary_words = || {
            estimate.sequence().iter().filter_map(|m| match &m.pattern {
                MatchPattern::Dictionary(d) => Some(d.matched_word.as_str()),
                _ => None,
            })
        };
        if dictionary_words().any(|w| self.inputs.iter().any(|i| i == w)) {
            return Some(Guessable::ContextWord);
        }
        let warning = estimate.feedback().and_then(|f| f.warning());
        Some(match warning {
            Some(
                Warning::ThisIsATop10Password
                | Warning::ThisIsATop100Password
                | Warning::ThisIsACommonPassword,
            ) => Guessable::CommonPassword,
            Some(Warning::ThisIsSimilarToACommonlyUsedPassword) => Guessable::SimilarToCommon,
            Some(Warning::AWordByItselfIsEasyToGuess) => Guessable::CommonWord,
            Some(
                Warning::NamesAndSurnamesByThemselvesAreEasyToGuess
                | Warning::CommonNamesAndSurnamesAreEasyToGuess,
            ) => Guessable::Name,
            Some(
                Warning::StraightRowsOfKeysAreEasyToGuess
                | Warning::ShortKeyboardPatternsAreEasyToGuess,
            ) => Guessable::KeyboardPattern,
            Some(
                Warning::RepeatsLikeAaaAreEasyToGuess
                | Warning::RepeatsLikeAbcAbcAreOnlySlightlyHarderToGuess,
            ) => Guessable::Repeats,
            Some(Warning::SequencesLikeAbcAreEasyToGuess) => Guessable::Sequence,
            Some(Warning::RecentYearsAreEasyToGuess | Warning::DatesAreOftenEasyToGuess) => {
                Guessable::Dates
            }
            None if dictionary_words().next().is_some() => Guessable::CommonWord,
            None => Guessable::Predictable,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identifying_label_skips_roles_and_the_tld() {
        assert_eq!(
            identifying_label("mail.example.org").as_deref(),
            Some("example")
        );
        assert_eq!(
            identifying_label("pop3.Riverbank.co.uk").as_deref(),
            Some("riverbank")
        );
        assert_eq!(
            identifying_label("mx2.example.org").as_deref(),
            Some("example")
        );
        assert_eq!(identifying_label("example.org").as_deref(), Some("example"));
        assert_eq!(
            identifying_label("fileserver").as_deref(),
            Some("fileserver")
        );
        assert_eq!(identifying_label("localhost"), None);
        assert_eq!(identifying_label("mail.org"), None);
        assert_eq!(identifying_label(""), None);
    }

    #[test]
    fn user_words_are_the_local_part_and_its_pieces() {
        let c = Context::new(&Account {
            user: "John.Smithers@Example.org",
            hostname: "mail.example.org",
            domain: "",
            mfa_required: false,
        });
        assert_eq!(c.user_words, ["john.smithers", "john", "smithers"]);
        assert_eq!(c.server_words, ["example"]);
        let short = Context::new(&Account {
            user: "bob",
            hostname: "localhost",
            domain: "",
            mfa_required: false,
        });
        assert!(short.user_words.is_empty() && short.server_words.is_empty());
        assert!(short.inputs.contains(&"bob".to_string()));
    }
}
