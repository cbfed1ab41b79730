//! Soak load: CLIENTS WebSocket clients connecting and disconnecting continuously for SECONDS.
//! Each client connects, subscribes to frames (320 px) and events, reads for 1-5 s, then leaves:
//! two times in three with a close handshake, once in three by dropping the TCP connection.
//! Every 10 s it prints a CSV row with the daemon's RSS and open file descriptors.
//!
//! cargo run --release --example ws_churn -- ADDR CAMERA CLIENTS SECONDS DAEMON_PID

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

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

fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[derive(Default)]
struct Counts {
    sessions: AtomicU64,
    frames: AtomicU64,
    events: AtomicU64,
    failures: AtomicU64,
}

async fn session(addr: &str, camera: &str, stay: Duration, abrupt: bool, c: &Counts) -> bool {
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
    )
    .await
    else {
        return false;
    };
    let subs = [
        serde_json::json!({"op": "subscribe", "topic": "frames", "camera": camera, "width": 320}),
        serde_json::json!({"op": "subscribe", "topic": "events"}),
    ];
    for s in subs {
        if ws.send(Message::Text(s.to_string().into())).await.is_err() {
            return false;
        }
    }
    let end = tokio::time::Instant::now() + stay;
    let mut frames = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(end, ws.next()).await {
        match msg {
            Message::Binary(_) => frames += 1,
            Message::Text(t) if t.contains("\"type\":\"event\"") => {
                c.events.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    c.frames.fetch_add(frames, Ordering::Relaxed);
    if !abrupt {
        let _ = ws.close(None).await;
    }
    drop(ws);
    frames > 0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: ws_churn ADDR CAMERA CLIENTS SECONDS DAEMON_PID");
        std::process::exit(2);
    }
    let (addr, camera) = (args[1].clone(), args[2].clone());
    let clients: u64 = args[3].parse().unwrap();
    let secs: u64 = args[4].parse().unwrap();
    let pid: u32 = args[5].parse().unwrap();
    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);

    let mut tasks = Vec::new();
    for i in 0..clients {
        let (addr, camera, c) = (addr.clone(), camera.clone(), counts.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while Instant::now() < deadline {
                // 1-5 s, varied per client and round without a random number crate.
                let stay = Duration::from_millis(1000 + (n * 7919 % 4000));
                let ok = session(&addr, &camera, stay, n % 3 == 2, &c).await;
                c.sessions.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    c.failures.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                n += clients;
            }
        }));
    }

    println!("t_s,rss_kib,fds,sessions,frames,events,failures");
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let t = started.elapsed().as_secs();
        let (Some(rss), Some(fds)) = (rss_kib(pid), open_fds(pid)) else {
            eprintln!("ws_churn: daemon {pid} is gone");
            std::process::exit(1);
        };
        println!(
            "{t},{rss},{fds},{},{},{},{}",
            counts.sessions.load(Ordering::Relaxed),
            counts.frames.load(Ordering::Relaxed),
            counts.events.load(Ordering::Relaxed),
            counts.failures.load(Ordering::Relaxed)
        );
        if Instant::now() >= deadline {
            break;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
}
