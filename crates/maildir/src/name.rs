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
    fn hidden_names() {
        assert!(is_hidden(".Trash"));
        assert!(!is_hidden("1.2.host"));
    }
}
