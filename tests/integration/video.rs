//! The live video topic against real parts: a daemon reading an H.264 file camera, WebSocket
//! clients, and ffprobe decoding what a viewer received.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::harness;
use harness::daemon::{self as d, connect, get_json, next_of_type, send, DaemonProc};
use ocellus::server::protocol::{parse_video_message, VIDEO_FLAG_INIT, VIDEO_FLAG_KEY};

const LONG: Duration = Duration::from_secs(60);

/// A daemon with one H.264 file camera, `cam`, and no detector: what is measured is the video.
fn video_daemon(clip: &Path, extra: &str) -> DaemonProc {
    DaemonProc::start(
        &format!("[detector]\nkind = \"none\"\n{extra}"),
        &format!(
            "[[cameras]]\nid = \"cam\"\nsource = {:?}\n[cameras.record]\nmode = \"off\"\n",
            clip.to_str().unwrap()
        ),
    )
}

/// The first sample's flags in a media segment's `trun` (version 1, flags 0xf01: data offset,
/// then duration, size, flags and composition offset per sample).
fn first_sample_flags(mp4: &[u8]) -> u32 {
    let at = mp4
        .windows(4)
        .position(|w| w == b"trun")
        .expect("a trun box");
    let flags_at = at + 4 + 4 + 4 + 4 + 4 + 4;
    u32::from_be_bytes(mp4[flags_at..flags_at + 4].try_into().unwrap())
}

/// The next binary live-video message: (flags, pts_ms, mp4 bytes). Text messages are
/// returned as `Err`.
async fn next_video(ws: &mut d::Ws) -> Result<(u8, i64, Vec<u8>), serde_json::Value> {
    loop {
        let msg = tokio::time::timeout(LONG, ws.next())
            .await
            .expect("a message within a minute")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Binary(b) => {
                let h = parse_video_message(&b).expect("a live-video message");
                assert_eq!(h.camera, "cam");
                return Ok((h.flags, h.pts_ms, h.mp4.to_vec()));
            }
            Message::Text(t) => return Err(serde_json::from_str(&t).unwrap()),
            _ => {}
        }
    }
}

async fn subscribe_video(ws: &mut d::Ws) -> serde_json::Value {
    send(
        ws,
        json!({"op": "subscribe", "topic": "video", "camera": "cam"}),
    )
    .await;
    next_of_type(ws, "video", LONG).await
}

