//! Event messages through MQTT to a broker on this machine, measured by a subscriber:
//!
//!     cargo run --release --example mqtt_bench -- BROKER_PORT MODE [N] [OCELLUS]
//!
//! MODE `backlog`: N event messages wait in the outbox (as after an outage), then `ocellus run`
//! starts and drains them. MODE `live`: `ocellus run` is connected first, then N messages are
//! inserted into its outbox as fast as SQLite takes them, 100 a transaction (events arriving
//! faster than any camera makes them). Prints messages per second from the first to the last received.

use std::time::{Duration, Instant};

use ocellus::db::{DbCommand, OutboxLimits, OutboxMessage, WriterOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// An event message as the pipeline writes it (about 450 bytes).
fn message(i: usize) -> OutboxMessage {
    let json = format!(
        r#"{{"type":"event","kind":"end","event":{{"id":{i},"camera":"street","label":"person","track_id":{i},"start_ms":1764000000000,"end_ms":1764000012300,"top_score":0.87,"box":{{"x":301.5,"y":120.0,"w":41.2,"h":97.0}},"best_ms":1764000001200,"hits":57,"stationary":false,"zones":["driveway"],"crossings":[{{"line":"gate","direction":"left","ms":1764000003100}}]}}}}"#
    );
    OutboxMessage {
        topic: "ocellus/bench/events".into(),
        payload: json.into_bytes(),
        retain: false,
        created_ms: ocellus::base::clock::now_ms(),
    }
}

fn fill(db: &std::path::Path, n: usize) {
    let mut opts = WriterOptions::from_config(&ocellus::config::StorageConfig::default(), false);
    opts.outbox = Some(OutboxLimits {
        max_messages: 10_000_000,
        max_age_ms: 86_400_000,
    });
    let storage = ocellus::db::start(db, opts).expect("database");
    for i in 0..n {
        storage
            .handle
            .send(DbCommand::Outbox(message(i)))
            .expect("writer");
    }
    storage.handle.flush().expect("flush");
    drop(storage.handle);
    storage.thread.join().expect("writer thread");
}

/// Inserts the messages while the daemon runs, 100 a transaction, as its writer would as events
/// happen (the daemon's own writer deletes the acknowledged ones meanwhile).
fn fill_live(db: &std::path::Path, n: usize) {
    let mut conn = rusqlite::Connection::open(db).expect("database");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let tx = conn.transaction().unwrap();
        for &i in chunk {
            let m = message(i);
            tx.execute(
                "INSERT INTO mqtt_outbox (topic, payload, retain, created_ms) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![m.topic, m.payload, m.retain, m.created_ms],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: mqtt_bench BROKER_PORT backlog|live [N] [OCELLUS]");
        std::process::exit(2);
    }
    let port: u16 = args[1].parse().expect("port");
    let mode = args[2].clone();
    let n: usize = args.get(3).map_or(20_000, |s| s.parse().expect("N"));
    let bin = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "target/release/ocellus".into());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db");
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\npath = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"bench\"\nha_discovery = false\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();

    let mut o = MqttOptions::new("bench-sub", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut ev) = AsyncClient::new(o, 100);
    client
        .subscribe("ocellus/bench/events", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = ev.poll().await.expect("broker") {
            break;
        }
    }
    if mode == "backlog" {
        fill(&db, n);
    }
    let mut daemon = std::process::Command::new(&bin)
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ocellus");
    let started = Instant::now();
    let filler = (mode == "live").then(|| {
        let db = db.clone();
        std::thread::spawn(move || {
            // The daemon made the database; wait until it is connected.
            std::thread::sleep(Duration::from_secs(2));
            fill_live(&db, n);
        })
    });
    let (mut got, mut first) = (0usize, None);
    let deadline = Instant::now() + Duration::from_secs(600);
    while got < n && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Packet::Publish(_)))) =
            tokio::time::timeout(Duration::from_secs(5), ev.poll()).await
        {
            first.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let last = Instant::now();
    let _ = daemon.kill();
    let _ = daemon.wait();
    if let Some(f) = filler {
        let _ = f.join();
    }
    let first = first.unwrap_or(last);
    let secs = (last - first).as_secs_f64().max(1e-9);
    println!(
        "{mode}: {got} of {n} messages in {secs:.2} s = {:.0} messages/s (first after {:.2} s)",
        got as f64 / secs,
        (first - started).as_secs_f64()
    );
}
