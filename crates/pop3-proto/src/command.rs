//! POP3 command lines (RFC 1939 section 3 onward, RFC 2449 CAPA, RFC 2595 STLS,
//! RFC 5034 AUTH, RFC 6856 UTF8).
//!
//! Keywords are case-insensitive. Arguments are separated by single spaces, but we
//! accept runs of spaces the way lenient clients send them, except for PASS: its
//! argument is the rest of the line exactly as sent, so passphrases with spaces (and
//! leading or trailing spaces) work.

use sasl::Secret;

/// A message-number argument as the client wrote it.
///
/// Range checks need the maildrop, so the parser only keeps what was written: a
/// number (possibly zero or too large for any maildrop) or garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgNumber {
    /// Digits only. Values that overflow `u64` saturate, so they are simply out of range.
    Number(u64),
    /// Not a decimal number: signs, letters, empty.
    Invalid,
}

impl MsgNumber {
    fn parse(arg: &[u8]) -> Self {
        match parse_decimal(arg) {
            Some(n) => MsgNumber::Number(n),
            None => MsgNumber::Invalid,
        }
    }
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `USER name`
    User(Vec<u8>),
    /// `PASS secret` (the rest of the line).
    Pass(Secret),
    /// `AUTH` with no argument lists mechanisms; otherwise a mechanism name and the
    /// optional initial response (still base64, `=` meaning empty).
    Auth {
        /// Upper-cased mechanism name; `None` for a bare `AUTH`.
        mechanism: Option<String>,
        /// The initial response as sent (base64 text).
        initial: Option<Secret>,
    },
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<MsgNumber>),
    /// `RETR msg`
    Retr(MsgNumber),
    /// `DELE msg`
    Dele(MsgNumber),
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `QUIT`
    Quit,
    /// `TOP msg n`; `None` when n is not a non-negative number.
    Top(MsgNumber, Option<u64>),
    /// `UIDL [msg]`
    Uidl(Option<MsgNumber>),
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
    /// `UTF8`
    Utf8,
    /// `APOP name digest` (RFC 1939 section 7).
    Apop {
        /// The user name as sent.
        user: Vec<u8>,
        /// The MD5 digest, as 32 lower-case hex digits.
        digest: String,
    },
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but spaces.
    Empty,
    /// A keyword we do not know.
    Unknown,
    /// A required argument is missing.
    MissingArgument,
    /// More arguments than the command takes.
    TooManyArguments,
    /// An argument that cannot be valid (e.g. the TOP line count).
    InvalidArgument,
}

impl ParseError {
    /// The text after `-ERR `.
    pub fn message(self) -> &'static str {
        match self {
            ParseError::Empty => "empty command",
            ParseError::Unknown => "unknown command",
            ParseError::MissingArgument => "missing argument",
            ParseError::TooManyArguments => "too many arguments",
            ParseError::InvalidArgument => "invalid argument",
        }
    }
}

/// Parses one line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &[][..]),
    };
    if keyword.is_empty() {
        return Err(if line.iter().all(|&b| b == b' ') {
            ParseError::Empty
        } else {
            ParseError::Unknown
        });
    }
    if keyword.len() > 4 {
        return Err(ParseError::Unknown);
    }
    let mut kw = [0u8; 4];
    kw[..keyword.len()].copy_from_slice(keyword);
    kw.make_ascii_uppercase();
    let kw = &kw[..keyword.len()];

    // PASS keeps its argument verbatim; everything else splits on spaces.
    if kw == b"PASS" {
        return if rest.is_empty() {
            Err(ParseError::MissingArgument)
        } else {
            Ok(Command::Pass(Secret::new(rest.to_vec())))
        };
    }
    let args: Vec<&[u8]> = rest
        .split(|&b| b == b' ')
        .filter(|a| !a.is_empty())
        .collect();
    let arity = |min: usize, max: usize| -> Result<(), ParseError> {
        if args.len() < min {
            Err(ParseError::MissingArgument)
        } else if args.len() > max {
            Err(ParseError::TooManyArguments)
        } else {
            Ok(())
        }
    };
    let cmd = match kw {
        b"USER" => {
            arity(1, 1)?;
            Command::User(args[0].to_vec())
        }
        b"AUTH" => {
            arity(0, 2)?;
            Command::Auth {
                mechanism: args
                    .first()
                    .map(|m| String::from_utf8_lossy(m).to_ascii_uppercase()),
                initial: args.get(1).map(|ir| Secret::new(ir.to_vec())),
            }
        }
        b"STAT" => no_args(&args, Command::Stat)?,
        b"LIST" => {
            arity(0, 1)?;
            Command::List(args.first().map(|a| MsgNumber::parse(a)))
        }
        b"RETR" => {
            arity(1, 1)?;
            Command::Retr(MsgNumber::parse(args[0]))
        }
        b"DELE" => {
            arity(1, 1)?;
            Command::Dele(MsgNumber::parse(args[0]))
        }
        b"NOOP" => no_args(&args, Command::Noop)?,
        b"RSET" => no_args(&args, Command::Rset)?,
        b"QUIT" => no_args(&args, Command::Quit)?,
        b"TOP" => {
            arity(2, 2)?;
            Command::Top(MsgNumber::parse(args[0]), parse_decimal(args[1]))
        }
        b"UIDL" => {
            arity(0, 1)?;
            Command::Uidl(args.first().map(|a| MsgNumber::parse(a)))
        }
        b"CAPA" => no_args(&args, Command::Capa)?,
        b"STLS" => no_args(&args, Command::Stls)?,
        b"UTF8" => no_args(&args, Command::Utf8)?,
        b"APOP" => {
            arity(2, 2)?;
            let digest = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
            if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParseError::InvalidArgument);
            }
            Command::Apop {
                user: args[0].to_vec(),
                digest,
            }
        }
        _ => return Err(ParseError::Unknown),
    };
    Ok(cmd)
}

