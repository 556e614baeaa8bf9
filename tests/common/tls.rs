//! A throwaway self-signed certificate for the HTTPS tests, and clients that trust only it.
#![allow(dead_code)]

use std::path::PathBuf;

use base64::Engine;
use rcgen::PublicKeyData;
use sha2::Digest;

/// A certificate for `127.0.0.1` and `localhost`, its key, both as PEM files.
pub struct TestCert {
    _dir: tempfile::TempDir,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub cert_pem: String,
    /// base64 of the SHA-256 of the public key (Chromium's `--ignore-certificate-errors-spki-list`).
    pub spki_sha256: String,
}

impl TestCert {
    /// A fresh certificate and key.
    pub fn new() -> TestCert {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        let cert_pem = ck.cert.pem();
        std::fs::write(&cert_file, &cert_pem).unwrap();
        std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
        let spki = ck.signing_key.subject_public_key_info();
        TestCert {
            _dir: dir,
            cert_file,
            key_file,
            cert_pem,
            spki_sha256: base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(&spki)),
        }
    }

    /// The `[server.tls]` section naming these files.
    pub fn server_toml(&self) -> String {
        format!(
            "[server.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            self.cert_file.display().to_string(),
            self.key_file.display().to_string()
        )
    }
}
