//! Lines of a Dovecot passwd-file (Dovecot documentation, "Passwd-file"):
//! `user:password:uid:gid:(gecos):home:(shell):extra_fields`, of which only the user and
//! password matter here; the same code reads a plain `user:hash` list and the first two
//! fields of `/etc/shadow`.
//!
//! As in Dovecot's `db-passwd-file.c`, a line is split on every `:` (so no password
//! field holds one: a `{PLAIN}` password with a colon was already cut by Dovecot),
//! empty lines, lines starting with `#` and lines with no user name are skipped, and a
//! libpam-pwdfile style `password[13]` means crypt(3), `[34]` PLAIN-MD5, `[56]`
//! DIGEST-MD5.

use super::{ParseError, Parsed};

/// The user and password fields of a line that holds an entry.
fn fields(line: &str) -> Option<(&str, Option<&str>)> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() || line.trim_start().starts_with('#') || line.starts_with(':') {
        return None;
    }
    let mut fields = line.split(':');
    let user = fields.next()?;
    Some((user, fields.next()))
}

/// Parses one line of a Dovecot passwd-file or a `user:hash` list. Blank lines and `#`
/// comments give `Ok(None)`; an entry gives its user name (as written: the caller
/// canonicalises it) and what the password field holds. A line with no password
/// field, or an empty one, is [`ParseError::NoPassword`].
pub fn parse_passwd_line(line: &str) -> Result<Option<(String, Parsed)>, ParseError> {
    let Some((user, password)) = fields(line) else {
        return Ok(None);
    };
    let parsed = parse_password_field(password.ok_or(ParseError::NoPassword)?)?;
    Ok(Some((user.to_owned(), parsed)))
}

/// The user name of a line that holds an entry, so that an importer can say whose
/// entry [`parse_passwd_line`] refused.
pub fn passwd_line_user(line: &str) -> Option<&str> {
    fields(line).map(|(user, _)| user)
}

/// What a passwd-file line says about where the user's mail is: the home folder (the
/// sixth field) and the `mail` userdb field (`userdb_mail=` or `mail=` among the extra
/// fields, which start at the eighth field and may themselves hold `:`, as in
/// `maildir:~/Maildir:LAYOUT=fs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailFields<'a> {
    /// The home folder, if the line names one.
    pub home: Option<&'a str>,
    /// The mail location, as written (`maildir:/var/vmail/%d/%n`).
    pub mail: Option<&'a str>,
}

/// The [`MailFields`] of a line that holds an entry.
pub fn passwd_line_mail(line: &str) -> MailFields<'_> {
    let line = line.trim_end_matches(['\r', '\n']);
    if fields(line).is_none() {
        return MailFields::default();
    }
    let mut parts = line.splitn(8, ':');
    let home = parts.nth(5).filter(|h| !h.is_empty());
    let extra = parts.nth(1).unwrap_or("");
    let mail = extra.split_ascii_whitespace().find_map(|kv| {
        kv.strip_prefix("userdb_mail=")
            .or_else(|| kv.strip_prefix("mail="))
    });
    MailFields { home, mail }
}

fn parse_password_field(password: &str) -> Result<Parsed, ParseError> {
    let bytes = password.as_bytes();
    let len = bytes.len();
    // libpam-pwdfile's `password[NN]`, recognised exactly where Dovecot does.
    if len > 4
        && !password.starts_with(['{', '$'])
        && bytes[len - 1] == b']'
        && bytes[len - 4] == b'['
    {
        return match &bytes[len - 3..len - 1] {
            b"34" => Err(ParseError::Unsupported("PLAIN-MD5".to_owned())),
            b"56" => Err(ParseError::Unsupported("DIGEST-MD5".to_owned())),
            // `[` is ASCII, so `len - 4` is a character boundary.
            _ => super::crypt::parse(&password[..len - 4]),
        };
    }
    super::parse(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_lines() {
        for line in ["", "   ", "\r\n", "# comment", "  # indented", ":{PLAIN}x"] {
            assert!(matches!(parse_passwd_line(line), Ok(None)), "{line:?}");
            assert_eq!(passwd_line_user(line), None);
        }
    }

    #[test]
    fn pam_pwdfile_suffixes() {
        assert_eq!(
            parse_passwd_line("u:abJnggxhB/yWI[13]").unwrap_err(),
            ParseError::Unsupported("DES-CRYPT".to_owned())
        );
        assert_eq!(
            parse_passwd_line("u:5f4dcc3b5aa765d61d8327deb882cf99[34]").unwrap_err(),
            ParseError::Unsupported("PLAIN-MD5".to_owned())
        );
        assert_eq!(
            passwd_line_user("bob@example.org:x[56]:1000"),
            Some("bob@example.org")
        );
    }

    #[test]
    fn mail_fields() {
        let line = "bob@example.org:{PLAIN}x:1000:1000::/home/bob::userdb_mail=maildir:~/Maildir:LAYOUT=fs quota=1G";
        assert_eq!(
            passwd_line_mail(line),
            MailFields {
                home: Some("/home/bob"),
                mail: Some("maildir:~/Maildir:LAYOUT=fs")
            }
        );
        assert_eq!(
            passwd_line_mail("u:{PLAIN}x::::::mail=maildir:/var/vmail/%d/%n"),
            MailFields {
                home: None,
                mail: Some("maildir:/var/vmail/%d/%n")
            }
        );
        assert_eq!(passwd_line_mail("u:{PLAIN}x"), MailFields::default());
        assert_eq!(passwd_line_mail("# comment"), MailFields::default());
    }
}
