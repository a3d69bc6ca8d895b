//! The benchmark's TLS client: rustls with the aws-lc-rs provider.
//!
//! `--cafile none` accepts any certificate (see [`Verifier`]) but still verifies the
//! handshake signature with the server's key, so the client does the same public-key
//! work as a verifying client (and as OpenSSL with `CERT_NONE`). Session resumption is
//! off unless asked for: every benchmark connection then costs a full handshake, as for
//! a client that polls every few minutes.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier, verify_server_name};
use rustls::crypto::{WebPkiSupportedAlgorithms, aws_lc_rs};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

/// TLS options from the command line.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// CA or self-signed certificate (PEM) to verify the server against; `None`: accept any.
    pub cafile: Option<String>,
    /// Server name sent in SNI and checked against the certificate.
    pub sni: String,
    /// `Some("TLSv1_2")` or `Some("TLSv1_3")` pins the protocol version.
    pub tls_max: Option<String>,
    /// Offer only classical key exchange groups (X25519, P-256), no ML-KEM hybrid.
    pub classical_kx: bool,
    /// Keep rustls' in-memory session cache (resumed handshakes after the first).
    pub resume: bool,
}

/// A ready connector and the server name to present.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl Tls {
    pub fn new(opts: &TlsOptions) -> anyhow::Result<Self> {
        let mut provider = aws_lc_rs::default_provider();
        if opts.classical_kx {
            provider.kx_groups = vec![aws_lc_rs::kx_group::X25519, aws_lc_rs::kx_group::SECP256R1];
        }
        // Seed aws-lc's entropy pool now (jitter entropy takes tens of milliseconds on
        // first use) so the first measured handshake does not pay for it.
        provider
            .secure_random
            .fill(&mut [0u8; 32])
            .map_err(|_| anyhow::anyhow!("the TLS provider has no random source"))?;
        let provider = Arc::new(provider);
        let versions: &[&rustls::SupportedProtocolVersion] = match opts.tls_max.as_deref() {
            None => rustls::DEFAULT_VERSIONS,
            Some("TLSv1_2") => &[&rustls::version::TLS12],
            Some("TLSv1_3") => &[&rustls::version::TLS13],
            Some(other) => bail!("--tls-max {other}: expected TLSv1_2 or TLSv1_3"),
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .context("TLS protocol versions")?;
        let verifier = match &opts.cafile {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let mut pinned = Vec::new();
                for cert in CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("reading CA file {path}"))?
                {
                    let cert = cert.with_context(|| format!("parsing CA file {path}"))?;
                    roots
                        .add(cert.clone())
                        .with_context(|| format!("adding a certificate of {path}"))?;
                    pinned.push(cert);
                }
                if roots.is_empty() {
                    bail!("no certificate in {path}");
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .context("building the certificate verifier")?;
                Verifier {
                    pinned,
                    webpki: Some(webpki),
                    algorithms: provider.signature_verification_algorithms,
                }
            }
            None => Verifier {
                pinned: Vec::new(),
                webpki: None,
                algorithms: provider.signature_verification_algorithms,
            },
        };
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        if !opts.resume {
            config.resumption = Resumption::disabled();
        }
        let server_name = ServerName::try_from(opts.sni.clone())
            .with_context(|| format!("--sni {}: not a DNS name or IP address", opts.sni))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// Checks the server's certificate against `--cafile`, or accepts any with `none`.
///
/// A certificate that is byte-for-byte one of the `--cafile` certificates is trusted
/// directly (a pinned self-signed certificate, as OpenSSL treats it) with only its
/// name checked: webpki refuses self-signed certificates that say `CA:TRUE`, which
/// is what `openssl req -x509` makes (the Dovecot peer's). Anything else goes through
/// webpki path validation. The handshake signature is always verified, so the client
/// does the same public-key work whatever the mode.
#[derive(Debug)]
struct Verifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
