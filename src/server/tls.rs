//! tonegate's own TLS: a rustls acceptor built from PEM certificate and key files.
//!
//! Only TLS 1.2 and 1.3 with rustls' default (ring) cipher suites; ALPN offers HTTP/2 and
//! HTTP/1.1. The files are read at start-up and again on SIGHUP ([`Certificate::reload`]):
//! the acceptor asks a resolver for the certificate at each handshake, so a renewed one
//! reaches new connections while open ones carry on with theirs.

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio_rustls::rustls;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The acceptor for `[server.tls]` and the certificate it serves; the error names the file
/// and what was wrong with it.
pub fn acceptor(tls: &TlsConfig) -> anyhow::Result<(TlsAcceptor, Arc<Certificate>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (key, loaded) = load(tls, &provider)?;
    tracing::info!(subject = %loaded.subject, not_after = %loaded.not_after, file = %tls.cert_file.display(), "TLS certificate loaded");
    let certificate = Arc::new(Certificate {
        files: tls.clone(),
        provider: provider.clone(),
        current: RwLock::new(Arc::new(key)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(certificate.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((TlsAcceptor::from(Arc::new(config)), certificate))
}

/// The certificate and key the listener serves, replaced whole by [`Certificate::reload`].
#[derive(Debug)]
pub struct Certificate {
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    // Read once per handshake, written once per reload: a lock costs nothing here.
    current: RwLock<Arc<CertifiedKey>>,
}

/// What a certificate file held, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The leaf certificate's subject.
    pub subject: String,
    /// The end of its validity.
    pub not_after: String,
}

impl Certificate {
    /// Reads the files again; if they hold a certificate chain and the key that fits it, new
    /// handshakes get them from now on. Otherwise the one served so far stays, and the error
    /// says why.
    pub fn reload(&self) -> anyhow::Result<Loaded> {
        let (key, loaded) = load(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(loaded)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The certificate chain and key in `tls`'s files, checked to fit each other.
fn load(tls: &TlsConfig, provider: &CryptoProvider) -> anyhow::Result<(CertifiedKey, Loaded)> {
    let certs = certificates(&tls.cert_file)?;
    let loaded = describe(&certs[0]).with_context(|| {
        format!(
            "server.tls.cert_file: the first certificate in {} is not X.509",
            tls.cert_file.display()
        )
    })?;
    let key = private_key(&tls.key_file)?;
    let key = CertifiedKey::from_der(certs, key, provider).with_context(|| {
        format!(
            "server.tls: the key in {} does not fit the certificate in {}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })?;
    Ok((key, loaded))
}

/// The subject and end of validity of a DER certificate.
fn describe(der: &CertificateDer<'_>) -> anyhow::Result<Loaded> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Loaded {
        subject: cert.subject().to_string(),
        not_after: cert
            .validity()
            .not_after
            .to_rfc2822()
            .unwrap_or_else(|_| cert.validity().not_after.to_string()),
    })
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("server.tls.cert_file: reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| {
            format!(
                "server.tls.cert_file: {} is not a PEM certificate chain",
                path.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "server.tls.cert_file: {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
        path.display()
    );
    Ok(certs)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| {
        format!(
            "server.tls.key_file: {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn a_matching_pair_loads_and_offers_h2_then_http1() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let tls = TlsConfig {
            cert_file: write(dir.path(), "c.pem", &ck.cert.pem()),
            key_file: write(dir.path(), "k.pem", &ck.signing_key.serialize_pem()),
        };
        let (a, _) = acceptor(&tls).unwrap();
        assert_eq!(
            a.config().alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_reload_serves_a_good_new_pair_and_keeps_the_old_one_for_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let old = rcgen::generate_simple_self_signed(vec!["old.example".into()]).unwrap();
        let new = rcgen::generate_simple_self_signed(vec!["new.example".into()]).unwrap();
        let tls = TlsConfig {
            cert_file: write(dir.path(), "c.pem", &old.cert.pem()),
            key_file: write(dir.path(), "k.pem", &old.signing_key.serialize_pem()),
        };
        let (_, served) = acceptor(&tls).unwrap();
        let leaf = || served.current.read().unwrap().cert[0].clone();
        assert_eq!(leaf().as_ref(), old.cert.der().as_ref());
        write(dir.path(), "c.pem", &new.cert.pem());
        write(dir.path(), "k.pem", &new.signing_key.serialize_pem());
        let loaded = served.reload().unwrap();
        assert!(
            loaded.subject.contains("rcgen self signed cert"),
            "{loaded:?}"
        );
        assert!(!loaded.not_after.is_empty());
        assert_eq!(leaf().as_ref(), new.cert.der().as_ref());
        // A half-written renewal (the old certificate beside the new key), then junk.
        write(dir.path(), "c.pem", &old.cert.pem());
        let err = format!("{:#}", served.reload().unwrap_err());
        assert!(err.contains("does not fit"), "{err}");
        write(dir.path(), "c.pem", "not pem");
        assert!(served.reload().is_err());
        assert_eq!(
            leaf().as_ref(),
            new.cert.der().as_ref(),
            "the good one stays"
        );
    }

    #[test]
    fn bad_files_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = write(dir.path(), "c.pem", &ck.cert.pem());
        let key = write(dir.path(), "k.pem", &ck.signing_key.serialize_pem());
        let cases = [
            (
                dir.path().join("missing.pem"),
                key.clone(),
                "server.tls.cert_file",
            ),
            (
                write(dir.path(), "junk.pem", "not pem"),
                key.clone(),
                "server.tls.cert_file",
            ),
            (key.clone(), key.clone(), "server.tls.cert_file"),
            (cert.clone(), cert.clone(), "server.tls.key_file"),
            (
                cert.clone(),
                write(dir.path(), "o.pem", &other.signing_key.serialize_pem()),
                "does not fit",
            ),
        ];
        for (cert_file, key_file, says) in cases {
            let err = acceptor(&TlsConfig {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })
            .err()
            .unwrap_or_else(|| panic!("{cert_file:?} + {key_file:?} was accepted"));
            let msg = format!("{err:#}");
            assert!(msg.contains(says), "{cert_file:?} + {key_file:?}: {msg}");
        }
    }
}
