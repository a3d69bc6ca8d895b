//! What `poplar config check` (and `poplar serve` at start) says about the certificate
//! files: expired or soon expiring, weak RSA keys, keys that do not match, self-signed
//! certificates facing the network, SNI certificates that name no host, a default
//! certificate that does not name `hostname`. Each warning says what to do.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

use super::certs::{dns_names, load_pair};
use super::{name_matches, sources};
use crate::config::Config;

/// Warn this long before a certificate expires.
const EXPIRY_WARNING_DAYS: i64 = 14;
/// Smallest RSA modulus we accept without a warning (NIST SP 800-57: 112-bit security).
const MIN_RSA_BITS: usize = 2048;

/// Warnings about the configured certificate files, as of now.
pub fn warnings(config: &Config) -> Vec<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    warnings_at(config, now)
}

/// Warnings about the configured certificate files at `now` (Unix seconds).
pub fn warnings_at(config: &Config, now: i64) -> Vec<String> {
    let mut w = Vec::new();
    let public = config
        .listen
        .pop3
        .iter()
        .chain(&config.listen.pop3s)
        .any(|a| !a.ip().is_loopback());
    let provider = super::provider();
    let mut names_by_source = Vec::new();
    for (i, source) in sources(config).into_iter().enumerate() {
        let own_self_signed = i == 0 && config.tls.cert.is_none();
        if own_self_signed && !source.cert.exists() {
            continue; // made at first start
        }
        let (label, path) = (&source.label, source.cert.display());
        let der = match CertificateDer::from_pem_file(&source.cert) {
            Ok(der) => der,
            Err(e) => {
                w.push(format!(
                    "{label}: cannot read certificate {path} ({e}): fix the path or the file; the server will not start without it"
                ));
                continue;
            }
        };
        let parsed = match x509_parser::parse_x509_certificate(der.as_ref()) {
            Ok((_, parsed)) => parsed,
            Err(e) => {
                w.push(format!(
                    "{label}: cannot parse certificate {path} ({e}): replace it with a valid PEM X.509 certificate"
                ));
                continue;
            }
        };
        validity(&mut w, label, &path.to_string(), &parsed, now);
        if let Ok(PublicKey::RSA(rsa)) = parsed.public_key().parsed() {
            let bits = rsa.key_size();
            if bits < MIN_RSA_BITS {
                w.push(format!(
                    "{label}: certificate {path} has an RSA key of {bits} bits: issue a new one with RSA {MIN_RSA_BITS}+ or ECDSA P-256"
                ));
            }
        }
        if public && !own_self_signed && parsed.subject() == parsed.issuer() {
            w.push(format!(
                "{label}: certificate {path} is self-signed and the server listens beyond loopback: clients cannot verify it; use one from a certificate authority (e.g. ACME / Let's Encrypt)"
            ));
        }
        let chain = CertificateDer::pem_file_iter(&source.cert)
            .map(|certs| certs.filter(Result::is_ok).count())
            .unwrap_or(1);
        if chain == 1 && parsed.subject() != parsed.issuer() {
            w.push(format!(
                "{label}: certificate {path} comes without its intermediate certificates: clients that do not have them already cannot verify it; configure the full chain (fullchain.pem with Let's Encrypt)"
            ));
        }
        let names = dns_names(&der).unwrap_or_default();
        if i > 0 && names.is_empty() {
            w.push(format!(
                "{label}: certificate {path} names no DNS host in subjectAltName, so SNI never selects it: use a certificate for the names it should serve"
            ));
        }
        if let Err(e) = load_pair(&source, &provider) {
            w.push(format!(
                "{e:#}: fix the pair; the server will not start with it, and a reload keeps the previous certificates"
            ));
        }
        names_by_source.push((label.clone(), names));
    }
    hostname_coverage(&mut w, config, &names_by_source);
    w
}

