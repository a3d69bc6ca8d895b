//! TLS for both listeners: rustls with TLS 1.2 and 1.3 only, forward-secret AEAD
//! suites only, aws-lc-rs as the one crypto provider, ALPN `pop3` (RFC 8314 section 7.4
//! reserves it for POP3 over TLS), a certificate chosen by SNI (RFC 6066 section 3) and
//! certificates reloaded without a restart (see [`store`]).
//!
//! With no certificate configured, a self-signed ECDSA P-256 certificate for
//! `localhost`, `127.0.0.1`, `::1` and the configured host name is made once into the data
//! folder; its key file is created with mode 0600.

mod certs;
pub mod check;
mod store;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::{ServerConfig, SupportedCipherSuite};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use sha2::{Digest as _, Sha256};

pub use certs::{CertSet, CertSource, LoadedCert, name_matches};
pub use store::{CertStore, sources};

use crate::config::Config;

/// A ready TLS setup.
pub struct TlsSetup {
    /// The rustls configuration shared by every POP3 connection.
    pub config: Arc<ServerConfig>,
    /// The security page's: the same certificates (and their reloads), HTTP/1.1 by
    /// ALPN, no client certificates.
    pub web_config: Arc<ServerConfig>,
    /// The certificates it serves, and their reload.
    pub store: Arc<CertStore>,
    /// SHA-256 of the default leaf certificate at start, as colon-separated hex.
    pub fingerprint: String,
    /// Where the default certificate came from.
    pub cert_path: PathBuf,
}

/// The cipher suites Poplar offers, pinned here rather than taken from the provider's
/// default so that a dependency update cannot widen them unnoticed.
///
/// rustls implements no CBC, RC4, 3DES, NULL or EXPORT suite and no static-RSA key
/// exchange at all; aws-lc-rs' default list (rustls 0.23.46) is exactly the nine
/// below. TLS 1.3 suites are all AEAD with (EC)DHE; for TLS 1.2 only ECDHE with AES-GCM
/// or ChaCha20-Poly1305 remains, so every session has forward secrecy. AES-256 comes
/// first; a client without AES hardware may still choose ChaCha20.
pub fn cipher_suites() -> Vec<SupportedCipherSuite> {
    use aws_lc_rs::cipher_suite as cs;
    vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// aws-lc-rs with [`cipher_suites`]; its key exchange groups are kept (X25519MLKEM768
/// first, then X25519, P-256, P-384: all ephemeral).
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: cipher_suites(),
        ..aws_lc_rs::default_provider()
    }
}

/// What would stop the TLS listeners from starting, checked without starting them and
/// without making anything: every configured certificate and key (not the self-signed
/// default, made on first start) and the client CA. One line per problem.
pub fn check(config: &Config) -> Vec<String> {
    let provider = provider();
    let mut problems = Vec::new();
    let configured = config.tls.cert.is_some() && config.tls.key.is_some();
    for (i, source) in sources(config).iter().enumerate() {
        if i == 0 && !configured {
            continue;
        }
        // The error names the setting (`tls.cert`, `tls.certificates[N]`) itself.
        if let Err(e) = certs::load_pair(source, &provider) {
            problems.push(format!("{e:#}"));
        }
    }
    if let Some(ca) = &config.tls.client_ca
        && let Err(e) = client_roots(ca)
    {
        problems.push(format!("{e:#}"));
    }
    problems
}

/// The client CA bundle as the verifier takes it (`serve` and `config check` alike):
/// every certificate read, parsed and accepted as a trust anchor, at least one.
fn client_roots(ca: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("tls.client_ca: reading {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("tls.client_ca: parsing {}", ca.display()))?)
            .with_context(|| format!("tls.client_ca {}", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("tls.client_ca {}: no certificate in it", ca.display());
    }
    Ok(roots)
}

/// Loads the configured certificates (making the self-signed one on first start) and
/// builds the rustls configuration around them.
pub fn load(config: &Config) -> anyhow::Result<TlsSetup> {
    let provider = Arc::new(provider());
    let store = Arc::new(CertStore::open(config, provider.clone())?);
    let current = store.current();
    let fingerprint = current.default_cert().fingerprint.clone();
    let cert_path = sources(config)[0].cert.clone();
    let mut web = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&VERSIONS)
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(store.resolver());
    web.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsSetup {
        config: pop3_config(config, &store)?,
        web_config: Arc::new(web),
        store,
        fingerprint,
        cert_path,
    })
}

/// TLS 1.3 and 1.2, nothing older.
const VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

/// The POP3 listeners' rustls configuration: `store`'s certificates, ALPN `pop3`, and
/// client certificates checked against `tls.client_ca` when set. Built again when a
/// reload changes the client CA.
pub(crate) fn pop3_config(config: &Config, store: &CertStore) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = store.provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&VERSIONS)
        .context("TLS protocol versions")?;
    let builder = match &config.tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = client_roots(ca)?;
            // Optional: clients without a certificate still use passwords or tokens.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_cert_resolver(store.resolver());
    server.alpn_protocols = vec![b"pop3".to_vec()];
    Ok(Arc::new(server))
}

pub(crate) fn self_signed(
    dir: &Path,
    cert: &Path,
    key: &Path,
    hostname: &str,
) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
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
    fn suites_are_tls13_or_tls12_ecdhe_aead() {
        let suites = cipher_suites();
        assert_eq!(suites.len(), 9);
        for suite in &suites {
            let name = format!("{:?}", suite.suite());
            let tls13 = suite.version().version == rustls::ProtocolVersion::TLSv1_3;
            let aead = name.contains("_GCM_") || name.contains("_CHACHA20_POLY1305_");
            assert!(aead && !name.contains("CBC"), "{name}");
            assert!(tls13 || name.starts_with("TLS_ECDHE_"), "{name}");
        }
        // Every pinned suite exists in the provider: a rename upstream fails here.
        let available = aws_lc_rs::ALL_CIPHER_SUITES;
        assert!(suites.iter().all(|s| available.contains(s)));
        // What the provider would offer by default is no wider than our list: if a
        // new default appears, decide about it here.
        for s in aws_lc_rs::DEFAULT_CIPHER_SUITES {
            assert!(suites.contains(s), "new provider default {:?}", s.suite());
        }
    }

    #[test]
    fn server_config_pins_versions_suites_and_alpn() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let setup = load(&config).unwrap();
        assert_eq!(setup.config.alpn_protocols, vec![b"pop3".to_vec()]);
        assert_eq!(
            setup.config.crypto_provider().cipher_suites,
            cipher_suites()
        );
        assert_eq!(setup.cert_path, dir.path().join("tls/cert.pem"));
    }

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
