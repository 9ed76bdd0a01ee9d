//! The submission listeners' certificate and key (`[submission] tls_cert_file`,
//! `tls_key_file`): read as PEM, at most [`MAX_PEM_BYTES`] each, into a rustls server
//! configuration, and read again on demand (SIGHUP), so a renewed certificate takes
//! effect without a restart. A file that no longer loads leaves the last good one in
//! use. Errors name the file and what is wrong, never what it holds (a key file's lines
//! must not reach a log).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// A certificate chain or key file larger than this is refused (a chain of a few
/// certificates is a few KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_bounded(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let file =
        std::fs::File::open(path).map_err(|e| format!("{what} {shown}: cannot be read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{what} {shown}: cannot be read: {e}"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{what} {shown}: over {} KiB, too large for a PEM file",
            MAX_PEM_BYTES / 1024
        ));
    }
    Ok(bytes)
}

/// A rustls server configuration presenting `cert` (a PEM chain, leaf first) with `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let pem = read_bounded("tls_cert_file", cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!(
                "tls_cert_file {}: not a PEM file of certificates",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "tls_cert_file {}: no certificate (-----BEGIN CERTIFICATE-----) in it",
            cert.display()
        ));
    }
    let pem = read_bounded("tls_key_file", key)?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "tls_key_file {}: no private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        // rustls says what does not fit (a key that is not the certificate's, an
        // unsupported algorithm), not the bytes.
        .map_err(|e| {
            format!(
                "tls_cert_file {} and tls_key_file {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// The listeners' TLS, replaced whole by [`Certificates::reload`].
pub struct Certificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<TlsAcceptor>,
}

impl Certificates {
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, String> {
        Ok(Certificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(TlsAcceptor::from(server_config(cert, key)?)),
        })
    }

    /// What a new connection is served with; one already in TLS keeps what it had.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the files again; on an error the last good configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let fresh = TlsAcceptor::from(server_config(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }
}
