//! Which command a line names, for metrics and logs that must not carry the raw input:
//! a fixed set of keywords (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH,
//! RFC 6856 UTF8) and `Other` for everything else, so a client cannot mint new label
//! values by sending junk.

/// The keyword of a command line, from a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// `USER`
    User,
    /// `PASS`
    Pass,
    /// `AUTH`, and the SASL continuation lines of an exchange it started.
    Auth,
    /// `APOP`
    Apop,
    /// `STAT`
    Stat,
    /// `LIST`
    List,
    /// `RETR`
    Retr,
    /// `TOP`
    Top,
    /// `DELE`
    Dele,
    /// `NOOP`
    Noop,
    /// `RSET`
    Rset,
    /// `QUIT`
    Quit,
    /// `UIDL`
    Uidl,
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
    /// `UTF8`
    Utf8,
    /// Anything else: unknown keywords, empty and over-long lines.
    Other,
}

impl CommandKind {
    /// Every kind, for exhaustive tests and for pre-registering metric labels.
    pub const ALL: [CommandKind; 17] = [
        CommandKind::User,
        CommandKind::Pass,
        CommandKind::Auth,
        CommandKind::Apop,
        CommandKind::Stat,
        CommandKind::List,
        CommandKind::Retr,
        CommandKind::Top,
        CommandKind::Dele,
        CommandKind::Noop,
        CommandKind::Rset,
        CommandKind::Quit,
        CommandKind::Uidl,
        CommandKind::Capa,
        CommandKind::Stls,
        CommandKind::Utf8,
        CommandKind::Other,
    ];

    /// The keyword a line starts with (case-insensitive, up to the first space), without
    /// looking at its arguments: `RETR x` is still RETR, whether or not it parses.
    pub fn of(line: &[u8]) -> CommandKind {
        let keyword = match line.iter().position(|&b| b == b' ') {
            Some(i) => &line[..i],
            None => line,
        };
        if keyword.len() > 4 {
            return CommandKind::Other;
        }
        let mut kw = [0u8; 4];
        kw[..keyword.len()].copy_from_slice(keyword);
        kw.make_ascii_uppercase();
        match &kw[..keyword.len()] {
            b"USER" => CommandKind::User,
            b"PASS" => CommandKind::Pass,
            b"AUTH" => CommandKind::Auth,
            b"APOP" => CommandKind::Apop,
            b"STAT" => CommandKind::Stat,
            b"LIST" => CommandKind::List,
            b"RETR" => CommandKind::Retr,
            b"TOP" => CommandKind::Top,
            b"DELE" => CommandKind::Dele,
            b"NOOP" => CommandKind::Noop,
            b"RSET" => CommandKind::Rset,
            b"QUIT" => CommandKind::Quit,
            b"UIDL" => CommandKind::Uidl,
            b"CAPA" => CommandKind::Capa,
            b"STLS" => CommandKind::Stls,
            b"UTF8" => CommandKind::Utf8,
            _ => CommandKind::Other,
        }
    }

    /// The upper-case keyword, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::User => "USER",
            CommandKind::Pass => "PASS",
            CommandKind::Auth => "AUTH",
            CommandKind::Apop => "APOP",
            CommandKind::Stat => "STAT",
            CommandKind::List => "LIST",
            CommandKind::Retr => "RETR",
            CommandKind::Top => "TOP",
            CommandKind::Dele => "DELE",
            CommandKind::Noop => "NOOP",
            CommandKind::Rset => "RSET",
            CommandKind::Quit => "QUIT",
            CommandKind::Uidl => "UIDL",
            CommandKind::Capa => "CAPA",
            CommandKind::Stls => "STLS",
            CommandKind::Utf8 => "UTF8",
            CommandKind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, parse};
    use proptest::prelude::*;

    #[test]
    fn keywords_are_case_insensitive_and_arguments_ignored() {
        assert_eq!(CommandKind::of(b"retr 1"), CommandKind::Retr);
        assert_eq!(CommandKind::of(b"ReTr garbage"), CommandKind::Retr);
        assert_eq!(CommandKind::of(b"PASS secret words"), CommandKind::Pass);
        assert_eq!(CommandKind::of(b"top"), CommandKind::Top);
        assert_eq!(CommandKind::of(b""), CommandKind::Other);
        assert_eq!(CommandKind::of(b" STAT"), CommandKind::Other);
        assert_eq!(CommandKind::of(b"STATS"), CommandKind::Other);
        assert_eq!(CommandKind::of(b"XTND XMIT"), CommandKind::Other);
        assert_eq!(CommandKind::of("ÜSER a".as_bytes()), CommandKind::Other);
    }

    #[test]
    fn every_kind_names_itself_once() {
        let mut names: Vec<_> = CommandKind::ALL.iter().map(|k| k.as_str()).collect();
        for k in CommandKind::ALL {
            if k != CommandKind::Other {
                assert_eq!(CommandKind::of(k.as_str().as_bytes()), k);
            }
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CommandKind::ALL.len());
    }

    fn kind_of(cmd: &Command) -> CommandKind {
        match cmd {
            Command::User(_) => CommandKind::User,
            Command::Pass(_) => CommandKind::Pass,
            Command::Auth { .. } => CommandKind::Auth,
            Command::Stat => CommandKind::Stat,
            Command::List(_) => CommandKind::List,
            Command::Retr(_) => CommandKind::Retr,
            Command::Dele(_) => CommandKind::Dele,
            Command::Noop => CommandKind::Noop,
            Command::Rset => CommandKind::Rset,
            Command::Quit => CommandKind::Quit,
            Command::Top(..) => CommandKind::Top,
            Command::Uidl(_) => CommandKind::Uidl,
            Command::Capa => CommandKind::Capa,
            Command::Stls => CommandKind::Stls,
            Command::Utf8 => CommandKind::Utf8,
            Command::Apop { .. } => CommandKind::Apop,
        }
    }

    proptest! {
        /// Whatever the parser accepts, the classifier names the same command.
        #[test]
        fn agrees_with_the_parser(
            kw in prop::sample::select(vec![
                "user", "PASS", "auth", "Apop", "stat", "LIST", "retr", "top", "dele",
                "noop", "rset", "quit", "uidl", "capa", "stls", "utf8", "xtnd", "",
            ]),
            rest in "( [a-z0-9]{1,40}){0,3}",
        ) {
            let line = format!("{kw}{rest}");
            if let Ok(cmd) = parse(line.as_bytes()) {
                prop_assert_eq!(CommandKind::of(line.as_bytes()), kind_of(&cmd));
            }
        }
    }
}
