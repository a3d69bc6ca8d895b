//! TLS for both listeners: rustls with TLS 1.2 and 1.3 only, aws-lc-rs as the one
//! crypto provider, ALPN `pop3` (RFC 8314 section 7.4 reserves it for POP3 over TLS).
//!
//! With no certificate configured, a self-signed ECDSA P-256 certificate for
//! `localhost`, `127.0.0.1` and the configured host name is made once into the data
//! folder; its key file is created with mode 0600.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use crate::config::Config;

/// A ready TLS setup.
pub struct TlsSetup {
    /// The rustls configuration shared by every connection.
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, as colon-separated hex.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
}

/// Loads the configured certificate, or makes the self-signed one on first start.
pub fn load(config: &Config) -> anyhow::Result<TlsSetup> {
    let (cert_path, key_path) = match (&config.tls.cert, &config.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                self_signed(&dir, &c, &k, &config.hostname)?;
            }
            (c, k)
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading certificate {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        bail!("no certificate in {}", cert_path.display());
    };
    let fingerprint = hex_colon(&Sha256::digest(leaf.as_ref()));
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading private key {}", key_path.display()))?;
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?;
    let builder = match &config.tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("reading client CA {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("parsing client CA {}", ca.display()))?)
                    .with_context(|| format!("client CA {}", ca.display()))?;
            }
            // Optional: clients without a certificate still use passwords or tokens.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    server.alpn_protocols = vec![b"pop3".to_vec()];
    Ok(TlsSetup {
        config: Arc::new(server),
        fingerprint,
        cert_path,
    })
}

fn self_signed(dir: &Path, cert: &Path, key: &Path, hostname: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !names.iter().any(|n| n == hostname) {
        names.push(hostname.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    let mut key_file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("creating {}", key.display()))?;
    key_file.write_all(generated.signing_key.serialize_pem().as_bytes())?;
    key_file.sync_all()?;
    fs::write(cert, generated.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    Ok(())
}

/// A fingerprint as upper-case hex pairs joined by colons; `None` unless it is 32 bytes.
pub fn normalize_fingerprint(text: &str) -> Option<String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    Some(hex_colon(&bytes))
}

/// The user a verified client certificate names under `rule`, or why none.
pub fn client_identity(
    cert: &CertificateDer<'_>,
    rule: crate::config::ClientIdentity,
    revoked: &[String],
) -> Result<String, &'static str> {
    use crate::config::ClientIdentity;
    use x509_parser::extensions::GeneralName;
    let fingerprint = hex_colon(&Sha256::digest(cert.as_ref()));
    if revoked
        .iter()
        .any(|r| normalize_fingerprint(r).as_deref() == Some(fingerprint.as_str()))
    {
        return Err("certificate_revoked");
    }
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| "certificate_unparsable")?;
    let name = match rule {
        ClientIdentity::SubjectCn => parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        ClientIdentity::SanEmail | ClientIdentity::SanDns => parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value
                    .general_names
                    .iter()
                    .find_map(|n| match (rule, n) {
                        (ClientIdentity::SanEmail, GeneralName::RFC822Name(e)) => {
                            Some(e.to_string())
                        }
                        (ClientIdentity::SanDns, GeneralName::DNSName(d)) => Some(d.to_string()),
                        _ => None,
                    })
            }),
    };
    name.ok_or("certificate_without_identity")
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_self_signed_certificate_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let first = load(&config).unwrap();
        let second = load(&config).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        let mode = fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
