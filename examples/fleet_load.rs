//! Load generator for `ocellus fleet`: N simulated boxes, each its own MQTT connection to a real
//! broker, publishing what a box publishes (retained availability and info, stats every 60 s,
//! an event's start and end messages at RATE events per second per device, a snapshot with
//! every SNAPSHOT_EVERY-th event), while one WebSocket client on the fleet view measures the
//! end-to-end latency (device publish to fleet WebSocket, from the publish time carried in each
//! event's `best_ms`). Reports events stored per second, latency percentiles and the fleet
//! view's CPU and memory.
//!
//! cargo run --release --example fleet_load -- BROKER_PORT FLEET_ADDR DEVICES SECONDS RATE FLEET_PID [SNAPSHOT_EVERY [BROKER_PID]]
//!
//! With BROKER_PID it also reports the broker's CPU, and always its own: on one machine the
//! three share the cores, and the first to run out sets the limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio_tungstenite::tungstenite::Message;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A 320x240 JPEG, what a thumbnail-sized snapshot weighs.
fn snapshot() -> Vec<u8> {
    let img = image::RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn event_json(kind: &str, id: i64, published: i64) -> Vec<u8> {
    let end = if kind == "end" {
        serde_json::Value::from(published)
    } else {
        serde_json::Value::Null
    };
    serde_json::json!({
        "type": "event", "kind": kind,
        "event": {"id": id, "camera": "gate", "label": "person", "track_id": id,
                  "start_ms": published - 1000, "end_ms": end, "top_score": 0.8,
                  "box": {"x": 10.0, "y": 20.0, "w": 30.0, "h": 60.0},
                  "best_ms": published, "hits": 12, "zones": ["door"], "crossings": []}
    })
    .to_string()
    .into_bytes()
}

/// One simulated box: connects, says online with its info, then publishes until `end`.
async fn device(
    port: u16,
    n: usize,
    rate: f64,
    snapshot_every: u64,
    jpeg: Arc<Vec<u8>>,
    end: Instant,
    published: Arc<AtomicU64>,
) {
    let name = format!("sim-{n:04}");
    let base = format!("ocellus/{name}");
    let mut o = MqttOptions::new(format!("ocellus-{name}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o.set_last_will(rumqttc::LastWill::new(
        format!("{base}/available"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut ev) = AsyncClient::new(o, 256);
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(_) => {}
                // The broker is busy or gone: try again shortly, until the run is over.
                Err(_) if Instant::now() < end => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(_) => break,
            }
        }
    });
    let info = serde_json::json!({"version": "sim", "dashboard_url": format!("http://{name}.local:8080/"), "cameras": ["gate"]});
    let _ = client
        .publish(
            format!("{base}/info"),
            QoS::AtLeastOnce,
            true,
            info.to_string(),
        )
        .await;
    let _ = client
        .publish(
            format!("{base}/available"),
            QoS::AtLeastOnce,
            true,
            "online",
        )
        .await;
    // Spread the devices' phases so that they do not publish in lockstep.
    let period = Duration::from_secs_f64(1.0 / rate);
    tokio::time::sleep(period.mul_f64((n % 97) as f64 / 97.0)).await;
    let stats_every = Duration::from_secs(60);
    let mut next_stats = Instant::now() + stats_every.mul_f64((n % 60) as f64 / 60.0);
    let mut tick = tokio::time::interval(period);
    let mut id = 0i64;
    while Instant::now() < end {
        tick.tick().await;
        id += 1;
        for kind in ["start", "end"] {
            let _ = client
                .publish(
                    format!("{base}/events"),
                    QoS::AtLeastOnce,
                    false,
                    event_json(kind, id, now_ms()),
                )
                .await;
            published.fetch_add(1, Ordering::Relaxed);
        }
        if snapshot_every > 0 && (id as u64).is_multiple_of(snapshot_every) {
            let _ = client
                .publish(
                    format!("{base}/gate/person/snapshot"),
                    QoS::AtLeastOnce,
                    true,
                    jpeg.as_slice(),
                )
                .await;
        }
        if Instant::now() >= next_stats {
            next_stats += stats_every;
            let stats = serde_json::json!({"type": "stats", "uptime_s": 1, "clients": 0,
                "cameras": [{"id": "gate", "state": "connected", "processed_fps": 10.0}],
                "health": {"cpus": 4, "cpu_percent": 30.0}});
            let _ = client
                .publish(
                    format!("{base}/stats"),
                    QoS::AtLeastOnce,
                    false,
                    stats.to_string(),
                )
                .await;
        }
    }
    let _ = client.disconnect().await;
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 7 {
        eprintln!("usage: fleet_load BROKER_PORT FLEET_ADDR DEVICES SECONDS RATE FLEET_PID [SNAPSHOT_EVERY]");
        std::process::exit(2);
    }
    let port: u16 = a[1].parse().unwrap();
    let fleet = a[2].clone();
    let devices: usize = a[3].parse().unwrap();
    let seconds: f64 = a[4].parse().unwrap();
    let rate: f64 = a[5].parse().unwrap();
    let pid: u32 = a[6].parse().unwrap();
    let snapshot_every: u64 = a.get(7).map_or(10, |s| s.parse().unwrap());
    let broker_pid: Option<u32> = a.get(8).map(|s| s.parse().unwrap());

    // The measuring client, connected before any device publishes.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{fleet}/ws"))
        .await
        .expect("the fleet view's /ws");
    let jpeg = Arc::new(snapshot());
    let published = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(5);
    let start = Instant::now();
    let end = start + warmup + Duration::from_secs_f64(seconds);
    for n in 0..devices {
        tokio::spawn(device(
            port,
            n,
            rate,
            snapshot_every,
            jpeg.clone(),
            end,
            published.clone(),
        ));
    }
    let mut latencies: Vec<i64> = Vec::new();
    let (mut received, mut lagged) = (0u64, 0u64);
    let (mut ticks0, mut measuring_from, mut published0) = (0, None, 0);
    let mut others0 = (0, 0);
    // After the devices stop, wait for the fleet to deliver what is still queued.
    let drain = Duration::from_secs(20);
    loop {
        let now = Instant::now();
        if measuring_from.is_none() && now >= start + warmup {
            measuring_from = Some(now);
            ticks0 = cpu_ticks(pid);
            others0 = (
                broker_pid.map_or(0, cpu_ticks),
                cpu_ticks(std::process::id()),
            );
            published0 = published.load(Ordering::Relaxed);
            received = 0;
            latencies.clear();
        }
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(2), ws.next()).await
        else {
            // After the run, two seconds without a message: everything queued has come.
            if now > end {
                break;
            }
            continue;
        };
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
            match v["type"].as_str() {
                Some("event") => {
                    received += 1;
                    if let Some(sent) = v["event"]["best_ms"].as_i64() {
                        latencies.push(now_ms() - sent);
                    }
                }
                Some("lagged") => lagged += v["missed"].as_u64().unwrap_or(0),
                _ => {}
            }
        }
        if Instant::now() > end + drain {
            break;
        }
    }
    let measured = measuring_from.map_or(0.0, |m| (Instant::now().min(end) - m).as_secs_f64());
    let sent = published.load(Ordering::Relaxed) - published0;
    let cpu_s = (cpu_ticks(pid) - ticks0) as f64 / 100.0;
    let broker_s = broker_pid.map(|b| (cpu_ticks(b) - others0.0) as f64 / 100.0);
    let own_s = (cpu_ticks(std::process::id()) - others0.1) as f64 / 100.0;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(-1)
    };
    println!(
        "devices {devices}  event messages published {sent} ({:.0}/s)  received on the fleet's /ws {received} ({:.0}/s, {:.1} %)  lagged {lagged}",
        sent as f64 / measured,
        received as f64 / measured,
        100.0 * received as f64 / sent.max(1) as f64
    );
    println!(
        "latency publish->fleet ws ms: p50 {} p90 {} p99 {} max {}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or(-1)
    );
    println!(
        "fleet view: CPU {:.1} % of one core ({:.0} µs per event message), RSS {} MiB (peak {} MiB)",
        100.0 * cpu_s / measured,
        1e6 * cpu_s / received.max(1) as f64,
        status_kib(pid, "VmRSS:") / 1024,
        status_kib(pid, "VmHWM:") / 1024
    );
    println!(
        "others: broker CPU {} of one core, this generator {:.1} %",
        broker_s.map_or("?".into(), |b| format!("{:.1} %", 100.0 * b / measured)),
        100.0 * own_s / measured
    );
}
