//! A relay's own trust anchors: `tls_ca_file`, a PEM file of CA certificates that a
//! relay's TLS (implicit or STARTTLS) is verified against *instead of* the public roots
//! built in (Mozilla's, from `webpki-roots`), as curl's `--cacert` does. A relay behind a
//! private CA is then trusted for that CA only, and a certificate a public CA issued for
//! its name is not.
//!
//! The file is read when the relay's client is built (at start, on an admin change or a
//! SIGHUP, and at every relay sync, so a replaced file takes effect within seconds), at
//! most [`MAX_CA_FILE_BYTES`]. Errors name the file and say what is wrong with it, never
//! what it holds: an operator who points it at the wrong file (a private key, a secret)
//! must not find that file's lines in a log or an HTTP answer.

use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use rustls_pki_types::pem::{PemObject, SectionKind};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A CA file larger than this is refused: Mozilla's whole bundle is about 220 KiB.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// A relay's CA file as last read: its path and its bytes, or why it could not be read.
/// Compared whole, so a relay's client is rebuilt when the file's contents change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCa {
    pub path: PathBuf,
    pub pem: Result<Arc<[u8]>, String>,
}

impl TlsCa {
    /// Reads `path` (bounded); a failure is kept, to be reported when the client is built.
    pub fn read(path: &Path) -> TlsCa {
        TlsCa {
            path: path.to_owned(),
            pem: read_bounded(path).map(Arc::from),
        }
    }

    /// TLS parameters for `domain` that trust this file's certificates only.
    pub fn parameters(&self, domain: &str) -> Result<TlsParameters, String> {
        let shown = self.path.display();
        let pem = self
            .pem
            .as_ref()
            .map_err(|e| format!("tls_ca_file {shown}: {e}"))?;
        let certificate = certificates(pem).map_err(|e| format!("tls_ca_file {shown}: {e}"))?;
        TlsParameters::builder(domain.to_owned())
            .certificate_store(CertificateStore::None)
            .add_root_certificate(certificate)
            .build_rustls()
            // lettre's error says only "tls error" and rustls's names the DER field at
            // fault; neither holds the file's bytes.
            .map_err(|e| {
                format!(
                    "tls_ca_file {shown}: a certificate in it cannot be a trust anchor: {}",
                    super::error_chain(&e)
                )
            })
    }
}

/// Checks that `path` is a CA file a relay can use (readable, within the size bound, PEM
/// with at least one certificate and no private key, every certificate a usable trust
/// anchor). For the pipeline file's and the admin API's checks.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    TlsCa::read(path).parameters("localhost").map(|_| ())
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(format!(
            "is over {} KiB, too large for a CA file",
            MAX_CA_FILE_BYTES / 1024
        ));
    }
    Ok(bytes)
}

/// The certificates of a PEM file as one lettre [`Certificate`] (it holds many).
fn certificates(pem: &[u8]) -> Result<Certificate, String> {
    let mut certs = 0usize;
    // The parser's own errors quote the line they stopped at: they are not passed on.
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match section {
            Ok((SectionKind::Certificate, _)) => certs += 1,
            Ok((
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey,
                _,
            )) => {
                return Err(
                    "holds a private key: give the CA's certificates only, and keep the key away \
                     from this file"
                        .to_owned(),
                );
            }
            Ok(_) => {}
            Err(_) => return Err("is not well-formed PEM".to_owned()),
        }
    }
    if certs == 0 {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Certificate::from_pem(pem).map_err(|_| "is not well-formed PEM".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = check_ca_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(
            e.starts_with("tls_ca_file /nonexistent/ca.pem: cannot be read"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused_without_its_contents() {
        let (_d, path) = with_file(b"hunter2-the-secret\n");
        let e = check_ca_file(&path).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn broken_pem_is_refused_without_its_contents() {
        let (_d, path) = with_file(
            b"-----BEGIN CERTIFICATE-----\nhunter2!!not base64\n-----END CERTIFICATE-----\n",
        );
        let e = check_ca_file(&path).unwrap_err();
        assert!(e.contains("tls_ca_file") && e.contains("ca.pem"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_private_key_is_refused_without_its_contents() {
        let (_d, path) =
            with_file(b"-----BEGIN PRIVATE KEY-----\naHVudGVyMg==\n-----END PRIVATE KEY-----\n");
        let e = check_ca_file(&path).unwrap_err();
        assert!(e.contains("holds a private key"), "{e}");
        assert!(!e.contains("aHVudGVyMg"), "{e}");
    }

    #[test]
    fn a_certificate_that_is_not_der_is_no_trust_anchor() {
        // Valid base64, not a certificate.
        let (_d, path) =
            with_file(b"-----BEGIN CERTIFICATE-----\naHVudGVyMg==\n-----END CERTIFICATE-----\n");
        let e = check_ca_file(&path).unwrap_err();
        assert!(e.contains("cannot be a trust anchor"), "{e}");
        assert!(!e.contains("aHVudGVyMg") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_huge_file_is_refused() {
        let (_d, path) = with_file(&vec![b'a'; MAX_CA_FILE_BYTES as usize + 1]);
        let e = check_ca_file(&path).unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}
