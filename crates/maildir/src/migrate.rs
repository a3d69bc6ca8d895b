//! UIDLs a previous server gave, so clients moving to Poplar do not download every
//! message again (RFC 1939 section 7: a UIDL must stay the same for a message).
//!
//! Two sources: Dovecot's `dovecot-uidlist` (versions 1 and 3) read with the
//! `pop3_uidl_format` the old server used, and a plain `filename uidl` list. Both
//! become `(unique part, uidl)` pairs for [`crate::Maildir::set_uidl_override`].

use crate::name::parse_name;

/// One record of a `dovecot-uidlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    uid: u32,
    /// The file name as Dovecot recorded it (without the `:2,` info).
    file: String,
    guid: Option<String>,
    /// A POP3 UIDL Dovecot saved for this message (`P` extension), which wins.
    pop3_uidl: Option<String>,
}

/// Why an import source was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The uidlist header is not one Dovecot writes.
    #[error("not a dovecot-uidlist: {0}")]
    Uidlist(String),
    /// The format string uses something we cannot reproduce.
    #[error("unsupported pop3_uidl_format: {0}")]
    Format(String),
    /// A line of a `filename uidl` list is malformed.
    #[error("line {0}: expected `filename uidl`")]
    ListLine(usize),
}

/// `(unique part, UIDL)` pairs from a `dovecot-uidlist` and the `pop3_uidl_format`
/// the old server used (for example `%08Xu%08Xv`, `%f`, `%g`, `%u`, `%v`).
pub fn from_dovecot_uidlist(
    uidlist: &str,
    format: &str,
) -> Result<Vec<(String, String)>, MigrateError> {
    let (uidvalidity, records) = parse_uidlist(uidlist)?;
    records
        .into_iter()
        .map(|r| {
            let uidl = match &r.pop3_uidl {
                Some(saved) => saved.clone(),
                None => expand(format, &r, uidvalidity)?,
            };
            Ok((parse_name(&r.file).unique, uidl))
        })
        .collect()
}

/// `(unique part, UIDL)` pairs from lines `filename uidl` (blank lines and `#` comments
/// skipped). The file name may carry `,S=` fields and `:2,` flags.
pub fn from_uidl_list(text: &str) -> Result<Vec<(String, String)>, MigrateError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(file), Some(uidl), None) => out.push((parse_name(file).unique, uidl.to_owned())),
            _ => return Err(MigrateError::ListLine(n + 1)),
        }
    }
    Ok(out)
}

fn parse_uidlist(text: &str) -> Result<(u32, Vec<Record>), MigrateError> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| MigrateError::Uidlist("empty".into()))?;
    let mut fields = header.split_whitespace();
    let version = fields.next().unwrap_or_default();
    let uidvalidity = match version {
        // "1 <uidvalidity> <next uid>"
        "1" => fields.next().and_then(|v| v.parse().ok()),
        // "3 V<uidvalidity> N<next uid> G<guid>"
        "3" => fields
            .find_map(|f| f.strip_prefix('V'))
            .and_then(|v| v.parse().ok()),
        other => return Err(MigrateError::Uidlist(format!("version {other:?}"))),
    }
    .ok_or_else(|| MigrateError::Uidlist("no UIDVALIDITY in the header".into()))?;
    let mut records = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let (meta, file) = match version {
            "1" => line.split_once(' ').unwrap_or((line, "")),
            _ => line
                .split_once(" :")
                .or_else(|| line.split_once(':'))
                .unwrap_or((line, "")),
        };
        let mut meta = meta.split_whitespace();
        let uid: u32 = meta
            .next()
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| MigrateError::Uidlist(format!("bad record {line:?}")))?;
        let file = file.trim();
        if file.is_empty() {
            return Err(MigrateError::Uidlist(format!(
                "record {uid} has no file name"
            )));
        }
        let (mut guid, mut pop3_uidl) = (None, None);
        for ext in meta {
            match ext.split_at(1) {
                ("G", v) => guid = Some(v.to_owned()),
                ("P", v) => pop3_uidl = Some(v.to_owned()),
                _ => {}
            }
        }
        records.push(Record {
            uid,
            file: file.to_owned(),
            guid,
            pop3_uidl,
        });
    }
    Ok((uidvalidity, records))
}

