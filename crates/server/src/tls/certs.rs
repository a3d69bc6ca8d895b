//! Certificates and keys: loading one pair, and the set the handshake chooses from by
//! SNI (RFC 6066 section 3).
//!
//! The set sits behind an [`ArcSwap`], so a reload replaces it in one atomic store while
//! handshakes read it without a lock; a handshake already under way keeps the
//! certificate it was given.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// Where one certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// The setting it comes from, for messages: `tls.cert` or `tls.certificates[N]`.
    pub label: String,
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// A certificate chain with its key, ready for handshakes.
#[derive(Clone)]
pub struct LoadedCert {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
    /// The leaf's SAN DNS names, lower-cased (wildcards kept as `*.example.org`).
    pub names: Vec<String>,
    /// SHA-256 of the leaf certificate, as colon-separated hex.
    pub fingerprint: String,
}

/// Reads a certificate chain and its key and checks that they belong together.
///
/// Error messages name the files and what went wrong, never key material.
pub fn load_pair(source: &CertSource, provider: &CryptoProvider) -> anyhow::Result<LoadedCert> {
    let (label, cert_path, key_path) = (&source.label, &source.cert, &source.key);
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(pem_error)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>().map_err(pem_error))
        .with_context(|| format!("{label}: reading certificate {}", cert_path.display()))?;
    let Some(leaf) = chain.first() else {
        bail!("{label}: no certificate in {}", cert_path.display());
    };
    let names = dns_names(leaf)
        .with_context(|| format!("{label}: parsing certificate {}", cert_path.display()))?;
    let fingerprint = super::hex_colon(&Sha256::digest(leaf.as_ref()));
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(pem_error)
        .with_context(|| format!("{label}: reading private key {}", key_path.display()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| anyhow!("unsupported or malformed private key"))
        .with_context(|| format!("{label}: loading private key {}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    // `CertifiedKey::from_der` lets an unknown consistency through; we insist on a match,
    // so a renewal that swapped only one of the two files is refused, not served.
    certified.keys_match().map_err(|_| {
        anyhow!(
            "{label}: the private key {} does not belong to the certificate {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(LoadedCert {
        certified: Arc::new(certified),
        names,
        fingerprint,
    })
}

/// PEM errors without the bytes they may quote: a key file's contents stay out of logs.
fn pem_error(e: pem::Error) -> anyhow::Error {
    match e {
        pem::Error::Io(e) => anyhow::Error::new(e),
        pem::Error::NoItemsFound => anyhow!("no PEM item of the expected kind found"),
        _ => anyhow!("malformed PEM"),
    }
}

/// The SAN DNS names of a certificate, lower-cased.
pub fn dns_names(cert: &CertificateDer<'_>) -> anyhow::Result<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| anyhow!("{e}"))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| anyhow!("{e}"))?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Whether a certificate name (`mail.example.org` or `*.example.org`) covers `host`.
/// Case-insensitive; a wildcard stands for exactly one whole left-most label.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    let host = normalize_host(host);
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Every certificate the server may present, indexed by name.
pub struct CertSet {
    default: LoadedCert,
    extra: Vec<LoadedCert>,
    /// Exact names; the first configured certificate naming one wins.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.org` stored as `example.org`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    /// The default certificate (for clients without SNI or with an unknown name) and
    /// the certificates chosen by name.
    pub fn new(default: LoadedCert, extra: Vec<LoadedCert>) -> Self {
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for cert in &extra {
            for name in &cert.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(suffix) => (&mut wildcard, suffix.to_string()),
                    None => (&mut exact, name.clone()),
                };
                map.entry(key).or_insert_with(|| cert.certified.clone());
            }
        }
        Self {
            default,
            extra,
            exact,
            wildcard,
        }
    }

    /// The certificate for a client that asked for `sni`: an exact name first, then a
    /// wildcard one label up, else the default.
    pub fn select(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(host) = sni.map(normalize_host) else {
            return &self.default.certified;
        };
        if let Some(cert) = self.exact.get(&host) {
            return cert;
        }
        host.split_once('.')
            .filter(|(label, _)| !label.is_empty())
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default.certified)
    }

    /// The default certificate.
    pub fn default_cert(&self) -> &LoadedCert {
        &self.default
    }

    /// The certificates chosen by SNI, in configuration order.
    pub fn extra(&self) -> &[LoadedCert] {
        &self.extra
    }
}

impl fmt::Debug for CertSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSet")
            .field("default", &self.default.fingerprint)
            .field(
                "extra",
                &self
                    .extra
                    .iter()
                    .map(|c| &c.fingerprint)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// rustls' hook into the current [`CertSet`].
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertSet>,
}

impl CertResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> Self {
        Self {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// The set handshakes use now.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// Replaces the set for every later handshake.
    pub fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .load()
                .select(client_hello.server_name())
                .clone(),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        super::super::provider()
    }

    /// A self-signed certificate for `names`, written to `dir/<stem>.{cert,key}.pem`.
    pub(crate) fn write_pair(dir: &std::path::Path, stem: &str, names: &[&str]) -> CertSource {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        let source = CertSource {
            label: stem.into(),
            cert: dir.join(format!("{stem}.cert.pem")),
            key: dir.join(format!("{stem}.key.pem")),
        };
        std::fs::write(&source.cert, generated.cert.pem()).unwrap();
        std::fs::write(&source.key, generated.signing_key.serialize_pem()).unwrap();
        source
    }

    #[test]
    fn names_match_exactly_or_by_one_wildcard_label() {
        assert!(name_matches("mail.example.org", "MAIL.Example.org."));
        assert!(name_matches("*.example.org", "pop.example.org"));
        assert!(name_matches("*.EXAMPLE.org", "Pop.example.ORG"));
        assert!(!name_matches("*.example.org", "example.org"));
        assert!(!name_matches("*.example.org", "a.b.example.org"));
        assert!(!name_matches("*.example.org", ".example.org"));
        assert!(!name_matches("mail.example.org", "mail.example.net"));
    }

    #[test]
    fn selects_by_sni_with_default_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let p = provider();
        let default = load_pair(&write_pair(dir.path(), "d", &["localhost"]), &p).unwrap();
        let one = load_pair(
            &write_pair(dir.path(), "one", &["mail.one.test", "*.one.test"]),
            &p,
        )
        .unwrap();
        let two = load_pair(&write_pair(dir.path(), "two", &["pop.two.test"]), &p).unwrap();
        // A later certificate naming the same host does not take it over.
        let three = load_pair(&write_pair(dir.path(), "three", &["pop.two.test"]), &p).unwrap();
        assert_eq!(one.names, ["mail.one.test", "*.one.test"]);
        let set = CertSet::new(default.clone(), vec![one.clone(), two.clone(), three]);
        let is = |sni: Option<&str>, want: &LoadedCert| {
            assert!(
                Arc::ptr_eq(set.select(sni), &want.certified),
                "wrong certificate for {sni:?}"
            );
        };
        is(None, &default);
        is(Some("mail.one.test"), &one);
        is(Some("MAIL.ONE.TEST."), &one);
        is(Some("x.one.test"), &one);
        is(Some("one.test"), &default);
        is(Some("a.b.one.test"), &default);
        is(Some("pop.two.test"), &two);
        is(Some("other.example"), &default);
        assert_eq!(set.extra().len(), 3);
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["a.test"]);
        let b = write_pair(dir.path(), "b", &["b.test"]);
        let mixed = CertSource {
            label: "tls.certificates[0]".into(),
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let err = format!("{:#}", load_pair(&mixed, &provider()).err().unwrap());
        assert!(err.contains("does not belong"), "{err}");
        assert!(err.starts_with("tls.certificates[0]"), "{err}");
    }

    #[test]
    fn errors_never_quote_the_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a", &["a.test"]);
        let key = std::fs::read_to_string(&a.key).unwrap();
        // Break the PEM body so parsing fails part-way through the key.
        let broken: String = key.replace('A', "!");
        std::fs::write(&a.key, &broken).unwrap();
        let err = format!("{:#}", load_pair(&a, &provider()).err().unwrap());
        for line in broken.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!err.contains(line), "error quotes key material: {err}");
        }
        std::fs::write(&a.key, "").unwrap();
        let err = format!("{:#}", load_pair(&a, &provider()).err().unwrap());
        assert!(err.contains("private key"), "{err}");
    }
}
