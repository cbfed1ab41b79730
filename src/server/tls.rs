//! TLS where a link leaves the box: the certificate the daemon serves HTTPS and WSS with (read
//! from the config's files, swapped whole when SIGHUP re-reads them) and the MQTT client's trust
//! and identity (a CA file, a client certificate). ring is the provider, as everywhere in the
//! tree (it cross-compiles with the C compiler the OpenCV build needs anyway).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate or key file that TLS cannot use (the daemon's HTTPS, the MQTT client's).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: std::path::PathBuf },
    #[error("{path}: no PEM private key in it (-----BEGIN PRIVATE KEY-----, RSA or EC)")]
    NoKey { path: std::path::PathBuf },
    #[error("{path}: not usable PEM: {reason}")]
    Pem {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{path}: the certificate cannot be used: {reason}")]
    BadCertificate {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{path}: the private key cannot be used: {reason}")]
    BadKey {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("the key {key} does not belong to the certificate {cert} (their public keys differ)")]
    Mismatch {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    #[error("no system certificate authorities found to check the broker with; set mqtt.ca_file")]
    NoSystemRoots,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file, in order; at least one.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })
}

/// A certificate chain and its key, checked to belong together.
fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert)?;
    let signing = provider()
        .key_provider
        .load_private_key(read_key(key)?)
        .map_err(|e| TlsError::BadKey {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        // Unknown: a key type whose public half rustls cannot derive; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
        Err(e) => Err(TlsError::BadCertificate {
            path: cert.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The certificate the daemon serves, from `server.tls_cert` and `server.tls_key`. A reload
/// replaces it whole for the handshakes that follow; connections already open keep theirs. A
/// reload that fails keeps the one in use.
#[derive(Debug)]
pub(crate) struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// Reads and checks the two files.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<ServerCert, TlsError> {
        Ok(ServerCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified_key(cert, key)?)),
        })
    }

    /// The certificate of `server.tls_cert` and `server.tls_key`, when they are set.
    pub(crate) fn from_config(
        s: &crate::config::ServerConfig,
    ) -> Result<Option<Arc<ServerCert>>, TlsError> {
        match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Arc::new(ServerCert::load(cert, key)?))),
            _ => Ok(None),
        }
    }

    /// Reads the files again (SIGHUP: a renewed certificate).
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(certified_key(&self.cert, &self.key)?);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// The certificate file, for the log.
    pub(crate) fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// A TLS acceptor that serves whatever certificate is current at each handshake.
    pub(crate) fn acceptor(self: &Arc<Self>) -> tokio_rustls::TlsAcceptor {
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            // ring implements every default version; this fails only for a provider without any.
            .expect("ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// SIGHUP re-reads the HTTPS certificate and key (a renewed certificate: `systemctl reload
/// ocellus`); a pair that cannot be used is logged and the one in use kept. Without TLS there is
/// nothing to reload: it says so (the config is read at start), instead of SIGHUP's default of
/// ending the process.
pub(crate) async fn reload_on_sighup(cert: Option<Arc<ServerCert>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(cert) = cert.clone() else {
            tracing::info!(
                "SIGHUP: nothing to reload (the config is read at start; restart to change it)"
            );
            continue;
        };
        let path = cert.cert_path().display().to_string();
        match tokio::task::spawn_blocking(move || cert.reload()).await {
            Ok(Ok(())) => tracing::info!(cert = %path, "SIGHUP: TLS certificate {path} reloaded"),
            Ok(Err(e)) => {
                tracing::error!(cert = %path, "SIGHUP: TLS certificate not reloaded, the one in use is kept: {e}")
            }
            Err(e) => tracing::error!(error = %e, "SIGHUP: the reload failed"),
        }
    }
}

/// `https` for a port served with `cert`, else `http`.
pub(crate) fn scheme(cert: Option<&ServerCert>) -> &'static str {
    if cert.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The TLS settings of an `mqtts://` broker (None for `mqtt://`), read from `[mqtt]`'s files.
pub(crate) fn mqtt_tls(
    m: &crate::config::MqttConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    if !m.endpoint().is_ok_and(|e| e.tls) {
        return Ok(None);
    }
    let client = m.client_cert.as_deref().zip(m.client_key.as_deref());
    Ok(Some(Arc::new(mqtt_client_config(
        m.ca_file.as_deref(),
        client,
    )?)))
}

/// The MQTT client's TLS: the broker checked against `ca_file` (else the system's authorities),
/// and, with `client`, this box's certificate and key for a broker that asks for one.
fn mqtt_client_config(
    ca_file: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for c in read_certs(path)? {
                roots.add(c).map_err(|e| TlsError::BadCertificate {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
            }
        }
        None => {
            // Unreadable system certificates are skipped; none at all is an error.
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots);
    let Some((cert, key)) = client else {
        return Ok(builder.with_no_client_auth());
    };
    // The pair as checked (a mismatch is named as such), read once.
    let pair = rustls::sign::SingleCertAndKey::from(certified_key(cert, key)?);
    Ok(builder.with_client_cert_resolver(Arc::new(pair)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_a_certificate_or_a_key_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let e = ServerCert::load(&missing, &junk).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let e = ServerCert::load(&junk, &junk).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        let e = read_key(&junk).unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
