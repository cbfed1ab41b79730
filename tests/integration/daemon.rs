//! `ocellus run` end to end: the real daemon on a free port, real WebSocket clients, real
//! signals, and a real HTTP camera that goes away and comes back.

use crate::harness;
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use harness::daemon::{
    self as d, connect, metric, next_json, next_of_type, send, until_close, DaemonProc, MjpegCamera,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use ocellus::server::protocol::parse_frame_header;

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_gets_event_json_and_decodable_frames_of_the_announced_size() {
    let dmn = DaemonProc::street("");
    let mut ws = connect(&dmn).await;
    let hello = next_json(&mut ws, LONG).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["protocol"], 2);
    assert_eq!(hello["cameras"][0]["id"], "street");
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 1, "topic": "events"}),
    )
    .await;
    send(
        &mut ws,
        json!({"op": "subscribe", "id": 2, "topic": "frames", "camera": "street"}),
    )
    .await;

    let (mut frames, mut events, mut replies) = (0, 0, 0);
    let mut last_seq = None;
    let deadline = tokio::time::Instant::now() + LONG;
    while frames < 10 || events < 1 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("timed out")
            .unwrap()
            .unwrap();
        match msg {
            Message::Binary(b) => {
                let h = parse_frame_header(&b).expect("frame header");
                assert_eq!(h.camera, "street");
                let img = image::load_from_memory(&b[h.jpeg_offset..]).expect("JPEG decodes");
                assert_eq!(
                    (img.width(), img.height()),
                    (h.width as u32, h.height as u32)
                );
                assert_eq!((h.width, h.height), (768, 576));
                assert!(last_seq.is_none_or(|s| h.seq > s), "seq increases");
                last_seq = Some(h.seq);
                frames += 1;
            }
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str().unwrap() {
                    "reply" => replies += 1,
                    "event" => {
                        assert!(["start", "update", "end"].contains(&v["kind"].as_str().unwrap()));
                        assert_eq!(v["event"]["camera"], "street");
                        events += 1;
                    }
                    other => panic!("unexpected {other}: {v}"),
                }
            }
            _ => {}
        }
    }
    assert_eq!(replies, 2);
}

/// Connects a healthy and a stalled frame subscriber; the stalled one is never read again.
async fn healthy_and_stalled(dmn: &DaemonProc) -> (d::Ws, d::Ws) {
    let healthy = frames_subscriber(connect(dmn).await).await;
    let stalled = frames_subscriber(connect(dmn).await).await;
    (healthy, stalled)
}

/// Reads frames for `secs`; returns their seqs.
async fn read_frames_for(ws: &mut d::Ws, secs: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Binary(b) = msg {
            seqs.push(parse_frame_header(&b).unwrap().seq);
        }
    }
    seqs
}