/// A viewer who joins a running camera gets the codec, the init segment and then media
/// segments from a key frame: decoded by ffprobe, they are the stream's pictures at its size,
/// every one of them, the first a key frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_a_decodable_stream_from_a_key_frame() {
    let dir = tempfile::tempdir().unwrap();
    // 10 fps, a key frame every 2 s, B-frames on.
    let clip = harness::h264_clip(dir.path(), 200);
    let dmn = video_daemon(&clip, "");
    // Join late: once the camera has sent a second and a half, mid-GOP.
    let t0 = tokio::time::Instant::now();
    loop {
        let stats = get_json(&dmn.url("/api/stats")).await;
        if stats["cameras"][0]["captured"].as_u64().unwrap_or(0) >= 15 {
            break;
        }
        assert!(t0.elapsed() < LONG, "the camera never ran: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = connect(&dmn).await;
    let hello = next_of_type(&mut ws, "hello", LONG).await;
    assert_eq!(hello["protocol"], 2);
    let video = subscribe_video(&mut ws).await;
    assert_eq!(video["camera"], "cam");
    assert!(
        video["mime"]
            .as_str()
            .unwrap()
            .starts_with("video/mp4; codecs=\"avc1.64"),
        "{video}"
    );
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(768), Some(576))
    );

    let (flags, _, init) = next_video(&mut ws).await.unwrap();
    assert_eq!(flags, VIDEO_FLAG_INIT);
    assert_eq!(&init[4..8], b"ftyp");
    let mut stream = init;
    let mut n = 0;
    while n < 30 {
        match next_video(&mut ws).await {
            Ok((flags, _, seg)) => {
                if n == 0 {
                    assert_eq!(
                        flags & VIDEO_FLAG_KEY,
                        VIDEO_FLAG_KEY,
                        "the first is not key"
                    );
                    assert_eq!(
                        first_sample_flags(&seg),
                        0x0200_0000,
                        "trun: not a sync sample"
                    );
                }
                assert_eq!(flags & VIDEO_FLAG_INIT, 0, "a second init within 3 s");
                stream.extend_from_slice(&seg);
                n += 1;
            }
            Err(text) => assert_ne!(text["type"], "lagged", "{text}"),
        }
    }
    let file = dir.path().join("received.mp4");
    std::fs::write(&file, &stream).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v",
            "-of",
            "json",
        ])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ])
        .arg(&file)
        .output()
        .expect("ffprobe");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "ffprobe: {err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["codec_name"], "h264");
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(768), Some(576))
    );
    assert_eq!(s["nb_read_frames"], "30", "{v}");
    // The stats (a snapshot a second) count the viewer and what it was sent.
    let t0 = tokio::time::Instant::now();
    loop {
        let stats = get_json(&dmn.url("/api/stats")).await;
        let cam = &stats["cameras"][0];
        if cam["viewers"]["video"] == 1
            && cam["bytes_sent"]["video"].as_u64().unwrap_or(0) >= stream.len() as u64
        {
            assert_eq!(cam["viewers"]["jpeg"], 0, "{stats}");
            break;
        }
        assert!(
            t0.elapsed() < LONG,
            "the stats never counted the viewer: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A viewer that stops reading is told it lagged and resumes on a key frame, while a viewer
/// that keeps up gets every segment in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_falls_behind_skips_to_a_key_frame_while_a_fast_one_keeps_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    // 25 fps, a key frame every second, no B-frames, ~60 KB a picture: the slow viewer's
    // buffers fill in a second or two.
    let clip = harness::x264_clip(
        dir.path(),
        "fast.mp4",
        400,
        &[
            "-vf", "fps=25", "-g", "25", "-bf", "0", "-b:v", "12M", "-minrate", "12M", "-maxrate",
            "12M", "-bufsize", "2M",
        ],
    );
    let dmn = video_daemon(&clip, "[server]\nsend_timeout_s = 120\n");
    let mut slow = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(32 * 1024).unwrap();
        let stream = socket.connect(dmn.addr.parse().unwrap()).await.unwrap();
        tokio_tungstenite::client_async(
            format!("ws://{}/ws", dmn.addr),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .unwrap()
        .0
    };
    next_of_type(&mut slow, "hello", LONG).await;
    subscribe_video(&mut slow).await;
    let mut fast = connect(&dmn).await;
    next_of_type(&mut fast, "hello", LONG).await;
    subscribe_video(&mut fast).await;

    // The fast viewer reads 200 segments (8 s) while the slow one reads nothing.
    let mut pts = Vec::new();
    while pts.len() < 200 {
        match next_video(&mut fast).await {
            Ok((flags, ts, _)) if flags & VIDEO_FLAG_INIT == 0 => pts.push(ts),
            Ok(_) => pts.clear(), // the file looped: a new stream
            Err(text) => assert_ne!(text["type"], "lagged", "the fast viewer lagged: {text}"),
        }
    }
    // Every picture, 40 ms apart.
    for w in pts.windows(2) {
        assert!(
            (w[1] - w[0] - 40).abs() <= 1,
            "a gap in the fast viewer's stream: {w:?}"
        );
    }
    // The slow one reads again: what its buffers held, then `lagged`, then a key frame.
    let lagged = loop {
        match next_video(&mut slow).await {
            Ok(_) => {}
            Err(text) if text["type"] == "lagged" => break text,
            Err(_) => {}
        }
    };
    assert_eq!(lagged["topic"], "video:cam", "{lagged}");
    assert!(lagged["missed"].as_u64().unwrap() > 0);
    let (flags, _, seg) = match next_video(&mut slow).await {
        Ok(v) => v,
        Err(text) => panic!("after lagged: {text}"),
    };
    assert!(
        flags & (VIDEO_FLAG_KEY | VIDEO_FLAG_INIT) != 0,
        "resumed on a picture that is not key"
    );
    if flags & VIDEO_FLAG_KEY != 0 {
        assert_eq!(first_sample_flags(&seg), 0x0200_0000);
    }
}

/// A camera whose stream is not H.264/H.265 says so to a video subscriber (who falls back to
/// its frames).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_without_h264_says_why_it_has_no_video() {
    let dmn = video_daemon(&harness::vtest(), "");
    let mut ws = connect(&dmn).await;
    next_of_type(&mut ws, "hello", LONG).await;
    send(
        &mut ws,
        json!({"op": "subscribe", "topic": "video", "camera": "cam"}),
    )
    .await;
    let why = next_of_type(&mut ws, "video_unavailable", LONG).await;
    assert_eq!(why["camera"], "cam");
    assert!(
        why["reason"]
            .as_str()
            .unwrap()
            .contains("not H.264 or H.265"),
        "{why}"
    );
}