fn no_args(args: &[&[u8]], cmd: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(cmd)
    } else {
        Err(ParseError::TooManyArguments)
    }
}

/// Decimal digits only (no sign, no spaces); saturates at `u64::MAX`.
fn parse_decimal(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() || !arg.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(arg.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(parse(b"stat"), Ok(Command::Stat));
        assert_eq!(parse(b"LiSt"), Ok(Command::List(None)));
        assert_eq!(
            parse(b"list 3"),
            Ok(Command::List(Some(MsgNumber::Number(3))))
        );
    }

    #[test]
    fn pass_takes_the_rest_of_the_line() {
        let Ok(Command::Pass(s)) = parse(b"PASS correct horse  battery staple ") else {
            panic!("not PASS");
        };
        assert_eq!(s.expose(), b"correct horse  battery staple ");
        assert_eq!(parse(b"PASS"), Err(ParseError::MissingArgument));
    }

    #[test]
    fn message_numbers() {
        assert_eq!(parse(b"RETR 0"), Ok(Command::Retr(MsgNumber::Number(0))));
        assert_eq!(parse(b"RETR -1"), Ok(Command::Retr(MsgNumber::Invalid)));
        assert_eq!(parse(b"RETR abc"), Ok(Command::Retr(MsgNumber::Invalid)));
        assert_eq!(
            parse(b"RETR 99999999999999999999999"),
            Ok(Command::Retr(MsgNumber::Number(u64::MAX)))
        );
        assert_eq!(parse(b"RETR"), Err(ParseError::MissingArgument));
        assert_eq!(parse(b"RETR 1 2"), Err(ParseError::TooManyArguments));
        assert_eq!(
            parse(b"TOP 1 -1"),
            Ok(Command::Top(MsgNumber::Number(1), None))
        );
        assert_eq!(
            parse(b"TOP 1 0"),
            Ok(Command::Top(MsgNumber::Number(1), Some(0)))
        );
    }

    #[test]
    fn auth_forms() {
        assert_eq!(
            parse(b"AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        let Ok(Command::Auth {
            mechanism,
            initial: Some(ir),
        }) = parse(b"auth plain AGEAYg==")
        else {
            panic!()
        };
        assert_eq!(mechanism.as_deref(), Some("PLAIN"));
        assert_eq!(ir.expose(), b"AGEAYg==");
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"   "), Err(ParseError::Empty));
        assert_eq!(parse(b"XYZZY"), Err(ParseError::Unknown));
        assert_eq!(parse(b"STATS"), Err(ParseError::Unknown));
        assert_eq!(parse(b"NOOP x"), Err(ParseError::TooManyArguments));
        assert_eq!(parse(b"APOP mrose"), Err(ParseError::MissingArgument));
        assert_eq!(parse(b"APOP mrose xyz"), Err(ParseError::InvalidArgument));
        assert_eq!(
            parse(b"apop mrose C4C9334BAC560ECC979E58001B3E22FB"),
            Ok(Command::Apop {
                user: b"mrose".to_vec(),
                digest: "c4c9334bac560ecc979e58001b3e22fb".into()
            })
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&line);
        }

        #[test]
        fn numbers_round_trip(n in 0u64..u64::MAX, kw in prop::sample::select(vec!["RETR", "dele", "List", "uidl"])) {
            let cmd = parse(format!("{kw} {n}").as_bytes()).unwrap();
            let got = match cmd {
                Command::Retr(m) | Command::Dele(m) => m,
                Command::List(Some(m)) | Command::Uidl(Some(m)) => m,
                other => panic!("{other:?}"),
            };
            prop_assert_eq!(got, MsgNumber::Number(n));
        }
    }
}
