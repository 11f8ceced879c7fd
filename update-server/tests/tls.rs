//! The API over TLS (rustls), with a self-signed certificate made here.

mod common;

use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

fn client(trusted: &rcgen::CertifiedKey) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trusted.cert.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn the_api_is_served_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let mut config = common::test_config(dir.path(), None);
    config.tls.cert = Some(cert_file);
    config.tls.key = Some(key_file.clone());
    // A key anyone may read is refused; one its group may read is not
    // (Debian's ssl-cert convention).
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = gantry_server::start(config.clone(), std::future::pending()).await.err().expect("refused");
    assert!(e.to_string().contains("0644 are too open"), "{e}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let running = gantry_server::start(config.clone(), std::future::pending()).await.unwrap();
    assert_eq!(running.scheme, "https");

    // A client trusting the certificate gets its answer.
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let mut tls = client(&cert).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    tls.write_all(REQUEST).await.unwrap();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");

    // One that trusts another certificate cannot even connect.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    assert!(client(&other).connect(ServerName::try_from("localhost").unwrap(), tcp).await.is_err());

    // Plain HTTP gets no HTTP answer.
    let mut plain = TcpStream::connect(running.addr).await.unwrap();
    plain.write_all(REQUEST).await.unwrap();
    let mut bytes = Vec::new();
    let _ = plain.read_to_end(&mut bytes).await;
    assert!(!bytes.starts_with(b"HTTP/1.1 200"));
    running.stop().await.unwrap();

    // Half a configuration is refused at start.
    let mut half = config;
    half.tls.cert = None;
    half.data_dir = dir.path().join("other");
    let e = gantry_server::start(half, std::future::pending()).await.err().expect("refused");
    assert!(e.to_string().contains("tls.cert and tls.key"), "{e}");
}
