//! HTTPS and WSS on the daemon's port, with certificates made here (tests/integration/harness/tls.rs): curl
//! with the CA, a WebSocket over wss, plain HTTP refused, the certificate re-read on SIGHUP
//! (and a bad pair kept out), and the errors for a missing key and a key that does not match.

use crate::harness;
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use harness::daemon::DaemonProc;
use harness::tls::{self, Ca};

const TOKEN: &str = "s3cret-token";
/// SIGHUP's number on Linux.
const SIGHUP: i32 = 1;

/// The street clip, served over TLS with `leaf`, behind a token.
fn tls_daemon(leaf: &tls::Leaf) -> DaemonProc {
    DaemonProc::start_logged_env(
        &format!(
            "[server]\ntoken = {TOKEN:?}\ntls_cert = {:?}\ntls_key = {:?}\n",
            leaf.cert, leaf.key
        ),
        &format!(
            "[[cameras]]\nid = \"street\"\nsource = {:?}\n",
            harness::vtest()
        ),
        &[("OCELLUS_LOG", "info")],
    )
}

/// curl against the daemon with the test's CA: (HTTP status, body), or curl's failure.
fn curl(ca: &Ca, url: &str, auth: bool) -> Result<(u16, String), String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(ca.pem())
        .args(["-w", "\n%{http_code}"]);
    if auth {
        cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let out = cmd.arg(url).output().expect("curl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap(), body.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_serve_the_configs_certificate_and_plain_http_gets_nothing() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let leaf = ca.leaf("localhost");
    let dmn = tls_daemon(&leaf);
    let port = dmn.addr.rsplit_once(':').unwrap().1.to_string();
    let base = format!("https://localhost:{port}");

    // curl checks the certificate against the CA and the name: it is the configured one.
    let (status, body) = curl(&ca, &format!("{base}/healthz"), false).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        tls::served_cert(&ca, &dmn.addr).await.unwrap(),
        tls::der(&leaf.cert)
    );
    // The token guard works the same over TLS, header or query.
    assert_eq!(
        curl(&ca, &format!("{base}/api/cameras"), false).unwrap().0,
        401
    );
    let (status, body) = curl(&ca, &format!("{base}/api/cameras"), true).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("street"), "{body}");
    let (status, body) = curl(
        &ca,
        &format!("{base}/api/events?limit=2&token={TOKEN}"),
        false,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // The dashboard's page comes over HTTPS too.
    let (status, body) = curl(&ca, &format!("{base}/"), false).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("<html"), "{body}");

    // Plain HTTP on the TLS port gets no answer: a token sent that way would have been sent in
    // clear, and nothing is served in clear. The daemon goes on serving.
    let plain = curl(
        &ca,
        &format!("http://127.0.0.1:{port}/api/cameras?token={TOKEN}"),
        false,
    );
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP was served: {plain:?}"
    );
    assert_eq!(curl(&ca, &format!("{base}/healthz"), false).unwrap().0, 200);

    // A WebSocket over wss: hello, then live events as on ws://.
    let stream = tls::connect(&ca, &dmn.addr).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws?token={TOKEN}"), stream)
            .await
            .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no hello over wss")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "hello" {
                assert_eq!(v["cameras"][0]["id"], "street", "{v}");
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_certificate_and_keeps_the_old_one_when_the_new_pair_is_bad() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let first = ca.leaf("first");
    let dmn = tls_daemon(&first);
    assert_eq!(
        tls::served_cert(&ca, &dmn.addr).await.unwrap(),
        tls::der(&first.cert)
    );

    // A renewed certificate written over the files, then SIGHUP: new handshakes get it.
    let second = ca.leaf("second");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    dmn.signal(SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tls::served_cert(&ca, &dmn.addr).await.unwrap() == tls::der(&second.cert) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served; log:\n{}",
            dmn.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dmn.log().contains("reloaded"), "{}", dmn.log());

    // A key that does not belong to the certificate: the reload is refused, said in the log,
    // and the certificate in use stays.
    std::fs::copy(ca.stray_key("stray"), &first.key).unwrap();
    dmn.signal(SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dmn.log().contains("not reloaded") {
        assert!(
            Instant::now() < deadline,
            "the bad pair was not reported; log:\n{}",
            dmn.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(dmn.log().contains("does not belong"), "{}", dmn.log());
    assert_eq!(
        tls::served_cert(&ca, &dmn.addr).await.unwrap(),
        tls::der(&second.cert)
    );
    let (status, _) = curl(
        &ca,
        &format!(
            "https://localhost:{}/healthz",
            dmn.addr.rsplit_once(':').unwrap().1
        ),
        false,
    )
    .unwrap();
    assert_eq!(status, 200);
}

#[test]
fn a_missing_key_or_one_that_does_not_match_stops_the_start_with_its_name() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let leaf = ca.leaf("localhost");
    let stray = ca.stray_key("stray");
    let missing = certs.path().join("missing.key");
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ocellus.toml");
        std::fs::write(
            &cfg,
            format!(
                "[server]\ntls_cert = {cert:?}\ntls_key = {key:?}\n[storage]\npath = {:?}\n",
                dir.path().join("events.db")
            ),
        )
        .unwrap();
        let out = DaemonProc::command(&cfg, "127.0.0.1:0").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Nothing was started: no database was created.
        assert!(!dir.path().join("events.db").exists(), "{stderr}");
        (out.status.code(), stderr)
    };
    let (code, err) = run(&leaf.cert, &missing);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("server.tls_cert/tls_key") && err.contains("missing.key"),
        "{err}"
    );
    let (code, err) = run(&leaf.cert, &stray);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("does not belong")
            && err.contains("stray.key")
            && err.contains("localhost.pem"),
        "{err}"
    );
    // A key file given as the certificate: named as not a certificate.
    let (code, err) = run(&leaf.key, &leaf.key);
    assert_ne!(code, Some(0));
    assert!(err.contains("no PEM certificate"), "{err}");
}

/// The dashboard over HTTPS in Chromium: the page loads, its WebSocket goes over wss (it says
/// `live`) and live frames are drawn. The browser trusts exactly the test's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_over_https_and_wss_in_chromium() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new(certs.path());
    let leaf = ca.leaf("localhost");
    let dmn = tls_daemon(&leaf);
    let port = dmn.addr.rsplit_once(':').unwrap().1.to_string();
    let (_driver, c, _profile) =
        harness::browser::browser_with(&[tls::chromium_trusts(&leaf.cert)]).await;
    c.goto(&format!("https://localhost:{port}/?token={TOKEN}"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = c
            .execute(
                "const p = window.ocellus || {}; return [location.protocol, document.querySelector('#conn').textContent, p.framesDrawn || 0];",
                vec![],
            )
            .await
            .unwrap();
        if v[0] == "https:" && v[1] == "live" && v[2].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the dashboard over https: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.close().await.unwrap();
}
