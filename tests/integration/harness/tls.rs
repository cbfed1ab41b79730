//! Certificates made for a test with the openssl command: a CA, and leaf certificates it signs
//! for localhost and 127.0.0.1 (servers and clients alike); and a TLS client that trusts the CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate authority in `dir`: `ca.pem` and its key.
pub struct Ca {
    dir: PathBuf,
}

/// A leaf certificate and its key, as files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` for a new P-256 key in `key` (PKCS#8 PEM) and, with `extra`, what else it
/// makes: a request (`-out name.csr`) or a self-signed certificate (`-x509 ...`).
fn new_key(dir: &Path, key: &str, subject: &str, extra: &[&str]) {
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-subj",
        subject,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A new key in `name.key` and a request for it in `name.csr`.
fn key_and_request(dir: &Path, name: &str) {
    new_key(
        dir,
        &format!("{name}.key"),
        &format!("/CN={name}"),
        &["-out", &format!("{name}.csr")],
    );
}

impl Ca {
    pub fn new(dir: &Path) -> Ca {
        new_key(
            dir,
            "ca.key",
            "/CN=ocellus test CA",
            &["-x509", "-out", "ca.pem", "-days", "2"],
        );
        Ca {
            dir: dir.to_path_buf(),
        }
    }

    pub fn pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for localhost and 127.0.0.1, usable by a server and by a client.
    pub fn leaf(&self, name: &str) -> Leaf {
        key_and_request(&self.dir, name);
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                ext.to_str().unwrap(),
            ],
        );
        Leaf {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// A key that belongs to no certificate.
    pub fn stray_key(&self, name: &str) -> PathBuf {
        key_and_request(&self.dir, name);
        self.dir.join(format!("{name}.key"))
    }

    /// A TLS client that trusts this CA only.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.pem()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }
}

/// Chromium's argument that trusts exactly this certificate's key
/// (`--ignore-certificate-errors-spki-list`, the base64 SHA-256 of its SubjectPublicKeyInfo):
/// the browser checks the server against it, as it would against a CA it knows.
pub fn chromium_trusts(cert: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "openssl x509 -in \"$1\" -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
        )
        .arg("sh")
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success());
    format!(
        "--ignore-certificate-errors-spki-list={}",
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// The certificate in a PEM file, as DER.
pub fn der(cert: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(cert).unwrap().to_vec()
}

/// Connects to `addr` over TLS as `localhost`, checking the server against `ca`.
pub async fn connect(
    ca: &Ca,
    addr: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    ca.connector()
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The certificate the server at `addr` presents, as DER.
pub async fn served_cert(ca: &Ca, addr: &str) -> std::io::Result<Vec<u8>> {
    let s = connect(ca, addr).await?;
    Ok(s.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}
