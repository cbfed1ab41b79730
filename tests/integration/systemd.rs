//! systemd integration against a socket the test binds as NOTIFY_SOCKET: READY=1 only once the
//! port accepts connections, WATCHDOG=1 while frames flow and not while the camera hangs,
//! STATUS= lines, STOPPING=1 on SIGTERM.

use crate::harness;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use harness::daemon::{self as d, DaemonProc, MjpegCamera};

/// Every datagram received until `until` returns true for one (or the time limit passes).
fn collect(
    sock: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&str, Instant) -> bool,
) -> Vec<(Instant, String)> {
    let mut out = Vec::new();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { break };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let now = Instant::now();
        out.push((now, msg.clone()));
        if until(&msg, now) {
            break;
        }
    }
    out
}

fn watchdogs(msgs: &[(Instant, String)]) -> Vec<Instant> {
    msgs.iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_watchdog_status_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let cam = MjpegCamera::start("127.0.0.1:0", d::street_jpegs(20)).await;
    // A 2 s watchdog: the daemon pings every second while healthy.
    let mut dmn = DaemonProc::start_env(
        "",
        &format!(
            "[[cameras]]\nid = \"cam\"\nsource = \"http://{}/video.mjpg\"\n",
            cam.addr
        ),
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );

    let msgs = collect(&sock, Duration::from_secs(30), |m, _| m.contains("READY=1"));
    let ready = msgs
        .iter()
        .find(|(_, m)| m.lines().any(|l| l == "READY=1"))
        .expect("no READY=1");
    assert!(
        ready.1.contains("STATUS="),
        "READY carries a status: {}",
        ready.1
    );
    // READY=1 means the port accepts connections and the database exists.
    std::net::TcpStream::connect(&dmn.addr).expect("READY=1 before the port accepts");
    assert!(dmn.db.exists());
    assert!(watchdogs(&msgs).is_empty(), "WATCHDOG=1 before READY=1");

    // Frames flow: pings keep coming, about one a second.
    let flowing = collect(&sock, Duration::from_secs(5), |_, _| false);
    let pings = watchdogs(&flowing);
    assert!(
        pings.len() >= 3,
        "only {} watchdog pings in 5 s of frames: {flowing:?}",
        pings.len()
    );
    assert!(
        flowing
            .iter()
            .any(|(_, m)| m.contains("STATUS=1/1 cameras connected")),
        "{flowing:?}"
    );

    // The camera hangs: connected, but no frames. The watchdog must go quiet.
    cam.pause(true);
    let paused_at = Instant::now();
    let hung = collect(&sock, Duration::from_secs(4), |_, _| false);
    let late: Vec<_> = watchdogs(&hung)
        .into_iter()
        .filter(|t| *t > paused_at + Duration::from_millis(2200))
        .collect();
    assert!(
        late.is_empty(),
        "WATCHDOG=1 while no frames flowed: {} pings",
        late.len()
    );

    // Frames again: the watchdog comes back (the stream recovers, or is reopened).
    cam.pause(false);
    let back = collect(&sock, Duration::from_secs(30), |m, _| {
        m.lines().any(|l| l == "WATCHDOG=1")
    });
    assert!(!watchdogs(&back).is_empty(), "watchdog never resumed");

    dmn.signal(15);
    let stop = collect(&sock, Duration::from_secs(15), |m, _| {
        m.contains("STOPPING=1")
    });
    assert!(
        stop.iter()
            .any(|(_, m)| m.lines().any(|l| l == "STOPPING=1")),
        "{stop:?}"
    );
    assert!(dmn
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    cam.stop();
}