fn validity(w: &mut Vec<String>, label: &str, path: &str, cert: &X509Certificate<'_>, now: i64) {
    let validity = cert.validity();
    let not_after = validity.not_after.timestamp();
    if not_after < now {
        w.push(format!(
            "{label}: certificate {path} expired on {}: renew it; clients refuse expired certificates",
            validity.not_after
        ));
    } else if not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        w.push(format!(
            "{label}: certificate {path} expires on {} (in {} days): renew it; Poplar picks up the renewed files by itself or on SIGHUP",
            validity.not_after,
            (not_after - now) / 86_400
        ));
    }
    if validity.not_before.timestamp() > now {
        w.push(format!(
            "{label}: certificate {path} is not valid before {}: check the system clock or the certificate",
            validity.not_before
        ));
    }
}

/// A configured default certificate should name `hostname`: clients without SNI, and
/// the greeting's name, get it.
fn hostname_coverage(w: &mut Vec<String>, config: &Config, names: &[(String, Vec<String>)]) {
    let host = config.hostname.as_str();
    if config.tls.cert.is_none() || host.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    let covers = |names: &[String]| names.iter().any(|n| name_matches(n, host));
    let Some((_, default_names)) = names.first().filter(|(l, _)| l == "tls.cert") else {
        return; // unreadable: already reported
    };
    if covers(default_names) {
        return;
    }
    let sni = names[1..].iter().find(|(_, n)| covers(n)).map(|(l, _)| l);
    w.push(match sni {
        Some(label) => format!(
            "hostname {host:?} is named by {label} but not by tls.cert: clients that send no SNI get a certificate they cannot verify for {host}; use a tls.cert that names {host}"
        ),
        None => format!(
            "no configured certificate names hostname {host:?} (tls.cert names {}): set hostname to the name clients connect to, or use a certificate for {host}",
            if default_names.is_empty() {
                "no DNS host".to_string()
            } else {
                default_names.join(", ")
            }
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::super::certs::tests::write_pair;
    use super::*;
    use crate::config::SniCertificate;

    const WEAK_RSA_CERT: &str = include_str!("testdata/weak-rsa1024.cert.pem");

    /// Unix time of a date.
    fn at(y: i32, m: u8, d: u8) -> i64 {
        rcgen::date_time_ymd(y, m, d).unix_timestamp()
    }

    /// A certificate for `names` valid from `from` to `until`, in `dir/<stem>.*.pem`.
    fn dated_pair(
        dir: &std::path::Path,
        stem: &str,
        names: &[&str],
        from: (i32, u8, u8),
        until: (i32, u8, u8),
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.join(format!("{stem}.cert.pem")),
            dir.join(format!("{stem}.key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn config_with(cert: std::path::PathBuf, key: std::path::PathBuf) -> Config {
        let mut config = Config {
            data_dir: "/nonexistent/poplar-data".into(),
            hostname: "mail.example.org".into(),
            ..Config::default()
        };
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
        config
    }

    fn one_matching(w: &[String], needle: &str) -> String {
        let hits: Vec<_> = w.iter().filter(|m| m.contains(needle)).collect();
        assert_eq!(
            hits.len(),
            1,
            "expected one warning with {needle:?} in {w:#?}"
        );
        hits[0].clone()
    }

    #[test]
    fn a_good_certificate_gives_no_warning() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = dated_pair(
            dir.path(),
            "good",
            &["mail.example.org"],
            (2030, 1, 1),
            (2031, 1, 1),
        );
        let w = warnings_at(&config_with(c, k), at(2030, 6, 1));
        assert!(w.is_empty(), "{w:#?}");
    }

    #[test]
    fn expired_expiring_and_not_yet_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = dated_pair(
            dir.path(),
            "c",
            &["mail.example.org"],
            (2030, 1, 1),
            (2030, 3, 1),
        );
        let config = config_with(c, k);
        let w = warnings_at(&config, at(2030, 2, 20));
        let m = one_matching(&w, "expires on");
        assert!(m.contains("in 9 days") && m.contains("renew"), "{m}");
        let w = warnings_at(&config, at(2030, 3, 2));
        assert!(one_matching(&w, "expired on").contains("renew it"));
        let w = warnings_at(&config, at(2029, 12, 1));
        assert!(one_matching(&w, "not valid before").contains("clock"));
        // 15 days ahead: quiet.
        assert!(warnings_at(&config, at(2030, 2, 14)).is_empty());
    }

    #[test]
    fn weak_rsa_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("weak.cert.pem");
        std::fs::write(&cert, WEAK_RSA_CERT).unwrap();
        let other = write_pair(dir.path(), "other", &["weak.test"]);
        let mut config = config_with(cert, other.key);
        config.hostname = "weak.test".into();
        let w = warnings_at(&config, at(2030, 1, 1));
        let m = one_matching(&w, "RSA key of 1024 bits");
        assert!(m.contains("RSA 2048+ or ECDSA"), "{m}");
        // The key given does not belong to it either.
        one_matching(&w, "does not belong");
    }

    #[test]
    fn hostname_not_named_by_the_default_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let d = write_pair(dir.path(), "d", &["other.example.org"]);
        let mut config = config_with(d.cert, d.key);
        let w = warnings_at(&config, at(2030, 1, 1));
        assert!(
            one_matching(&w, "no configured certificate names hostname").contains("set hostname")
        );

        // Named only by an SNI certificate: clients without SNI still get the wrong one.
        let s = write_pair(dir.path(), "s", &["*.example.org"]);
        config.tls.certificates = vec![SniCertificate {
            cert: s.cert,
            key: s.key,
        }];
        let w = warnings_at(&config, at(2030, 1, 1));
        assert!(
            one_matching(&w, "named by tls.certificates[0] but not by tls.cert").contains("no SNI")
        );

        config.hostname = "Other.Example.org".into();
        assert!(warnings_at(&config, at(2030, 1, 1)).is_empty());
    }

    #[test]
    fn sni_certificate_without_dns_names_and_mismatched_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let d = write_pair(dir.path(), "d", &["mail.example.org"]);
        let ip_only = write_pair(dir.path(), "ip", &["192.0.2.1"]);
        let a = write_pair(dir.path(), "a", &["a.example.org"]);
        let mut config = config_with(d.cert, d.key);
        config.tls.certificates = vec![
            SniCertificate {
                cert: ip_only.cert,
                key: ip_only.key,
            },
            SniCertificate {
                cert: a.cert,
                key: dir.path().join("d.key.pem"),
            },
            SniCertificate {
                cert: dir.path().join("missing.pem"),
                key: a.key,
            },
        ];
        let w = warnings_at(&config, at(2030, 1, 1));
        assert!(one_matching(&w, "names no DNS host").starts_with("tls.certificates[0]"));
        assert!(one_matching(&w, "does not belong").starts_with("tls.certificates[1]"));
        assert!(one_matching(&w, "cannot read certificate").starts_with("tls.certificates[2]"));
    }

    #[test]
    fn self_signed_certificate_facing_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let d = write_pair(dir.path(), "d", &["mail.example.org"]);
        let mut config = config_with(d.cert, d.key);
        assert!(warnings_at(&config, at(2030, 1, 1)).is_empty());
        config.listen.pop3s = vec!["0.0.0.0:995".parse().unwrap()];
        let w = warnings_at(&config, at(2030, 1, 1));
        assert!(one_matching(&w, "is self-signed").contains("certificate authority"));
    }

    #[test]
    fn the_self_signed_default_is_not_judged_before_it_exists() {
        let config = Config {
            data_dir: "/nonexistent/poplar-data".into(),
            ..Config::default()
        };
        assert!(warnings_at(&config, at(2030, 1, 1)).is_empty());
    }
}
