//! `ocellus fleet` against a real Mosquitto and real daemons on the street clip: every event
//! each box stored is in the fleet's database once, with its device; a box killed with -9 shows
//! offline within the keep-alive and online again after its restart; a fleet view killed with
//! -9 mid-run misses nothing (its persistent session); and the fleet dashboard in Chromium.

use crate::harness;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::broker::Broker;
use harness::browser::{browser, text_of};
use harness::daemon::{connect, get_json, next_of_type, until_close, DaemonProc};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A box publishing as `device`, its stats every second.
fn box_config(broker: &Broker, device: &str) -> String {
    format!(
        "[mqtt]\nurl = \"{}\"\ndevice_id = \"{device}\"\nstats_interval_s = 1\n\
         dashboard_url = \"http://{device}.local:8080/\"\n",
        broker.url()
    )
}

/// The fleet view on `listen`, its config and database in `dir` (kept across restarts).
fn start_fleet(dir: &Path, broker: &Broker, listen: &str) -> DaemonProc {
    let cfg = dir.join("fleet.toml");
    let db = dir.join("fleet.db");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\npath = {db:?}\n[mqtt]\nurl = \"{}\"\ndevice_id = \"fleet-test\"\n",
            broker.url()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocellus"));
    cmd.args([
        "fleet",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        listen,
    ]);
    DaemonProc::spawn(cmd, tempfile::tempdir().unwrap(), db)
}

/// Polls `f` (a real observation each time) until it gives `Some`, at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn devices(fleet: &DaemonProc) -> BTreeMap<String, Value> {
    let v = get_json(&fleet.url("/api/devices")).await;
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| (d["device"].as_str().unwrap().to_string(), d.clone()))
        .collect()
}

/// (id, end_ms) of every event in a box's database.
fn box_events(db: &Path) -> BTreeMap<i64, Option<i64>> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c.prepare("SELECT id, end_ms FROM events").unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

/// (device, id) -> (end_ms, how many rows) in the fleet's database.
fn fleet_events(db: &PathBuf) -> BTreeMap<(String, i64), (Option<i64>, i64)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let mut st = c
        .prepare("SELECT device, id, MAX(end_ms), COUNT(*) FROM events GROUP BY device, id")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