fn assert_most_frames(seqs: &[u64]) {
    let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
    let share = seqs.len() as f64 / span as f64;
    assert!(seqs.len() > 100, "healthy client got {} frames", seqs.len());
    assert!(
        share >= 0.9,
        "healthy client got {:.0}% of the frames in its span",
        share * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_dropped_while_a_healthy_one_gets_its_frames() {
    let dmn = DaemonProc::street("[server]\nsend_timeout_s = 2\n");
    let (mut healthy, stalled) = healthy_and_stalled(&dmn).await;
    assert_most_frames(&read_frames_for(&mut healthy, 20).await);
    let dropped = metric(&dmn, "ocellus_ws_clients_dropped_slow_total").await;
    assert!(
        dropped >= 1.0,
        "a client blocked past send_timeout_s must be dropped"
    );
    assert_eq!(metric(&dmn, "ocellus_ws_clients").await, 1.0);
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_while_a_client_is_stalled() {
    // The stalled client stays connected for the whole test: nothing may pile up for it.
    let dmn = DaemonProc::street("[server]\nsend_timeout_s = 120\n");
    let (mut healthy, stalled) = healthy_and_stalled(&dmn).await;
    // Warm-up (model, decoder, buffers) first; then the stall costs ~0.6 MB/s if frames queue.
    read_frames_for(&mut healthy, 6).await;
    let rss_start = dmn.rss_kib();
    let seqs = read_frames_for(&mut healthy, 20).await;
    let rss_end = dmn.rss_kib();
    assert_most_frames(&seqs);
    assert!(
        rss_end < rss_start + 8 * 1024,
        "RSS grew from {rss_start} to {rss_end} KiB in 20 s"
    );
    assert_eq!(
        metric(&dmn, "ocellus_ws_clients").await,
        2.0,
        "the stalled client is still connected"
    );
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_clients_on_one_camera_cost_one_encode_per_frame() {
    let dmn = DaemonProc::street("");
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(&dmn).await;
        next_of_type(&mut ws, "hello", LONG).await;
        send(
            &mut ws,
            json!({"op": "subscribe", "topic": "frames", "camera": "street", "width": 640}),
        )
        .await;
        next_of_type(&mut ws, "reply", LONG).await;
        clients.push(ws);
    }
    let mut counts = [0u64; 5];
    for round in 0..40 {
        for (i, ws) in clients.iter_mut().enumerate() {
            loop {
                let msg = tokio::time::timeout(LONG, ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                if let Message::Binary(b) = msg {
                    let h = parse_frame_header(&b).unwrap();
                    assert_eq!(h.width, 640, "round {round}");
                    counts[i] += 1;
                    break;
                }
            }
        }
    }
    let encodes = metric(&dmn, "ocellus_jpeg_encodes_total{camera=\"street\"}").await as u64;
    let most = *counts.iter().max().unwrap();
    // Every encode reached every client (no client lagged at 10 fps), a frame or two may be in
    // flight; five clients encoding separately would make this 5x.
    assert!(
        encodes >= most && encodes <= most + 3,
        "encodes {encodes}, frames per client {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_query_rest_and_database_agree() {
    let dmn = DaemonProc::street("");
    let mut ws = connect(&dmn).await;
    next_of_type(&mut ws, "hello", LONG).await;
    send(&mut ws, json!({"op": "subscribe", "topic": "events"})).await;
    // Wait until a few events have ended, so the stored rows are final.
    let mut ended = 0;
    while ended < 3 {
        let v = next_of_type(&mut ws, "event", LONG).await;
        if v["kind"] == "end" {
            ended += 1;
        }
    }
    send(&mut ws, json!({"op": "unsubscribe", "topic": "events"})).await;
    send(
        &mut ws,
        json!({"op": "query", "id": "q", "label": "person", "limit": 50}),
    )
    .await;
    let reply = loop {
        let v = next_of_type(&mut ws, "reply", LONG).await;
        if v["op"] == "query" {
            break v;
        }
    };
    assert_eq!(reply["id"], "q");
    let ws_events = reply["events"].as_array().unwrap().clone();
    assert!(!ws_events.is_empty());
    let rest = d::get_json(&dmn.url("/api/events?label=person&limit=50")).await;
    // Events may have been added or updated between the two calls; compare the ended ones,
    // which no longer change.
    let ended_only = |v: &Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        v.iter()
            .filter(|e| !e["end_ms"].is_null())
            .cloned()
            .collect()
    };
    let ws_ended = ended_only(&ws_events);
    let rest_ended: Vec<_> = ended_only(rest["events"].as_array().unwrap())
        .into_iter()
        .filter(|e| ws_ended.iter().any(|w| w["id"] == e["id"]))
        .collect();
    assert_eq!(ws_ended, rest_ended);
    let conn = ocellus::db::open_reader(&dmn.db).unwrap();
    for e in &ws_ended {
        let stored = ocellus::db::get_event(&conn, e["id"].as_i64().unwrap())
            .unwrap()
            .unwrap();
        let from_ws: ocellus::pipeline::values::Event = serde_json::from_value(e.clone()).unwrap();
        assert_eq!(stored, from_ws);
    }
    let one = d::get_json(&dmn.url(&format!("/api/events/{}", ws_ended[0]["id"]))).await;
    assert_eq!(one, ws_ended[0]);
    let (status, jpeg) = d::http_get(
        &dmn.url(&format!("/api/events/{}/snapshot.jpg", ws_ended[0]["id"])),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(image::load_from_memory(&jpeg).is_ok());
    assert_eq!(
        d::http_get(&dmn.url("/api/events/999999"), &[]).await.0,
        404
    );
    // A path that does not parse answers like every other API error: JSON, not plain text.
    let (status, body) = d::http_get(
        &dmn.url("/api/events/..%2F..%2Fetc%2Fpasswd/snapshot.jpg"),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "bad_request", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_clients_gets_errors_or_a_clean_close_and_the_server_stays_up() {
    let dmn = DaemonProc::street("[server]\nmax_message_bytes = 16384\n");
    let mut ws = connect(&dmn).await;
    next_of_type(&mut ws, "hello", LONG).await;
    let cases = [
        ("{not json", "bad_json"),
        (r#"{"op":"launch","id":9}"#, "unknown_op"),
        (r#"{"op":"query","limit":"many"}"#, "bad_request"),
        (r#"{"op":"subscribe","topic":"frames"}"#, "bad_request"),
        (
            r#"{"op":"subscribe","topic":"frames","camera":"nope"}"#,
            "unknown_camera",
        ),
    ];
    for (text, code) in cases {
        ws.send(Message::Text(text.into())).await.unwrap();
        let v = next_of_type(&mut ws, "error", LONG).await;
        assert_eq!(v["code"], code, "{text}: {v}");
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(
        next_of_type(&mut ws, "error", LONG).await["code"],
        "binary_not_accepted"
    );
    // Still answering on the same connection.
    send(&mut ws, json!({"op": "ping", "id": 5})).await;
    let pong = next_of_type(&mut ws, "reply", LONG).await;
    assert_eq!(
        (pong["op"].as_str(), pong["id"].as_i64()),
        (Some("ping"), Some(5))
    );

    // A request larger than the server's 4 KiB read buffer but within the limit is answered.
    let long_id = "i".repeat(12_000);
    send(&mut ws, json!({"op": "ping", "id": long_id})).await;
    let pong = next_of_type(&mut ws, "reply", LONG).await;
    assert_eq!(pong["id"].as_str(), Some(long_id.as_str()));

    // An oversize message closes that connection with 1009 ...
    ws.send(Message::Text("x".repeat(20_000).into()))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(LONG, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.unwrap().code, CloseCode::Size);
    // ... and the server goes on serving everybody else.
    let mut again = connect(&dmn).await;
    assert_eq!(next_json(&mut again, LONG).await["type"], "hello");
    assert_eq!(d::get_json(&dmn.url("/healthz")).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_origin_are_enforced() {
    let dmn = DaemonProc::street("[server]\ntoken = \"s3cret-token\"\n");
    let (status, _) = d::http_get(&dmn.url("/api/events"), &[]).await;
    assert_eq!(status, 401);
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/ws", dmn.addr))
            .await
            .is_err()
    );
    let (status, _) = d::http_get(
        &dmn.url("/api/events"),
        &[("Authorization", "Bearer s3cret-token")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = d::http_get(&dmn.url("/api/cameras?token=s3cret-token"), &[]).await;
    assert_eq!(status, 200);
    // `?token=` works on every /api path, also those whose own parameters are strict, and the
    // other parameters still apply (and are still checked).
    let get = |path: &'static str, auth: &'static [(&'static str, &'static str)]| {
        let url = dmn.url(path);
        async move {
            let (status, body) = d::http_get(&url, auth).await;
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = get("/api/events?token=s3cret-token&limit=1", &[]).await;
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(page["events"].as_array().unwrap().len() <= 1, "{body}");
    let (status, body) = get("/api/events?limit=1&nonsense=1&token=s3cret-token", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("nonsense") && !body.contains("s3cret"),
        "{body}"
    );
    let (status, body) = get("/api/counts?camera=street&line=*&token=s3cret-token", &[]).await;
    assert_eq!(status, 200, "{body}");
    // /metrics names every camera and its counts: it needs the token too.
    assert_eq!(get("/metrics", &[]).await.0, 401);
    let (status, body) = get("/metrics", &[("Authorization", "Bearer s3cret-token")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("ocellus_frames_captured_total"), "{body}");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token=s3cret-token", dmn.addr))
            .await
            .unwrap();
    assert_eq!(next_json(&mut ws, LONG).await["type"], "hello");
    // /healthz stays open for probes.
    assert_eq!(d::http_get(&dmn.url("/healthz"), &[]).await.0, 200);

    // A page from another site may not open the socket, even with the token.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/ws?token=s3cret-token", dmn.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("foreign origin was not refused: {other:?}"),
    }
    let mut same = format!("ws://{}/ws?token=s3cret-token", dmn.addr)
        .into_client_request()
        .unwrap();
    same.headers_mut()
        .insert("Origin", format!("http://{}", dmn.addr).parse().unwrap());
    assert!(tokio_tungstenite::connect_async(same).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_every_started_event_in_the_database_and_exits_0() {
    // A send timeout no wait of this test comes near: the clients that stop reading below are
    // behind when the stop comes, not dropped as stalled.
    let mut dmn = DaemonProc::street("[server]\nsend_timeout_s = 120\n");
    let mut ws = connect(&dmn).await;
    next_of_type(&mut ws, "hello", LONG).await;
    send(&mut ws, json!({"op": "subscribe", "topic": "events"})).await;
    // More clients on the live frames. Every one of them is told the server is going away:
    // those that read all the time, as a dashboard does, and those that stopped reading (their
    // socket full), which get what was pending and then 1001 once they read again. Their tasks
    // must have sent their close frames before the process ends.
    let mut viewers = Vec::new();
    for _ in 0..2 {
        let mut v = frames_viewer(&dmn).await;
        viewers.push(tokio::spawn(
            async move { until_close(&mut v, |_| {}).await },
        ));
    }
    let mut behind = Vec::new();
    for _ in 0..6 {
        behind.push(frames_viewer(&dmn).await);
    }
    let mut started = BTreeSet::new();
    while started.len() < 3 {
        let v = next_of_type(&mut ws, "event", LONG).await;
        if v["kind"] == "start" {
            started.insert(v["event"]["id"].as_i64().unwrap());
        }
    }
    dmn.signal(15);
    // Everything up to the close: ends of the open events, then 1001.
    let close = until_close(&mut ws, |t| {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        if v["type"] == "event" && v["kind"] == "start" {
            started.insert(v["event"]["id"].as_i64().unwrap());
        }
    })
    .await;
    assert_eq!(close, CloseCode::Away);
    for (i, v) in behind.iter_mut().enumerate() {
        assert_eq!(until_close(v, |_| {}).await, CloseCode::Away, "behind {i}");
    }
    for (i, v) in viewers.into_iter().enumerate() {
        let code = v.await.unwrap_or_else(|e| panic!("viewer {i}: {e}"));
        assert_eq!(code, CloseCode::Away, "viewer {i}");
    }
    let status = dmn
        .wait_exit(Duration::from_secs(10))
        .expect("did not exit within 10 s");
    assert!(status.success(), "{status:?}");
    let conn = rusqlite::Connection::open(&dmn.db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    for id in started {
        let end: Option<i64> = conn
            .query_row("SELECT end_ms FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("event {id} a client saw start is not stored: {e}"));
        assert!(end.is_some(), "event {id} has no end time");
    }
}

/// A client that has its hello and is subscribed to the street camera's live frames.
async fn frames_viewer(dmn: &DaemonProc) -> d::Ws {
    let mut v = connect(dmn).await;
    next_of_type(&mut v, "hello", LONG).await;
    send(
        &mut v,
        json!({"op": "subscribe", "topic": "frames", "camera": "street"}),
    )
    .await;
    v
}

/// Polls the camera state until `want` (an observable condition, not a timed guess).
async fn wait_state(dmn: &DaemonProc, want: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let (state, err) = d::camera_state(dmn).await;
        if state == want {
            return err;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "camera never became {want}; it is {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_camera_that_goes_away_is_retried_and_resumes_when_back() {
    let jpegs = d::street_jpegs(20);
    let cam = MjpegCamera::start("127.0.0.1:0", jpegs.clone()).await;
    let addr = cam.addr;
    let dmn = DaemonProc::start(
        "",
        &format!("[[cameras]]\nid = \"ipcam\"\nsource = \"http://{addr}/stream.mjpg\"\n"),
    );
    wait_state(&dmn, "connected").await;
    let before = metric(&dmn, "ocellus_frames_captured_total{camera=\"ipcam\"}").await;
    assert!(before > 0.0);

    cam.stop();
    let error = wait_state(&dmn, "retrying").await;
    assert!(error.is_some(), "the state carries the last error");
    assert_eq!(
        metric(&dmn, "ocellus_camera_up{camera=\"ipcam\"}").await,
        0.0
    );
    // The daemon itself is fine meanwhile.
    assert_eq!(d::get_json(&dmn.url("/healthz")).await["status"], "ok");

    let back = MjpegCamera::start(&addr.to_string(), jpegs).await;
    wait_state(&dmn, "connected").await;
    let mut ws = connect(&dmn).await;
    next_of_type(&mut ws, "hello", LONG).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "topic": "frames", "camera": "ipcam"}),
    )
    .await;
    let mut frames = 0;
    while frames < 5 {
        if let Message::Binary(b) = tokio::time::timeout(LONG, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            assert_eq!(parse_frame_header(&b).unwrap().camera, "ipcam");
            frames += 1;
        }
    }
    let after = metric(&dmn, "ocellus_frames_captured_total{camera=\"ipcam\"}").await;
    assert!(after > before);
    back.stop();
}

/// Live frames go to the stream straight from capture, at the camera's rate, whatever the
/// detector's pace: with a 240 fps camera and the DNN on every frame it processes (on OpenCV's
/// DNN module, about 15 ms each on a desktop core, so at most ~70 a second; ONNX Runtime's
/// 4 ms would keep up with most of the frames and prove nothing), the detector handles a
/// fraction of the frames while the stream carries most of them, and a frame reaches the
/// client before its own detections do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_frames_stream_at_the_camera_rate_not_the_detectors() {
    use opencv::core::{Mat, Size};
    use opencv::imgproc;
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("fast.avi");
    let small: Vec<Mat> = harness::read_frames(&harness::vtest(), 0, 120)
        .iter()
        .map(|m| {
            let mut s = Mat::default();
            imgproc::resize(
                m,
                &mut s,
                Size::new(192, 144),
                0.0,
                0.0,
                imgproc::INTER_AREA,
            )
            .unwrap();
            s
        })
        .collect();
    harness::write_clip(&clip, &small, 240.0);
    // FastestDet on OpenCV: a detector slower than the camera, that leaves the cores to the
    // capture and the encoder as it did when it was the default model.
    let dmn = DaemonProc::start(
        &format!(
            "[detector]\nwhen = \"always\"\nruntime = \"opencv\"\nfamily = \"fastestdet\"\n\
             model = {:?}\nlabels = {:?}\ninput_width = 352\ninput_height = 352\n",
            harness::fastestdet(),
            harness::asset("models/fastestdet/coco.names")
        ),
        &format!("[[cameras]]\nid = \"fast\"\nsource = {:?}\n", clip),
    );
    let mut ws = connect(&dmn).await;
    next_of_type(&mut ws, "hello", LONG).await;
    for topic in ["frames", "detections"] {
        send(
            &mut ws,
            json!({"op": "subscribe", "topic": topic, "camera": "fast"}),
        )
        .await;
    }
    // Count from the first frame on, for 5 s, and which detections came before their frame.
    let mut frame_seqs = BTreeSet::new();
    let mut dets = 0usize;
    let mut ahead = Vec::new();
    let mut end = None;
    loop {
        let limit = end.unwrap_or(tokio::time::Instant::now() + LONG);
        let Ok(msg) = tokio::time::timeout_at(limit, ws.next()).await else {
            break;
        };
        match msg.unwrap().unwrap() {
            Message::Binary(b) => {
                frame_seqs.insert(parse_frame_header(&b).unwrap().seq);
                end.get_or_insert(tokio::time::Instant::now() + Duration::from_secs(5));
            }
            Message::Text(t) if end.is_some() => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "detections" {
                    dets += 1;
                    let seq = v["seq"].as_u64().unwrap();
                    if !frame_seqs.contains(&seq) {
                        ahead.push(seq);
                    }
                }
            }
            _ => {}
        }
    }
    let frames = frame_seqs.len();
    assert!(
        frames >= 480,
        "{frames} frames in 5 s from a 240 fps camera"
    );
    assert!(
        frames >= 2 * dets,
        "{frames} frames and {dets} detections: the stream follows the detector"
    );
    // Most processed frames had reached the client before their detections: those that came
    // after them are those the encoder was slower on, or was not scheduled for while the
    // detector ran (on a loaded box, one in five). A stream fed after detection would have
    // nearly every frame come after its detections. A frame the stream skipped (a busy encoder
    // skips, by design; on a loaded machine more often) never comes, and says nothing about
    // the order.
    let late = ahead.iter().filter(|s| frame_seqs.contains(s)).count();
    assert!(
        late * 2 <= dets,
        "{late} of {dets} detections came before their frame (and {} frames were skipped)",
        ahead.len() - late
    );
}

/// Every counter the pipeline keeps is exported, per camera (the list is
/// `CameraStats::counters`, which names every field), and every count in the stats snapshot
/// (`/api/stats`, the `stats` message) is one of the exported figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counter_in_the_stats_appears_in_metrics() {
    let dmn = DaemonProc::street("");
    wait_state(&dmn, "connected").await;
    let (status, body) = d::http_get(&dmn.url("/metrics"), &[]).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let (status, body) = d::http_get(&dmn.url("/api/stats"), &[]).await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["type"], "stats");
    // The snapshot's counts: per camera (the rates and times are derived, not counters) and
    // the database writer's.
    let camera = stats["cameras"][0].as_object().unwrap();
    // What runs the detector is reported: ONNX Runtime (fetched by setup) on the CPU.
    let detector = &camera["detector"];
    assert_eq!(detector["runtime"], "onnxruntime", "{detector}");
    assert_eq!(detector["provider"], "cpu", "{detector}");
    assert!(
        detector["runtime_version"]
            .as_str()
            .unwrap()
            .starts_with("1."),
        "{detector}"
    );
    for (field, v) in camera {
        if !v.is_u64() || ["since_ms", "width", "height"].contains(&field.as_str()) {
            continue;
        }
        // The metric's name holds the field's, except where the metric is older.
        let name = match field.as_str() {
            "stream_encodes" => "jpeg_encodes",
            f => f,
        };
        let exported = text.lines().any(|l| {
            l.starts_with("ocellus_") && l.contains(name) && l.contains("camera=\"street\"")
        });
        assert!(
            exported,
            "stats field cameras[].{field} is not in /metrics:\n{text}"
        );
    }
    let db = stats["db"].as_object().unwrap();
    assert_eq!(db.len(), 6, "{db:?}");
    for field in db.keys() {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("ocellus_db_{field}"))),
            "stats field db.{field} is not in /metrics:\n{text}"
        );
    }
    // The box's health: every figure this machine has is in both, and the ones that do not move
    // agree.
    let health = stats["health"].as_object().unwrap();
    for (field, metric) in [
        ("cpus", "ocellus_host_cpus "),
        ("load", "ocellus_host_load{period=\"1m\"} "),
        ("memory_total_bytes", "ocellus_host_memory_total_bytes "),
        (
            "memory_available_bytes",
            "ocellus_host_memory_available_bytes ",
        ),
        ("process_rss_bytes", "ocellus_process_resident_bytes "),
        ("disk_free_bytes", "ocellus_db_disk_free_bytes "),
        ("disk_total_bytes", "ocellus_db_disk_total_bytes "),
    ] {
        assert!(
            !health[field].is_null(),
            "health.{field} is missing: {health:?}"
        );
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(metric))
            .unwrap_or_else(|| panic!("health.{field} is not in /metrics:\n{text}"));
        if ["cpus", "memory_total_bytes", "disk_total_bytes"].contains(&field) {
            assert_eq!(
                value.parse::<f64>().unwrap(),
                health[field].as_f64().unwrap(),
                "{field}"
            );
        }
    }
    let counters = ocellus::telemetry::metrics::CameraStats::default().counters();
    assert_eq!(counters.len(), 13);
    for c in counters {
        assert!(
            text.contains(&format!("# TYPE {} counter", c.name))
                && text.contains(&format!("{}{{camera=\"street\"}} ", c.name)),
            "{} is not in /metrics:\n{text}",
            c.name
        );
    }
}

/// Started from another directory, the daemon finds what its config names relative to the
/// config file (the model, the clip, the database), and with no model named it finds the
/// default one (the source checkout here; /usr/share/ocellus in a package) instead of falling
/// back to HOG; a replay from anywhere does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_are_relative_to_the_config_file_not_the_working_directory() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let m = cfg_dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    std::fs::copy(harness::fastestdet(), m.join("net.onnx")).unwrap();
    std::fs::copy(
        harness::asset("models/fastestdet/coco.names"),
        m.join("labels.txt"),
    )
    .unwrap();
    std::fs::copy(harness::vtest(), cfg_dir.path().join("clip.avi")).unwrap();
    let cfg = cfg_dir.path().join("ocellus.toml");
    std::fs::write(
        &cfg,
        "[detector]\nkind = \"dnn\"\nfamily = \"fastestdet\"\nmodel = \"m/net.onnx\"\n\
         labels = \"m/labels.txt\"\ninput_width = 352\ninput_height = 352\n\
         [storage]\npath = \"events.db\"\n\
         [[cameras]]\nid = \"street\"\nsource = \"clip.avi\"\n",
    )
    .unwrap();
    let mut cmd = DaemonProc::command(&cfg, "127.0.0.1:0");
    cmd.current_dir(elsewhere.path());
    let db = cfg_dir.path().join("events.db");
    let dmn = DaemonProc::spawn(cmd, tempfile::tempdir().unwrap(), db.clone());
    wait_state(&dmn, "connected").await;
    let stats = d::get_json(&dmn.url("/api/stats")).await;
    let det = &stats["cameras"][0]["detector"];
    assert_eq!(det["kind"], "dnn", "{det}");
    assert!(
        det["model"].as_str().unwrap().ends_with("m/net.onnx"),
        "{det}"
    );
    assert!(db.exists(), "the database is next to the config");
    let health = d::get_json(&dmn.url("/healthz")).await;
    assert_eq!(health["warnings"].as_array().unwrap().len(), 0, "{health}");
    drop(dmn);

    // No model named, started elsewhere: the default model, found, not HOG.
    let clip = cfg_dir.path().join("clip.avi");
    let out = Command::new(env!("CARGO_BIN_EXE_ocellus"))
        .args(["replay", clip.to_str().unwrap()])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("detector nanodet "), "{err}");
    assert!(!err.contains("HOG"), "{err}");
}

/// A missing model with `kind = "auto"` is not silent: the stats name it, `/healthz` lists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_to_hog_is_reported_in_the_stats_and_healthz() {
    let dmn = DaemonProc::street("[detector]\nmodel = \"/nonexistent/model.onnx\"\n");
    wait_state(&dmn, "connected").await;
    let stats = d::get_json(&dmn.url("/api/stats")).await;
    let det = &stats["cameras"][0]["detector"];
    assert_eq!(det["kind"], "hog", "{det}");
    assert!(
        det["warning"]
            .as_str()
            .is_some_and(|w| w.contains("/nonexistent/model.onnx")),
        "{det}"
    );
    let health = d::get_json(&dmn.url("/healthz")).await;
    let warnings = health["warnings"].as_array().unwrap();
    assert!(
        warnings.len() == 1 && warnings[0].as_str().unwrap().contains("HOG"),
        "{health}"
    );
}

/// What a frame reader saw: the frames' seqs and the `lagged` messages, in order of arrival.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    lagged: Vec<serde_json::Value>,
}

/// Reads frames (and `lagged` messages) until a frame at or past `*stop` arrives; publishes the
/// number of frames so far and the last one's seq on `progress`.
async fn read_frames_until(
    mut ws: d::Ws,
    stop: tokio::sync::watch::Receiver<u64>,
    progress: tokio::sync::watch::Sender<(usize, u64)>,
) -> Seen {
    let mut seen = Seen::default();
    loop {
        let msg = tokio::time::timeout(LONG, ws.next())
            .await
            .expect("a fast client waited a minute for a frame")
            .unwrap()
            .unwrap();
        match msg {
            Message::Binary(b) => {
                let seq = parse_frame_header(&b).unwrap().seq;
                seen.seqs.push(seq);
                progress.send_replace((seen.seqs.len(), seq));
                if seq >= *stop.borrow() {
                    return seen;
                }
            }
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "lagged" {
                    seen.lagged.push(v);
                }
            }
            _ => {}
        }
    }
}

/// A client whose socket's receive buffer stays at 128 KiB (no autotuning), so that what a stalled
/// reader leaves in flight is bounded on both ends (the daemon bounds its send buffer).
async fn small_window_client(dmn: &DaemonProc) -> d::Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let stream = socket.connect(dmn.addr.parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws", dmn.addr),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    ws
}

/// Subscribes `ws` to the street camera's full-size frames; returns once the daemon has replied.
async fn frames_subscriber(mut ws: d::Ws) -> d::Ws {
    next_of_type(&mut ws, "hello", LONG).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "topic": "frames", "camera": "street"}),
    )
    .await;
    next_of_type(&mut ws, "reply", LONG).await;
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_told_what_it_missed_and_resumes_while_fast_ones_keep_every_frame() {
    let dmn = DaemonProc::street(
        "[server]\nsend_timeout_s = 120\n[detector]\nkind = \"none\"\n[motion]\nenabled = false\n",
    );
    let mut slow = frames_subscriber(small_window_client(&dmn).await).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(u64::MAX);
    let mut fast = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..2 {
        let ws = frames_subscriber(connect(&dmn).await).await;
        let (tx, rx) = tokio::sync::watch::channel((0, 0));
        fast.push(tokio::spawn(read_frames_until(ws, stop.clone(), tx)));
        progress.push(rx);
    }
    // All three read until the slow one has a frame both fast ones have had.
    let mut before = Vec::new();
    let caught_up = tokio::time::Instant::now() + LONG;
    loop {
        let msg = tokio::time::timeout_at(caught_up, slow.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the slow client never caught up: its frames {:?}, the fast ones' last {:?}",
                    &before[before.len().saturating_sub(5)..],
                    progress.iter().map(|p| *p.borrow()).collect::<Vec<_>>()
                )
            });
        if let Some(Ok(Message::Binary(b))) = msg {
            before.push(parse_frame_header(&b).unwrap().seq);
            let fast_last = progress.iter().map(|p| p.borrow().1).min().unwrap();
            if fast_last > 0 && before.last() >= Some(&fast_last) {
                break;
            }
        }
    }
    // The slow client stops reading while the fast ones get 50 frames (5 s at 10 fps): its
    // socket's buffers hold about ten, the channel two more, the rest it misses.
    let start = progress[0].borrow().0;
    tokio::time::timeout(LONG, progress[0].wait_for(|&(n, _)| n >= start + 50))
        .await
        .expect("the fast client got 50 frames in a minute")
        .unwrap();

    // It reads again: the frames its buffers held, then `lagged`, then every frame from there on.
    let missed = loop {
        let msg = tokio::time::timeout(LONG, slow.next())
            .await
            .expect("the slow client waited a minute for `lagged`")
            .unwrap()
            .unwrap();
        match msg {
            Message::Binary(b) => before.push(parse_frame_header(&b).unwrap().seq),
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "lagged" {
                    assert_eq!(v["topic"], "frames:street", "{v}");
                    break v["missed"].as_u64().unwrap();
                }
            }
            _ => {}
        }
    };
    let mut after = Vec::new();
    while after.len() < 20 {
        match tokio::time::timeout(LONG, slow.next()).await.unwrap() {
            Some(Ok(Message::Binary(b))) => after.push(parse_frame_header(&b).unwrap().seq),
            Some(Ok(Message::Text(t))) => assert!(!t.contains("\"lagged\""), "lagged again: {t}"),
            other => assert!(matches!(other, Some(Ok(_))), "{other:?}"),
        }
    }
    let stop_at = *after.last().unwrap();
    stop_tx.send_replace(stop_at);
    let mut seen = Vec::new();
    for f in fast {
        seen.push(tokio::time::timeout(LONG, f).await.unwrap().unwrap());
    }

    // The fast clients were never behind and got the same frames, in order.
    for s in &seen {
        assert!(s.lagged.is_empty(), "a fast client lagged: {:?}", s.lagged);
    }
    // Each stops at its first frame at or past the slow client's last: they may be a frame or
    // two apart, being ahead of it.
    let common = |s: &Seen| -> Vec<u64> {
        let from = seen[0].seqs[0].max(seen[1].seqs[0]);
        s.seqs
            .iter()
            .copied()
            .filter(|&q| q >= from && q <= stop_at)
            .collect()
    };
    let reference = common(&seen[0]);
    assert_eq!(
        reference,
        common(&seen[1]),
        "both fast clients got every frame"
    );
    assert!(reference.windows(2).all(|w| w[0] < w[1]));
    // `missed` is exactly the frames the fast clients got between the slow one's last frame
    // before the gap and its first after it; after the gap it gets the same frames they do.
    let (last_before, first_after) = (*before.last().unwrap(), after[0]);
    assert!(
        reference.contains(&last_before),
        "{last_before} not in {reference:?}"
    );
    let gap = reference
        .iter()
        .filter(|&&q| q > last_before && q < first_after)
        .count() as u64;
    assert!(missed > 0);
    assert_eq!(
        missed, gap,
        "lagged says {missed} missed; the fast clients got {gap} frames between {last_before} and {first_after}"
    );
    let at = reference.iter().position(|&q| q == first_after).unwrap();
    assert_eq!(after, reference[at..at + after.len()], "resynchronised");
    assert!(
        before.windows(2).all(|w| w[0] < w[1]),
        "before the gap: {before:?}"
    );
}