/// Dovecot's variable expansion, for what `pop3_uidl_format` may hold here: `%u`,
/// `%v`, `%f`, `%g`, `%%`, with an optional zero-padded width and the `X` (hex) modifier.
/// `%m` (an MD5 of the headers) is refused: it cannot be reproduced from the list.
fn expand(format: &str, r: &Record, uidvalidity: u32) -> Result<String, MigrateError> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut zero = false;
        let mut width = 0usize;
        let mut hex = false;
        loop {
            match chars.peek().copied() {
                Some('0') if width == 0 && !zero => zero = true,
                Some(d @ '0'..='9') => width = width * 10 + d.to_digit(10).unwrap_or(0) as usize,
                Some('X') | Some('x') => hex = true,
                _ => break,
            }
            chars.next();
        }
        let value = match chars.next() {
            Some('%') => "%".to_owned(),
            Some('u') if hex => format!("{:x}", r.uid),
            Some('u') => r.uid.to_string(),
            Some('v') if hex => format!("{uidvalidity:x}"),
            Some('v') => uidvalidity.to_string(),
            Some('f') => parse_name(&r.file).base.to_owned(),
            Some('g') => r
                .guid
                .clone()
                .ok_or_else(|| MigrateError::Format("%g but the uidlist has no GUIDs".into()))?,
            other => return Err(MigrateError::Format(format!("%{}", other.unwrap_or(' ')))),
        };
        let pad = if zero { '0' } else { ' ' };
        for _ in value.len()..width {
            out.push(pad);
        }
        out.push_str(&value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V3: &str = "3 V1795317749 N3 Ge1aa040bf55f026b5779000083ecc375\n\
        1 :1700000000.M0P11.bench,S=4096,W=4155\n\
        2 W10 GABC :1700000001.M1P11.bench\n\
        5 Pold-uidl-5 :1700000005.M5P11.bench:2,S\n";

    #[test]
    fn dovecot_default_format_is_lower_case_hex() {
        // What Dovecot 2.3 answered for this uidlist: "1 000000016b025ff5".
        let pairs = from_dovecot_uidlist(V3, "%08Xu%08Xv").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("1700000000.M0P11.bench".into(), "000000016b025ff5".into()),
                ("1700000001.M1P11.bench".into(), "000000026b025ff5".into()),
                ("1700000005.M5P11.bench".into(), "old-uidl-5".into()),
            ]
        );
    }

    #[test]
    fn other_formats() {
        let pairs = from_dovecot_uidlist(V3, "%f").unwrap();
        assert_eq!(pairs[0].1, "1700000000.M0P11.bench,S=4096,W=4155");
        let pairs = from_dovecot_uidlist(V3, "%u.%v").unwrap();
        assert_eq!(pairs[1].1, "2.1795317749");
        assert!(
            from_dovecot_uidlist(V3, "%g").is_err(),
            "record 1 has no GUID"
        );
        assert!(from_dovecot_uidlist(V3, "%m").is_err());
        let v1 = "1 1234 3\n1 a.host:2,\n2 b.host\n";
        assert_eq!(
            from_dovecot_uidlist(v1, "%04u-%v").unwrap(),
            vec![
                ("a.host".into(), "0001-1234".into()),
                ("b.host".into(), "0002-1234".into())
            ]
        );
        assert!(from_dovecot_uidlist("9 x\n", "%u").is_err());
    }

    #[test]
    fn plain_list() {
        let text = "# from qpopper\nmsg1.host,S=10:2,S  UID-1\n\nmsg2.host UID-2\n";
        assert_eq!(
            from_uidl_list(text).unwrap(),
            vec![
                ("msg1.host".into(), "UID-1".into()),
                ("msg2.host".into(), "UID-2".into())
            ]
        );
        assert_eq!(
            from_uidl_list("one-field\n"),
            Err(MigrateError::ListLine(1))
        );
    }
}
