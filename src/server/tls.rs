//! tonegate's own TLS: a rustls acceptor built from PEM certificate and key files.
//!
//! Only TLS 1.2 and 1.3 with rustls' default (ring) cipher suites; ALPN offers HTTP/2 and
//! HTTP/1.1. The files are read once at start-up: a renewed certificate takes a restart (or a
//! reload by the service manager), which is how certbot-style renewals drive most daemons.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The acceptor for `[server.tls]`; the error names the file and what was wrong with it.
pub fn acceptor(tls: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let certs = certificates(&tls.cert_file)?;
    let key = private_key(&tls.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "server.tls: the key in {} does not fit the certificate in {}",
                tls.key_file.display(),
                tls.cert_file.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
        let a = acceptor(&tls).unwrap();
        assert_eq!(
            a.config().alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
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
