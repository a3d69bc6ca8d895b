//! Maildir file names: the unique part, the info suffix and the size fields.
//!
//! A Maildir file name is `<unique>[,KEY=VALUE...][:2,FLAGS]` (see
//! <https://cr.yp.to/proto/maildir.html>). Postfix writes `<secs>.V<dev>I<ino>M<usec>.<host>`,
//! Courier and Dovecot add `,S=<size>` and Dovecot `,W=<size with CRLF>`. Other programs
//! rename a file to change its flags (the part after `:`) or move it from `new/` to `cur/`,
//! so only the unique part identifies a message across sessions.

/// The parts of a Maildir file name that Poplar cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameParts<'a> {
    /// The name before the info separator `:`, size fields included.
    pub base: &'a str,
    /// The unique part: `base` without `,KEY=VALUE` fields.
    pub unique: String,
    /// The `,S=` field: the file's length on disk, if given.
    pub size: Option<u64>,
    /// The `,W=` field: the length with CRLF line endings, if given.
    pub vsize: Option<u64>,
}

/// Splits a Maildir file name into its parts.
pub(crate) fn parse_name(name: &str) -> NameParts<'_> {
    let base = name.split_once(':').map_or(name, |(base, _info)| base);
    let mut fields = base.split(',');
    let mut unique = String::from(fields.next().unwrap_or_default());
    let (mut size, mut vsize) = (None, None);
    for field in fields {
        match field.split_once('=') {
            Some((key, value)) if is_field_key(key) => match key {
                "S" => size = value.parse().ok(),
                "W" => vsize = value.parse().ok(),
                _ => {}
            },
            // Not a KEY=VALUE field: it belongs to the unique part.
            _ => {
                unique.push(',');
                unique.push_str(field);
            }
        }
    }
    NameParts {
        base,
        unique,
        size,
        vsize,
    }
}

/// Dovecot-style field keys are short ASCII alphanumeric words (`S`, `W`, ...).
fn is_field_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The standard Maildir flag for a message that has been read ("seen").
pub(crate) const SEEN: char = 'S';

/// The flags of a name with the standard `:2,FLAGS` info, or `None` without it (no
/// info, or the experimental `:1,` semantics).
fn flags(name: &str) -> Option<&str> {
    name.split_once(':')?.1.strip_prefix("2,")
}

/// Whether the name carries `flag` in its `:2,` info.
pub(crate) fn has_flag(name: &str, flag: char) -> bool {
    flags(name).is_some_and(|f| f.contains(flag))
}

/// The name with `flag` added to its `:2,` info, flags kept in ASCII order as the
/// Maildir specification asks; a name without info gets `:2,<flag>`. The base (and so
/// the unique part and the UIDL) never changes. `None` for an info Poplar does not
/// know how to change (not `2,`).
pub(crate) fn with_flag(name: &str, flag: char) -> Option<String> {
    let Some((base, _)) = name.split_once(':') else {
        return Some(format!("{name}:2,{flag}"));
    };
    let current = flags(name)?;
    if current.contains(flag) {
        return Some(name.to_owned());
    }
    let at = current.find(|c| c > flag).unwrap_or(current.len());
    Some(format!(
        "{base}:2,{}{flag}{}",
        &current[..at],
        &current[at..]
    ))
}

/// Whether a directory entry name should be ignored (hidden files such as `.Trash`).
pub(crate) fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_name_without_info() {
        let p = parse_name("1700000000.V803I1a2bM123456.mail.example.org");
        assert_eq!(p.unique, "1700000000.V803I1a2bM123456.mail.example.org");
        assert_eq!(p.base, p.unique);
        assert_eq!((p.size, p.vsize), (None, None));
    }

    #[test]
    fn dovecot_name_with_sizes_and_flags() {
        let p = parse_name("1700000000.M1P2.host,S=1234,W=1260:2,S");
        assert_eq!(p.unique, "1700000000.M1P2.host");
        assert_eq!(p.base, "1700000000.M1P2.host,S=1234,W=1260");
        assert_eq!((p.size, p.vsize), (Some(1234), Some(1260)));
    }

    #[test]
    fn courier_name_with_size_and_empty_flags() {
        let p = parse_name("1035478339.27041_118.foo.org,S=1000:2,");
        assert_eq!(p.unique, "1035478339.27041_118.foo.org");
        assert_eq!((p.size, p.vsize), (Some(1000), None));
    }

    #[test]
    fn info_without_fields_and_odd_commas() {
        let p = parse_name("123.abc.host:2,FRS");
        assert_eq!(p.unique, "123.abc.host");
        // A comma part that is not KEY=VALUE stays in the unique part.
        let p = parse_name("123.abc,def.host,S=x:2,");
        assert_eq!(p.unique, "123.abc,def.host");
        assert_eq!(p.size, None);
    }

    #[test]
    fn seen_flag_is_added_in_order_and_keeps_the_base() {
        assert_eq!(with_flag("1.a.host", SEEN).as_deref(), Some("1.a.host:2,S"));
        assert_eq!(
            with_flag("1.a.host:2,", SEEN).as_deref(),
            Some("1.a.host:2,S")
        );
        assert_eq!(
            with_flag("1.a.host,S=4:2,FRT", SEEN).as_deref(),
            Some("1.a.host,S=4:2,FRST")
        );
        // Dovecot keywords are lowercase letters, after the uppercase flags.
        assert_eq!(with_flag("1.a:2,Pab", SEEN).as_deref(), Some("1.a:2,PSab"));
        assert_eq!(with_flag("1.a:2,RS", SEEN).as_deref(), Some("1.a:2,RS"));
        assert_eq!(with_flag("1.a:1,whatever", SEEN), None);
        for name in ["1.a.host", "1.a.host,S=4:2,FRT", "1.a:2,Pab"] {
            let flagged = with_flag(name, SEEN).unwrap();
            assert!(has_flag(&flagged, SEEN));
            assert_eq!(parse_name(&flagged).base, parse_name(name).base);
            assert_eq!(parse_name(&flagged).unique, parse_name(name).unique);
        }
        assert!(!has_flag("1.a.host", SEEN));
        assert!(!has_flag("1.a.host:2,FR", SEEN));
        assert!(!has_flag("1.a.host:1,S", SEEN));
        // An S in the base (a host name) is not a flag.
        assert!(!has_flag("1.S.host", SEEN));
    }

    #[test]
    fn hidden_names() {
        assert!(is_hidden(".Trash"));
        assert!(!is_hidden("1.2.host"));
    }
}
