//! STARTTLS (RFC 3207), and the server certificate: from files, or self-signed at first
//! start and kept in the data directory.
//!
//! Bytes the client sent after `STARTTLS` but before the handshake are discarded, so a
//! command injected in plaintext is never executed inside the TLS session.

use super::reply::{self, Reply};
use super::session::{Session, SessionError};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Errors loading or creating the certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path}: no certificate or private key found in PEM")]
    Pem { path: String },
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// An acceptor from PEM `cert` and `key` files, or, when `None`, from
/// `<data_dir>/smtp-cert.pem` and `smtp-key.pem`, created self-signed for `hostname` if missing.
pub fn acceptor(
    cert_key: Option<(&Path, &Path)>,
    data_dir: &Path,
    hostname: &str,
) -> Result<TlsAcceptor, TlsSetupError> {
    let (cert_path, key_path) = match cert_key {
        Some((c, k)) => (c.to_owned(), k.to_owned()),
        None => {
            let (c, k) = (data_dir.join("smtp-cert.pem"), data_dir.join("smtp-key.pem"));
            if !c.exists() || !k.exists() {
                generate(&c, &k, hostname)?;
            }
            (c, k)
        }
    };
    let read =
        |p: &Path| std::fs::read(p).map_err(|source| TlsSetupError::Read { path: p.display().to_string(), source });
    let (cert_pem, key_pem) = (read(&cert_path)?, read(&key_path)?);
    let pem_err = |p: &Path| TlsSetupError::Pem { path: p.display().to_string() };
    let certs: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<rustls::pki_types::CertificateDer<'static>>, _>>()
        .map_err(|_| pem_err(&cert_path))?;
    if certs.is_empty() {
        return Err(pem_err(&cert_path));
    }
    let key = <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(&key_pem)
        .map_err(|_| pem_err(&key_path))?;
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn generate(cert: &Path, key: &Path, hostname: &str) -> Result<(), TlsSetupError> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_owned()])?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| TlsSetupError::Write { path: dir.display().to_string(), source })?;
    }
    let write = |p: &Path, text: String| {
        std::fs::write(p, text).map_err(|source| TlsSetupError::Write { path: p.display().to_string(), source })
    };
    write(key, ck.signing_key.serialize_pem())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600));
    }
    write(cert, ck.cert.pem())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed SMTP certificate");
    Ok(())
}

impl Session {
    pub(super) async fn starttls(&mut self) -> Result<Reply, SessionError> {
        if self.tls {
            return Ok(reply::bad_sequence("TLS already active"));
        }
        let Some(acceptor) = self.server.tls.clone() else {
            return Ok(Reply::refuse(454, "tls_unavailable", "4.7.0 TLS not available"));
        };
        self.send(Reply::new(220, "2.0.0 Ready to start TLS"));
        self.flush().await?;
        if !self.buf.is_empty() {
            // RFC 3207 §5 / CVE-2011-0411: never act on plaintext pipelined past STARTTLS.
            metrics::counter!("herald_smtp_ingest_refusals_total", "reason" => "starttls_pipelined").increment(1);
            self.buf.clear();
        }
        let io = self.io.take().ok_or(SessionError::Ended)?;
        let tls = tokio::time::timeout(self.server.settings.command_timeout, acceptor.accept(io))
            .await
            .map_err(|_| SessionError::Tls(std::io::ErrorKind::TimedOut.into()))?
            .map_err(SessionError::Tls)?;
        self.io = Some(Box::new(tls));
        self.tls = true;
        self.helo = None;
        self.authenticated = None;
        self.tx = None;
        // Nothing is answered until the client speaks again, inside TLS.
        Ok(Reply::silent())
    }
}
