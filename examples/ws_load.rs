//! Load generator for the live feed: N WebSocket clients subscribe to one camera's frames (and to
//! events) and report delivered fps per client, capture-to-client latency from the timestamp in
//! each frame header, and the daemon's CPU use over the run: the whole process's and that of its
//! tokio workers (`ocellus-rt`, where the fan-out runs; "-" for a server without them). With `--detections` they also
//! subscribe to the camera's detections and report their capture-to-client latency ("boxes"):
//! frames are streamed from capture, detections follow when the detector is done.
//!
//! With `--video` they subscribe to the camera's live video instead of its JPEG frames
//! (a media segment per picture; latency from the picture's time, which is the packet's
//! arrival on the daemon's clock) and the daemon's CPU is also given per delivered picture.
//!
//! cargo run --release --example ws_load -- ADDR CAMERA CLIENTS SECONDS [WIDTH] [DAEMON_PID] [--detections] [--video]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// User + system CPU ticks from a `/proc/.../stat` file (a process's or one of its threads').
fn stat_ticks(path: std::path::PathBuf) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    stat_ticks(format!("/proc/{pid}/stat").into())
}

/// CPU ticks of the process's threads named `name` (the daemon's tokio workers, `ocellus-rt`,
/// where the fan-out runs); None when it has none (another server).
fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    let mut total = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            *total.get_or_insert(0) += stat_ticks(task.path().join("stat")).unwrap_or(0);
        }
    }
    total
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let detections = args.iter().any(|a| a == "--detections");
    let video = args.iter().any(|a| a == "--video");
    args.retain(|a| a != "--detections" && a != "--video");
    if args.len() < 5 {
        eprintln!("usage: ws_load ADDR CAMERA CLIENTS SECONDS [WIDTH] [DAEMON_PID] [--detections]");
        std::process::exit(2);
    }
    let (addr, camera) = (args[1].clone(), args[2].clone());
    let clients: usize = args[3].parse().unwrap();
    let secs: u64 = args[4].parse().unwrap();
    let width: u32 = args.get(5).map(|w| w.parse().unwrap()).unwrap_or(0);
    let pid: Option<u32> = args.get(6).map(|p| p.parse().unwrap());

    let mut tasks = Vec::new();
    let start_gate = std::sync::Arc::new(tokio::sync::Barrier::new(clients + 1));
    // The daemon serves a bounded number of HTTP connections that are not yet WebSockets, so
    // a thousand clients open their connections a few dozen at a time.
    let handshakes = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    for _ in 0..clients {
        let (addr, camera, gate) = (addr.clone(), camera.clone(), start_gate.clone());
        let handshakes = handshakes.clone();
        tasks.push(tokio::spawn(async move {
            let permit = handshakes.acquire_owned().await.unwrap();
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .unwrap_or_else(|e| panic!("connecting to ws://{addr}/ws: {e}"));
            drop(permit);
            let sub = if video {
                serde_json::json!({"op": "subscribe", "topic": "video", "camera": camera})
            } else {
                serde_json::json!({"op": "subscribe", "topic": "frames", "camera": camera, "width": width})
            };
            ws.send(Message::Text(sub.to_string().into())).await.unwrap();
            ws.send(Message::Text(r#"{"op":"subscribe","topic":"events"}"#.into())).await.unwrap();
            if detections {
                let sub = serde_json::json!({"op": "subscribe", "topic": "detections", "camera": camera});
                ws.send(Message::Text(sub.to_string().into())).await.unwrap();
            }
            gate.wait().await;
            // Pictures taken before the measurement began (a joiner's kept GOP) are not
            // deliveries of the run: their latency is the GOP's age.
            let since = now_ms();
            let end = tokio::time::Instant::now() + Duration::from_secs(secs);
            let (mut frames, mut bytes, mut lagged) = (0u64, 0u64, 0u64);
            let (mut lat, mut box_lat) = (Vec::new(), Vec::new());
            let (mut first_seq, mut last_seq) = (None, 0u64);
            let mut pts: Vec<i64> = Vec::new();
            while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end, ws.next()).await {
                match msg {
                    Message::Binary(b) if video => {
                        let h = ocellus::server::protocol::parse_video_message(&b).unwrap();
                        if h.flags & ocellus::server::protocol::VIDEO_FLAG_INIT != 0
                            || h.pts_ms < since
                        {
                            continue;
                        }
                        lat.push((now_ms() - h.pts_ms) as f64);
                        pts.push(h.pts_ms);
                        frames += 1;
                        bytes += b.len() as u64;
                    }
                    Message::Binary(b) => {
                        let h = ocellus::server::protocol::parse_frame_header(&b).unwrap();
                        lat.push((now_ms() - h.ts_ms) as f64);
                        first_seq.get_or_insert(h.seq);
                        last_seq = h.seq;
                        frames += 1;
                        bytes += b.len() as u64;
                    }
                    Message::Text(t) if t.contains("\"lagged\"") => lagged += 1,
                    Message::Text(t) if t.starts_with(r#"{"type":"detections""#) => {
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        box_lat.push((now_ms() - v["ts_ms"].as_i64().unwrap()) as f64);
                    }
                    _ => {}
                }
            }
            // Pictures there were between the first and the last received: by sequence for
            // frames, by time (the median interval) for video.
            let span = if video {
                let mut gaps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).filter(|d| *d > 0).collect();
                gaps.sort_unstable();
                match (gaps.get(gaps.len() / 2), pts.first(), pts.last()) {
                    (Some(&g), Some(a), Some(b)) => ((b - a) as f64 / g as f64).round() as u64 + 1,
                    _ => frames,
                }
            } else {
                first_seq.map(|f| last_seq - f + 1).unwrap_or(0)
            };
            (frames, bytes, lagged, span, lat, box_lat)
        }));
    }
    start_gate.wait().await;
    let t0 = Instant::now();
    let cpu0 = pid.and_then(cpu_ticks);
    let rt0 = pid.and_then(|p| thread_ticks(p, "ocellus-rt"));
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let share = |b: Option<u64>, a: Option<u64>| match (b, a) {
        (Some(b), Some(a)) => Some(b.saturating_sub(a) as f64 / 100.0 / elapsed * 100.0),
        _ => None,
    };
    let cpu = share(pid.and_then(cpu_ticks), cpu0);
    // The tokio workers' threads are the same while the daemon runs, so the difference is theirs.
    let rt = share(pid.and_then(|p| thread_ticks(p, "ocellus-rt")), rt0);
    let sorted = |v: Vec<f64>| {
        let mut v = v;
        v.sort_by(f64::total_cmp);
        v
    };
    let pct = |v: &[f64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let all_lat = sorted(results.iter().flat_map(|r| r.4.iter().copied()).collect());
    let box_lat = sorted(results.iter().flat_map(|r| r.5.iter().copied()).collect());
    let boxes = if detections {
        format!(
            "  boxes p50 {:.0} ms p99 {:.0} ms",
            pct(&box_lat, 0.5),
            pct(&box_lat, 0.99)
        )
    } else {
        String::new()
    };
    let fps: Vec<f64> = results.iter().map(|r| r.0 as f64 / elapsed).collect();
    let share: Vec<f64> = results
        .iter()
        .map(|r| {
            if r.3 == 0 {
                0.0
            } else {
                r.0 as f64 / r.3 as f64
            }
        })
        .collect();
    let frame_kib = results.iter().map(|r| r.1).sum::<u64>() as f64
        / results.iter().map(|r| r.0).sum::<u64>().max(1) as f64
        / 1024.0;
    let delivered: u64 = results.iter().map(|r| r.0).sum();
    let per_frame = cpu.map(|c| c / 100.0 * elapsed / delivered.max(1) as f64 * 1e6);
    let kib_s = results.iter().map(|r| r.1).sum::<u64>() as f64 / 1024.0 / elapsed / clients as f64;
    println!(
        "{}  KiB/s per viewer {kib_s:.0}  daemon cpu per delivered picture {} us",
        if video { "video" } else { "jpeg" },
        per_frame.map(|u| format!("{u:.1}")).unwrap_or("-".into())
    );
    println!(
        "clients {clients}  width {}  {:.1}s  fps/client mean {:.2} min {:.2}  delivered share min {:.1}%  frame {:.0} KiB  latency p50 {:.0} ms p99 {:.0} ms{boxes}  lagged msgs {}  daemon cpu {}  workers cpu {}  rss {}",
        if width == 0 { "full".to_string() } else { width.to_string() },
        elapsed,
        fps.iter().sum::<f64>() / fps.len() as f64,
        fps.iter().copied().fold(f64::INFINITY, f64::min),
        share.iter().copied().fold(f64::INFINITY, f64::min) * 100.0,
        frame_kib,
        pct(&all_lat, 0.5),
        pct(&all_lat, 0.99),
        results.iter().map(|r| r.2).sum::<u64>(),
        cpu.map(|c| format!("{c:.1}%")).unwrap_or("-".into()),
        rt.map(|c| format!("{c:.1}%")).unwrap_or("-".into()),
        pid.and_then(rss_kib).map(|r| format!("{} MiB", r / 1024)).unwrap_or("-".into()),
    );
}
