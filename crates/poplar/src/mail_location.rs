//! Where an imported user's Maildir is: the passwd-file's own `userdb_mail` (Dovecot's
//! mail location, `maildir:PATH[:OPTIONS]`), else the home folder plus
//! `--maildir-subdir`, else `<maildir root>/<user>`.

use std::path::{Path, PathBuf};

use auth::legacy::MailFields;

/// The Maildir of one passwd-file entry. `user` is the name as the file writes it
/// (what Dovecot's `%u` stands for), `canonical` Poplar's form of it. An error says why
/// the line cannot be imported.
pub fn maildir_for(
    fields: MailFields<'_>,
    user: &str,
    canonical: &str,
    subdir: Option<&Path>,
    root: &Path,
) -> Result<PathBuf, String> {
    if let Some(location) = fields.mail {
        let (format, rest) = location.split_once(':').unwrap_or((location, ""));
        if !format.eq_ignore_ascii_case("maildir") {
            return Err(format!(
                "mail location {location:?} is not a Maildir (Poplar serves Maildirs only)"
            ));
        }
        // Options (`:LAYOUT=fs`, `:INDEX=...`) follow the path.
        let path = rest.split(':').next().unwrap_or("");
        if path.is_empty() {
            return Err(format!("mail location {location:?} names no folder"));
        }
        let expanded = expand(path, user, fields.home)?;
        if !expanded.is_absolute() {
            return Err(format!(
                "mail location {location:?} is not an absolute path once expanded"
            ));
        }
        return Ok(expanded);
    }
    match (subdir, fields.home) {
        (Some(sub), Some(home)) => Ok(Path::new(home).join(sub)),
        (Some(_), None) => Err("no home folder in the line for --maildir-subdir".into()),
        (None, _) => Ok(root.join(canonical)),
    }
}

/// Dovecot's variables in a mail location: `~` (the home), `%u`/`%{user}` (the user as
/// written), `%n`/`%{username}` (its part before `@`), `%d`/`%{domain}` (after `@`),
/// `%h`/`%{home}`, `%%`. Anything else is refused rather than guessed.
fn expand(path: &str, user: &str, home: Option<&str>) -> Result<PathBuf, String> {
    let (local, domain) = user.split_once('@').unwrap_or((user, ""));
    let need_home = || {
        home.ok_or_else(|| {
            "the mail location uses the home folder, and the line has none".to_owned()
        })
    };
    let mut out = String::new();
    let mut rest = path;
    if let Some(after) = rest.strip_prefix('~') {
        out.push_str(need_home()?);
        rest = after;
    }
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (value, len) = if let Some(long) = after.strip_prefix('{') {
            let end = long
                .find('}')
                .ok_or_else(|| format!("unclosed %{{ in mail location {path:?}"))?;
            let value = match &long[..end] {
                "user" => user,
                "username" => local,
                "domain" => domain,
                "home" => need_home()?,
                other => return Err(format!("unknown variable %{{{other}}} in mail location")),
            };
            (value, end + 2)
        } else {
            let value = match after.chars().next() {
                Some('u') => user,
                Some('n') => local,
                Some('d') => domain,
                Some('h') => need_home()?,
                Some('%') => "%",
                Some(c) => return Err(format!("unknown variable %{c} in mail location")),
                None => return Err("a lone % at the end of the mail location".into()),
            };
            (value, 1)
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(PathBuf::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(mail: &'static str, home: Option<&'static str>) -> MailFields<'static> {
        MailFields {
            home,
            mail: Some(mail),
        }
    }

    const ROOT: &str = "/var/mail/poplar";

    #[test]
    fn the_lines_own_location_comes_first() {
        let at = |f, sub: Option<&str>| {
            maildir_for(
                f,
                "Bob@Example.org",
                "bob@example.org",
                sub.map(Path::new),
                Path::new(ROOT),
            )
        };
        assert_eq!(
            at(
                mail("maildir:~/Maildir:LAYOUT=fs", Some("/home/bob")),
                Some("x")
            ),
            Ok(PathBuf::from("/home/bob/Maildir"))
        );
        assert_eq!(
            at(mail("maildir:/var/vmail/%d/%n", None), None),
            Ok(PathBuf::from("/var/vmail/Example.org/Bob"))
        );
        assert_eq!(
            at(mail("maildir:/srv/%{domain}/%{username}/%%x", None), None),
            Ok(PathBuf::from("/srv/Example.org/Bob/%x"))
        );
        assert!(
            at(mail("mbox:~/mail", Some("/home/bob")), None)
                .unwrap_err()
                .contains("not a Maildir")
        );
        assert!(
            at(mail("maildir:~/Maildir", None), None)
                .unwrap_err()
                .contains("home")
        );
        assert!(
            at(mail("maildir:/x/%q", None), None)
                .unwrap_err()
                .contains("%q")
        );
        assert!(
            at(mail("maildir:Maildir", None), None)
                .unwrap_err()
                .contains("absolute")
        );
        assert!(
            at(mail("maildir:", None), None)
                .unwrap_err()
                .contains("no folder")
        );
    }

    #[test]
    fn else_home_and_subdir_else_the_root() {
        let home = MailFields {
            home: Some("/home/bob"),
            mail: None,
        };
        let none = MailFields::default();
        let at = |f, sub: Option<&str>| {
            maildir_for(f, "bob", "bob", sub.map(Path::new), Path::new(ROOT))
        };
        assert_eq!(
            at(home, Some("Maildir")),
            Ok(PathBuf::from("/home/bob/Maildir"))
        );
        assert_eq!(at(home, None), Ok(PathBuf::from("/var/mail/poplar/bob")));
        assert_eq!(at(none, None), Ok(PathBuf::from("/var/mail/poplar/bob")));
        assert!(at(none, Some("Maildir")).is_err());
    }
}