async fn events_started(d: &DaemonProc) -> u64 {
    get_json(&d.url("/api/stats")).await["cameras"][0]["events_started"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_boxes_in_one_view_through_a_box_crash_and_a_fleet_crash_with_no_event_lost() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let fleet_dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(fleet_dir.path(), &broker, "127.0.0.1:0");
    let names = ["pi-1", "pi-2", "pi-3"];
    let mut boxes: Vec<DaemonProc> = names
        .iter()
        .map(|d| DaemonProc::street(&box_config(&broker, d)))
        .collect();

    // All three online, with their health, their dashboard address and events.
    until(
        "three devices online with stats and events",
        Duration::from_secs(120),
        || async {
            let d = devices(&fleet).await;
            let ready = names.iter().all(|n| {
                d.get(*n).is_some_and(|v| {
                    v["online"] == true
                        && v["stats"]["health"]["memory_total_bytes"]
                            .as_u64()
                            .unwrap_or(0)
                            > 0
                        && v["stats"]["cameras"][0]["id"] == "street"
                        && v["info"]["dashboard_url"] == format!("http://{n}.local:8080/")
                        && v["events"].as_i64().unwrap_or(0) > 0
                })
            });
            ready.then_some(())
        },
    )
    .await;

    // pi-2 crashes: the broker's last will makes it offline within the keep-alive (15 s x 1.5).
    let killed = Instant::now();
    boxes[1].kill_9();
    until("pi-2 offline", Duration::from_secs(40), || async {
        (devices(&fleet).await["pi-2"]["online"] == false).then_some(())
    })
    .await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(30), "offline after {took:?}");
    let others = devices(&fleet).await;
    assert_eq!(
        (
            others["pi-1"]["online"].clone(),
            others["pi-3"]["online"].clone()
        ),
        (json!(true), json!(true))
    );
    let pi2 = boxes.remove(1).start_again();
    boxes.insert(1, pi2);
    until("pi-2 online again", Duration::from_secs(60), || async {
        (devices(&fleet).await["pi-2"]["online"] == true).then_some(())
    })
    .await;

    // The fleet view crashes; the boxes go on. Events started while it is down are kept for its
    // session by the broker.
    let mut fleet = fleet;
    let fleet_addr = fleet.addr.clone();
    fleet.kill_9();
    drop(fleet);
    let before: u64 = {
        let mut n = 0;
        for b in &boxes {
            n += events_started(b).await;
        }
        n
    };
    until(
        "two events while the fleet view is down",
        Duration::from_secs(90),
        || async {
            let mut n = 0;
            for b in &boxes {
                n += events_started(b).await;
            }
            (n >= before + 2).then_some(())
        },
    )
    .await;
    let mut fleet = start_fleet(fleet_dir.path(), &broker, &fleet_addr);

    // The boxes stop cleanly (their events end, their outboxes drain); then every event each
    // stored is in the fleet's database once, with its device and its end.
    for b in &mut boxes {
        b.signal(15);
        assert!(b
            .wait_exit(Duration::from_secs(30))
            .is_some_and(|s| s.success()));
    }
    let expected: BTreeMap<(String, i64), Option<i64>> = names
        .iter()
        .zip(&boxes)
        .flat_map(|(n, b)| {
            box_events(&b.db)
                .into_iter()
                .map(move |(id, end)| ((n.to_string(), id), end))
        })
        .collect();
    assert!(expected.len() >= 6, "{expected:?}");
    let db = fleet_dir.path().join("fleet.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = fleet_events(&db);
        let ids_match = got.keys().eq(expected.keys());
        // pi-2's first run was killed: the events it left open stay open in its database and
        // in the fleet's alike; every end a box stored reached the fleet.
        let ends_match = expected
            .iter()
            .all(|(k, end)| got.get(k).is_some_and(|g| g.0 == *end));
        if ids_match && ends_match {
            assert!(got.values().all(|(_, n)| *n == 1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet's events differ from the boxes':\nmissing {:?}\nextra {:?}\nends differ {:?}",
            expected.keys().filter(|k| !got.contains_key(*k)).collect::<Vec<_>>(),
            got.keys().filter(|k| !expected.contains_key(*k)).collect::<Vec<_>>(),
            expected.iter().filter(|(k, e)| got.get(*k).is_some_and(|g| g.0 != **e)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A clean stop says offline.
    until(
        "the stopped boxes offline",
        Duration::from_secs(30),
        || async {
            let d = devices(&fleet).await;
            names.iter().all(|n| d[*n]["online"] == false).then_some(())
        },
    )
    .await;

    // A clean stop of the fleet view tells every open dashboard it is going away.
    let mut dashboards = Vec::new();
    for _ in 0..6 {
        let mut ws = connect(&fleet).await;
        next_of_type(&mut ws, "hello", Duration::from_secs(10)).await;
        dashboards.push(ws);
    }
    fleet.signal(15);
    for (i, ws) in dashboards.iter_mut().enumerate() {
        assert_eq!(
            until_close(ws, |_| {}).await,
            CloseCode::Away,
            "dashboard {i}"
        );
    }
    assert!(fleet
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// The events the fleet dashboard lists, as `device:id`, from its probe.
fn shown(probe: &Value) -> Vec<String> {
    probe["shown"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_dashboard_shows_devices_health_the_feed_its_filters_snapshots_and_clip_links() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let fleet_dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(fleet_dir.path(), &broker, "127.0.0.1:0");
    // South's camera sends H.264 and records: its events link their clips on the box.
    let south_camera = format!(
        "[[cameras]]\nid = \"street\"\nsource = {:?}\n",
        harness::vtest_h264().to_str().unwrap()
    );
    let _boxes = [
        DaemonProc::street(&box_config(&broker, "north")),
        DaemonProc::start(&box_config(&broker, "south"), &south_camera),
    ];
    let (_driver, c, _profile) = browser().await;
    c.goto(&fleet.url("/")).await.unwrap();
    let probe = |c: &fantoccini::Client| {
        let c = c.clone();
        async move {
            c.execute("return window.ocellusFleet || {}", vec![])
                .await
                .unwrap()
        }
    };
    // Both devices listed online, with their health; events from both in the feed.
    until(
        "two devices and events from both on the page",
        Duration::from_secs(120),
        || async {
            let p = probe(&c).await;
            let online = p["online"].as_array().map_or(0, Vec::len);
            let shown = shown(&p);
            let both = ["north:", "south:"]
                .iter()
                .all(|d| shown.iter().any(|s| s.starts_with(d)));
            (p["ws"] == "live" && online == 2 && both).then_some(())
        },
    )
    .await;
    let row = until(
        "the north row with health",
        Duration::from_secs(60),
        || async {
            text_of(&c, "#devices tr[data-device=\"north\"]")
                .await
                .filter(|t| t.contains("online") && t.contains("GB") && t.contains("fps"))
        },
    )
    .await;
    assert!(row.contains("street"), "{row}");
    let link = c
        .execute(
            "return document.querySelector('#devices tr[data-device=\"north\"] a').href",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(link, "http://north.local:8080/");

    // South's events link their clips on south; north's camera (MPEG-4) records nothing.
    let clips = until("a clip link in the feed", Duration::from_secs(60), || async {
        let v = c
            .execute(
                "return [...document.querySelectorAll('#event-list li')].map(li => [li.dataset.device, li.dataset.id, li.querySelector('a.clip') ? li.querySelector('a.clip').href : null])",
                vec![],
            )
            .await
            .unwrap();
        let rows: Vec<(String, String, Option<String>)> = serde_json::from_value(v).unwrap();
        rows.iter().any(|r| r.2.is_some()).then_some(rows)
    })
    .await;
    for (device, id, href) in &clips {
        let want = (device == "south")
            .then(|| format!("http://south.local:8080/api/events/{id}/clip.mp4"));
        assert_eq!(href, &want, "{device} event {id}");
    }
    // The device filter: only south's events are listed.
    c.execute(
        "const s = document.querySelector('#f-device'); s.value = 'south'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    until("only south's events", Duration::from_secs(30), || async {
        let p = probe(&c).await;
        let shown = shown(&p);
        (!shown.is_empty() && shown.iter().all(|s| s.starts_with("south:"))).then_some(())
    })
    .await;
    // An event's snapshot is shown: a decoded JPEG in the feed.
    until("a snapshot in the feed", Duration::from_secs(60), || async {
        let v = c
            .execute(
                "return [...document.querySelectorAll('#event-list img')].filter(i => i.complete && i.naturalWidth > 0).length",
                vec![],
            )
            .await
            .unwrap();
        (v.as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    // The counts table has both devices' street camera.
    let counts = text_of(&c, "#places tbody").await.unwrap_or_default();
    assert!(
        counts.contains("north") && counts.contains("south") && counts.contains("person"),
        "{counts}"
    );
    c.close().await.unwrap();
}
