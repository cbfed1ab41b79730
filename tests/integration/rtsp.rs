//! RTSP cameras against a real RTSP server (GStreamer's gst-rtsp-server, started by each test)
//! serving the street clip as H.264, as an IP camera does.

use crate::harness;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::daemon::{get_json, DaemonProc};
use harness::rtsp::RtspServer;

/// Camera `id`'s entry in /api/cameras.
async fn camera(dmn: &DaemonProc, id: &str) -> serde_json::Value {
    let cams = get_json(&dmn.url("/api/cameras")).await;
    cams.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no camera {id} in {cams}"))
}

/// Polls until camera `id` is in `state`; returns how long that took and the camera's entry.
async fn wait_for(
    dmn: &DaemonProc,
    id: &str,
    state: &str,
    limit: Duration,
) -> (Duration, serde_json::Value) {
    let t0 = Instant::now();
    loop {
        let c = camera(dmn, id).await;
        if c["state"] == state {
            return (t0.elapsed(), c);
        }
        assert!(
            t0.elapsed() < limit,
            "camera {id} not {state} after {limit:?}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn frames_captured(dmn: &DaemonProc, id: &str) -> f64 {
    harness::daemon::metric(
        dmn,
        &format!("ocellus_frames_captured_total{{camera=\"{id}\"}}"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_camera_streams_person_events_and_reconnects_after_the_server_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clip = harness::h264_clip(dir.path(), 300);
    let port = harness::free_port();
    let server = RtspServer::start(&clip, port, None);
    let dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"door\"\nsource = \"{}\"\nread_timeout_s = 3\n",
            server.url("", "/stream")
        ),
    );
    // Frames within 15 s of start ("connected" is set by the first decoded frame).
    let (first_frame, _) = wait_for(&dmn, "door", "connected", Duration::from_secs(15)).await;
    eprintln!(
        "rtsp tcp: first frame {:.2} s after start",
        first_frame.as_secs_f64()
    );
    // Person events appear.
    let t0 = Instant::now();
    loop {
        let events = get_json(&dmn.url("/api/events?label=person")).await;
        if events["events"].as_array().is_some_and(|e| !e.is_empty()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no person event from the RTSP camera"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The stream stalls without closing (the server is frozen): a stall after read_timeout_s,
    // and frames again once it answers.
    let pid = server.child.id().to_string();
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    signal("-STOP");
    let (stalled, c) = wait_for(&dmn, "door", "retrying", Duration::from_secs(15)).await;
    let err = c["last_error"].as_str().unwrap_or("");
    assert!(err.contains("stream stalled: no frame for 3 s"), "{c}");
    eprintln!(
        "rtsp tcp: stall noticed {:.2} s after the server froze",
        stalled.as_secs_f64()
    );
    signal("-CONT");
    wait_for(&dmn, "door", "connected", Duration::from_secs(30)).await;

    // The server goes away for 8 s: the camera is retrying with a reason, the daemon healthy.
    server.stop();
    let (_, c) = wait_for(&dmn, "door", "retrying", Duration::from_secs(15)).await;
    assert!(c["last_error"].as_str().is_some(), "{c}");
    assert_eq!(get_json(&dmn.url("/healthz")).await["status"], "ok");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let before = frames_captured(&dmn, "door").await;
    let back = RtspServer::start(&clip, port, None);
    let (reconnect, _) = wait_for(&dmn, "door", "connected", Duration::from_secs(40)).await;
    eprintln!(
        "rtsp tcp: connected again {:.2} s after the server came back",
        reconnect.as_secs_f64()
    );
    let t0 = Instant::now();
    while frames_captured(&dmn, "door").await <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no frames after reconnecting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    back.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_wrong_path_wrong_password_and_refused_port_each_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let clip = harness::h264_clip(dir.path(), 300);
    let open = RtspServer::start(&clip, harness::free_port(), None);
    let locked = RtspServer::start(&clip, harness::free_port(), Some(("admin", "s3cret")));
    let secret = "Hunter2Hunter2";
    let dmn = DaemonProc::start_logged(
        "",
        &format!(
            "[[cameras]]\nid = \"path\"\nsource = \"{}\"\n\
             [[cameras]]\nid = \"pass\"\nsource = \"{}\"\n\
             [[cameras]]\nid = \"nopass\"\nsource = \"{}\"\n\
             [[cameras]]\nid = \"refused\"\nsource = \"rtsp://127.0.0.1:{}/stream\"\n\
             [[cameras]]\nid = \"good\"\nsource = \"{}\"\n",
            open.url("", "/wrong"),
            locked.url(&format!("admin:{secret}@"), "/stream"),
            locked.url("", "/stream"),
            harness::free_port(),
            locked.url("admin:s3cret@", "/stream"),
        ),
    );
    let limit = Duration::from_secs(20);
    let expect = [
        ("path", "no stream at /wrong (404"),
        ("pass", "refused the user name or password (401"),
        ("nopass", "needs a user name and password (401"),
        ("refused", "connection refused"),
    ];
    for (id, says) in expect {
        let (_, c) = wait_for(&dmn, id, "retrying", limit).await;
        let err = c["last_error"].as_str().unwrap();
        assert!(err.contains(says), "{id}: {err}");
    }
    // The right password works next to the wrong one.
    wait_for(&dmn, "good", "connected", limit).await;
    // The password is nowhere a client or the log can see it.
    let cams = get_json(&dmn.url("/api/cameras")).await.to_string();
    let stats = get_json(&dmn.url("/api/stats")).await.to_string();
    let mut ws = harness::daemon::connect(&dmn).await;
    let hello = harness::daemon::next_of_type(&mut ws, "hello", Duration::from_secs(10)).await;
    for (what, text) in [
        ("cameras", &cams),
        ("stats", &stats),
        ("hello", &hello.to_string()),
    ] {
        assert!(
            !text.contains(secret) && !text.contains("s3cret"),
            "{what} shows a password: {text}"
        );
    }
    assert_eq!(get_json(&dmn.url("/healthz")).await["status"], "ok");
    let log = dmn.log();
    assert!(
        log.contains("camera pass"),
        "the failures are logged: {log}"
    );
    assert!(!log.contains(secret), "the log shows the password: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rtsp_cameras_each_use_their_own_transport() {
    let dir = tempfile::tempdir().unwrap();
    let clip = harness::h264_clip(dir.path(), 300);
    let server = RtspServer::start(&clip, harness::free_port(), None);
    let dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"tcpcam\"\nsource = \"{url}\"\n\
             [[cameras]]\nid = \"udpcam\"\nsource = \"{url}\"\nrtsp_transport = \"udp\"\n",
            url = server.url("", "/stream")
        ),
    );
    for id in ["tcpcam", "udpcam"] {
        let (t, _) = wait_for(&dmn, id, "connected", Duration::from_secs(15)).await;
        eprintln!(
            "rtsp {id}: first frame {:.2} s after start",
            t.as_secs_f64()
        );
    }
    for id in ["tcpcam", "udpcam"] {
        let t0 = Instant::now();
        while frames_captured(&dmn, id).await < 20.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "{id}: frames stopped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The server saw one stream set up over TCP and one over UDP: the options did not leak.
    let mut setups: Vec<String> = server
        .setups()
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().to_string())
        .collect();
    setups.sort();
    assert_eq!(setups, vec!["tcp", "udp"], "{:?}", server.setups());
}
