//! MQTT against a real Mosquitto (Debian's `mosquitto`, started here on a free port): events
//! with their ids, availability and the last will, Home Assistant discovery and entity states,
//! a 10 s broker outage that loses nothing, and broker problems that leave the daemon serving.

use crate::harness;
use std::collections::BTreeMap;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::broker::Broker;
use harness::daemon::{get_json, DaemonProc};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Every message on `ocellus/#` and `homeassistant/#`, in arrival order: (topic, payload,
/// retained). A persistent session (clean_session = false), so a broker restart keeps the
/// messages queued for it; it reconnects by itself.
/// A message as received: (topic, payload, retained).
type Received = (String, Vec<u8>, bool);

#[derive(Clone)]
struct Subscriber {
    seen: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    async fn start(port: u16, id: &str) -> Subscriber {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut ev) = AsyncClient::new(o, 100);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = seen.clone();
        let subscribed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = subscribed.clone();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    // A new session (first connection, or a broker that lost it): subscribe.
                    Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                        for t in ["ocellus/#", "homeassistant/#"] {
                            client.try_subscribe(t, QoS::AtLeastOnce).unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        acked.store(true, std::sync::atomic::Ordering::SeqCst)
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        out.lock()
                            .unwrap()
                            .push((p.topic.clone(), p.payload.to_vec(), p.retain))
                    }
                    Ok(_) => {}
                    // The broker is down: try again shortly (rumqttc reconnects on poll).
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !subscribed.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                Instant::now() < deadline,
                "the test subscriber could not subscribe"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Subscriber { seen }
    }

    fn messages(&self, topic: &str) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.0 == topic)
            .map(|m| m.1.clone())
            .collect()
    }

    /// The event messages: (kind, event).
    fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.messages("ocellus/testbox/events")
            .iter()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_slice(p).unwrap();
                (v["kind"].as_str().unwrap().to_string(), v["event"].clone())
            })
            .collect()
    }

    async fn until(&self, what: &str, limit: Duration, pred: impl Fn(&Subscriber) -> bool) {
        let deadline = Instant::now() + limit;
        while !pred(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn mqtt_config(url: &str, extra: &str) -> String {
    format!("[mqtt]\nurl = \"{url}\"\ndevice_id = \"testbox\"\n{extra}\n")
}

/// Where the last `offline` (the last will of a killed run) and the first `online` after it
/// (the new run) are in `seen`, once both have arrived.
fn restart_window(seen: &[Received]) -> Option<(usize, usize)> {
    let available = "ocellus/testbox/available";
    let offline = seen
        .iter()
        .rposition(|m| m.0 == available && m.1 == b"offline")?;
    let online = seen[offline..]
        .iter()
        .position(|m| m.0 == available && m.1 == b"online")?;
    Some((offline, offline + online))
}

fn last_availability(s: &Subscriber) -> Option<String> {
    s.messages("ocellus/testbox/available")
        .last()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_availability_discovery_and_entity_states_reach_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Subscriber::start(broker.port, "test-sub-1").await;
    let mut dmn = DaemonProc::street(&mqtt_config(&broker.url(), ""));

    sub.until("online", Duration::from_secs(30), |s| {
        last_availability(s).as_deref() == Some("online")
    })
    .await;
    sub.until("an event's start and end", Duration::from_secs(90), |s| {
        let ev = s.events();
        ev.iter().any(|(k, e)| {
            k == "end"
                && ev
                    .iter()
                    .any(|(k2, e2)| k2 == "start" && e2["id"] == e["id"])
        })
    })
    .await;
    // Every event message has its id, and each event starts before anything else of it.
    let events = sub.events();
    let mut first_kind = BTreeMap::new();
    for (kind, e) in &events {
        let id = e["id"].as_i64().expect("an id");
        first_kind.entry(id).or_insert(kind.clone());
    }
    assert!(first_kind.values().all(|k| k == "start"), "{first_kind:?}");

    // Discovery: retained (a subscriber arriving now gets them, flagged retained), valid JSON,
    // with what Home Assistant needs.
    let late = Subscriber::start(broker.port, "test-sub-late").await;
    late.until("retained discovery", Duration::from_secs(10), |s| {
        s.seen
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.0.starts_with("homeassistant/binary_sensor/") && m.2)
    })
    .await;
    let seen = late.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|m| m.0 == "ocellus/testbox/available" && m.1 == b"online" && m.2),
        "availability is retained"
    );
    let configs: Vec<(String, serde_json::Value)> = seen
        .iter()
        .filter(|m| m.0.starts_with("homeassistant/") && m.0.ends_with("/config") && m.2)
        .map(|m| (m.0.clone(), serde_json::from_slice(&m.1).expect("JSON")))
        .collect();
    let occupancy = configs
        .iter()
        .find(|(t, _)| {
            t == "homeassistant/binary_sensor/ocellus_testbox_street_person/occupancy/config"
        })
        .map(|(_, v)| v.clone())
        .expect("the street/person occupancy sensor");
    for key in ["unique_id", "state_topic", "availability_topic", "name"] {
        assert!(occupancy[key].is_string(), "{key}: {occupancy}");
    }
    assert_eq!(occupancy["device_class"], "occupancy");
    assert_eq!(occupancy["device"]["identifiers"][0], "ocellus_testbox");
    assert_eq!(occupancy["availability_topic"], "ocellus/testbox/available");
    assert!(configs.iter().any(
        |(t, v)| t.contains("/sensor/") && v["state_topic"] == "ocellus/testbox/street/person"
    ));

    // Home Assistant's view: the occupancy state (value > 0) follows the events: on after a
    // start, and the count falls when an event ends.
    let counts: Vec<i64> = sub
        .messages("ocellus/testbox/street/person")
        .iter()
        .map(|p| String::from_utf8_lossy(p).parse().unwrap())
        .collect();
    assert!(
        counts.iter().any(|&c| c > 0),
        "occupancy never on: {counts:?}"
    );
    assert!(
        counts.windows(2).any(|w| w[1] < w[0]),
        "the count never fell after an end: {counts:?}"
    );
    // A retained snapshot of a person.
    sub.until("a snapshot", Duration::from_secs(30), |s| {
        s.messages("ocellus/testbox/street/person/snapshot")
            .iter()
            .any(|j| j.starts_with(&[0xff, 0xd8]))
    })
    .await;
    // The stats say connected.
    let stats = get_json(&dmn.url("/api/stats")).await;
    assert_eq!(stats["mqtt"]["connected"], true, "{stats}");

    // A clean stop says offline.
    dmn.signal(15);
    assert!(dmn
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    sub.until("offline after SIGTERM", Duration::from_secs(10), |s| {
        last_availability(s).as_deref() == Some("offline")
    })
    .await;
}

/// After kill -9 the broker keeps the last count (people were in view) and says `offline`. On
/// the next start the counts (and discovery) are published before `online`: Home Assistant
/// never shows the count from before the crash as current, so an automation on occupancy does
/// not fire on a stale "occupied".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_counts_are_right_before_online_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Subscriber::start(broker.port, "test-sub-4").await;
    let count_topic = "ocellus/testbox/street/person";
    let dmn = DaemonProc::street(&mqtt_config(&broker.url(), ""));
    sub.until("someone in view", Duration::from_secs(90), |s| {
        s.messages(count_topic)
            .last()
            .is_some_and(|p| p.as_slice() != b"0")
    })
    .await;
    let dmn = dmn.restart_after_kill_9();
    // The broker says the last will, then the new run connects and says online.
    sub.until("online after the restart", Duration::from_secs(60), |s| {
        restart_window(&s.seen.lock().unwrap()).is_some()
    })
    .await;
    let seen = sub.seen.lock().unwrap().clone();
    let (offline, online) = restart_window(&seen).unwrap();
    let before_online = &seen[offline..online];
    let count = before_online
        .iter()
        .rfind(|m| m.0 == count_topic)
        .map(|m| String::from_utf8_lossy(&m.1).to_string());
    assert!(
        count.is_some(),
        "online was said before the count was republished"
    );
    // At most what this run has seen so far, which /api/stats tells.
    let stats = get_json(&dmn.url("/api/stats")).await;
    let started = stats["cameras"][0]["events_started"].as_u64().unwrap();
    let count: u64 = count.unwrap().parse().unwrap();
    assert!(count <= started, "count {count}, {started} events this run");
    assert!(
        before_online
            .iter()
            .any(|m| m.0.starts_with("homeassistant/binary_sensor/")),
        "discovery after online"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_the_last_will() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Subscriber::start(broker.port, "test-sub-2").await;
    let dmn = DaemonProc::street(&mqtt_config(&broker.url(), ""));
    sub.until("online", Duration::from_secs(30), |s| {
        last_availability(s).as_deref() == Some("online")
    })
    .await;
    dmn.signal(9);
    sub.until("the last will", Duration::from_secs(30), |s| {
        last_availability(s).as_deref() == Some("offline")
    })
    .await;
}

/// The broker goes away for 10 s while events happen, then comes back: every event in the
/// database arrives with its end, in order, after the daemon's clean stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_s_broker_outage_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Subscriber::start(broker.port, "test-sub-3").await;
    let mut dmn = DaemonProc::street(&mqtt_config(&broker.url(), ""));
    sub.until("first events", Duration::from_secs(60), |s| {
        s.events().iter().filter(|(k, _)| k == "end").count() >= 2
    })
    .await;
    broker.stop();
    let stopped = Instant::now();
    // Events keep happening; the outbox holds them.
    let mut pending_seen = 0;
    while stopped.elapsed() < Duration::from_secs(10) {
        let stats = get_json(&dmn.url("/api/stats")).await;
        pending_seen = pending_seen.max(stats["mqtt"]["pending"].as_u64().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stats = get_json(&dmn.url("/api/stats")).await;
    assert_eq!(stats["mqtt"]["connected"], false, "{stats}");
    assert!(stats["mqtt"]["last_error"].is_string(), "{stats}");
    broker.run();
    sub.until("online again", Duration::from_secs(60), |s| {
        s.messages("ocellus/testbox/available")
            .iter()
            .filter(|p| p.as_slice() == b"online")
            .count()
            >= 2
    })
    .await;
    // Let the backlog drain, then stop cleanly: every open event ends and is sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = get_json(&dmn.url("/api/stats")).await;
        if stats["mqtt"]["pending"] == 0 && stats["mqtt"]["connected"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog did not drain: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    dmn.signal(15);
    assert!(dmn
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    sub.until("offline", Duration::from_secs(10), |s| {
        last_availability(s).as_deref() == Some("offline")
    })
    .await;

    // Every event in the database arrived, with its end as stored.
    let conn = ocellus::db::open_reader(&dmn.db).unwrap();
    let stored = ocellus::db::query_events(
        &conn,
        &ocellus::pipeline::values::EventQuery {
            limit: Some(10_000),
            ..Default::default()
        },
        10_000,
    )
    .unwrap();
    assert!(stored.len() >= 3, "{} events", stored.len());
    let got = sub.events();
    for e in &stored {
        let end = got
            .iter()
            .find(|(k, m)| k == "end" && m["id"] == e.id)
            .unwrap_or_else(|| panic!("no end for event {} ({:?})", e.id, e.end_ms));
        assert_eq!(end.1["end_ms"].as_i64(), e.end_ms, "event {}", e.id);
    }
    // In order: each event's start comes before anything else of it, and starts come in the
    // order the events were numbered (as they happened).
    let mut last_start = 0;
    for (i, (kind, m)) in got.iter().enumerate() {
        let id = m["id"].as_i64().unwrap();
        let first = got.iter().position(|(_, x)| x["id"] == id).unwrap();
        // A start sent again after a lost acknowledgement (see below) is not a new start.
        if kind == "start"
            && got[..i]
                .iter()
                .all(|(k, x)| !(k == "start" && x["id"] == id))
        {
            assert_eq!(first, i, "event {id}: something came before its start");
            assert!(id > last_start, "start of {id} after that of {last_start}");
            last_start = id;
        }
    }
    // Messages the broker took but whose acknowledgement was lost when it went down are sent
    // again; after acknowledgement, never. At most the in-flight window is repeated.
    let mut payloads = sub.messages("ocellus/testbox/events");
    let total = payloads.len();
    payloads.sort();
    payloads.dedup();
    let repeated = total - payloads.len();
    assert!(repeated <= 256, "{repeated} messages twice");
    eprintln!(
        "outage: {} events stored, {} messages, {repeated} repeated, outbox peaked at {pending_seen}",
        stored.len(),
        total
    );
    assert!(
        pending_seen > 0,
        "nothing waited in the outbox during the outage"
    );
}

/// Broker trouble is a clear state and log line; the daemon keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_problems_are_a_clear_state_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    // Nobody listens.
    let closed = harness::free_port();
    let dmn = DaemonProc::street(&mqtt_config(&format!("mqtt://127.0.0.1:{closed}"), ""));
    expect_error(&dmn, "connection refused").await;

    // A wrong password.
    let pw = dir.path().join("passwd");
    std::fs::write(&pw, "ocellus:right\n").unwrap();
    let status = Command::new("mosquitto_passwd")
        .args(["-U", pw.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let broker = Broker::start(
        dir.path(),
        &format!("allow_anonymous false\npassword_file {}", pw.display()),
    );
    let dmn = DaemonProc::street(&mqtt_config(
        &broker.url(),
        "username = \"ocellus\"\npassword = \"wrong\"",
    ));
    expect_error(&dmn, "wrong mqtt.username or mqtt.password").await;

    // TLS to a plain port.
    let dmn = DaemonProc::street(&mqtt_config(
        &format!("mqtts://127.0.0.1:{}", broker.port),
        "",
    ));
    expect_error(&dmn, "TLS").await;
}

async fn expect_error(dmn: &DaemonProc, says: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = get_json(&dmn.url("/api/stats")).await;
        let err = stats["mqtt"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        // Everything else still works: frames are processed, the API answers.
        let processing = stats["cameras"][0]["processed"].as_u64().unwrap_or(0) > 0;
        if err.contains(says) && processing {
            assert_eq!(stats["mqtt"]["connected"], false);
            let (code, _) = harness::daemon::http_get(&dmn.url("/healthz"), &[]).await;
            assert_eq!(code, 200);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {says:?} in the MQTT state: {}",
            stats["mqtt"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A camera's counting lines are Home Assistant counters (`total_increasing`, so its long-term
/// statistics keep their history) that never go back: not between messages, not across a
/// `kill -9` and a restart (the totals are read back from the database, and a total reaches the
/// broker only through the outbox, after the database has it). Its zones are occupancy sensors,
/// put right on every connection before `online`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_counters_only_grow_across_a_kill_9_and_zones_are_put_right_before_online() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Subscriber::start(broker.port, "test-sub-lines").await;
    let left = "ocellus/testbox/street/line/middle/left";
    let right = "ocellus/testbox/street/line/middle/right";
    let zone = "ocellus/testbox/street/zone/road";
    let cameras = format!(
        "[[cameras]]\nid = \"street\"\nsource = {:?}\n\
         [[cameras.lines]]\nname = \"middle\"\npoints = [[0.5, 0.2], [0.5, 0.9]]\n\
         [[cameras.zones]]\nname = \"road\"\npoints = [[0.0, 0.33], [1.0, 0.33], [1.0, 0.8], [0.0, 0.45]]\n",
        harness::vtest().to_str().unwrap()
    );
    let dmn = DaemonProc::start(&mqtt_config(&broker.url(), ""), &cameras);
    let total = |s: &Subscriber, t: &str| -> Vec<u64> {
        s.messages(t)
            .iter()
            .map(|p| String::from_utf8_lossy(p).parse().unwrap())
            .collect()
    };
    sub.until("crossings each way", Duration::from_secs(120), |s| {
        total(s, left).last().is_some_and(|&n| n > 0)
            && total(s, right).last().is_some_and(|&n| n > 0)
    })
    .await;
    let before = (
        *total(&sub, left).last().unwrap(),
        *total(&sub, right).last().unwrap(),
    );
    let dmn = dmn.restart_after_kill_9();
    sub.until("online after the restart", Duration::from_secs(60), |s| {
        restart_window(&s.seen.lock().unwrap()).is_some()
    })
    .await;
    // The new run tells its totals (within a few seconds of its first frame).
    let n_left = total(&sub, left).len();
    sub.until("the totals of the new run", Duration::from_secs(30), |s| {
        total(s, left).len() > n_left
    })
    .await;
    for t in [left, right] {
        let all = total(&sub, t);
        assert!(
            all.windows(2).all(|w| w[0] <= w[1]),
            "{t} went back: {all:?}"
        );
    }
    let after = (
        *total(&sub, left).last().unwrap(),
        *total(&sub, right).last().unwrap(),
    );
    assert!(
        after.0 >= before.0 && after.1 >= before.1,
        "{before:?} -> {after:?}"
    );
    // What the broker has is in the database.
    let counts = get_json(&dmn.url("/api/counts?line=middle&bucket=1d")).await;
    let stored = &counts["series"][0]["total"];
    assert!(
        stored["left"].as_u64().unwrap() >= before.0
            && stored["right"].as_u64().unwrap() >= before.1,
        "{stored} < {before:?}"
    );

    let seen = sub.seen.lock().unwrap().clone();
    let (offline, online) = restart_window(&seen).unwrap();
    assert!(
        seen[offline..online].iter().any(|m| m.0 == zone),
        "the zone's occupancy was not republished before online"
    );
    let config = seen
        .iter()
        .rfind(|m| m.0 == "homeassistant/sensor/ocellus_testbox_street_line_middle_left/config")
        .expect("discovery of the line counter");
    let v: serde_json::Value = serde_json::from_slice(&config.1).unwrap();
    assert_eq!(v["state_class"], "total_increasing");
    assert_eq!(v["state_topic"], left);
    assert!(seen
        .iter()
        .any(|m| m.0
            == "homeassistant/binary_sensor/ocellus_testbox_street_zone_road/occupancy/config"));
}

/// mqtts:// with the site's own CA (`ca_file`) and this box's certificate, to a Mosquitto that
/// requires client certificates: events and availability arrive. Without the certificate the
/// broker refuses the box, and the state says so while the daemon keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_checks_the_broker_with_the_ca_file_and_presents_the_client_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = harness::tls::Ca::new(dir.path());
    let server = ca.leaf("localhost");
    let client = ca.leaf("testbox");
    // Mosquitto drops to its own user, which must read its key.
    std::fs::set_permissions(&server.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tls_port = harness::free_port();
    let broker = Broker::start(
        dir.path(),
        &format!(
            "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\n\
             keyfile {}\nrequire_certificate true\n",
            ca.pem().display(),
            server.cert.display(),
            server.key.display()
        ),
    );
    let sub = Subscriber::start(broker.port, "test-sub-tls").await;
    let url = format!("mqtts://localhost:{tls_port}");
    let dmn = DaemonProc::street(&mqtt_config(
        &url,
        &format!(
            "ca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}",
            ca.pem(),
            client.cert,
            client.key
        ),
    ));
    sub.until(
        "online and an event over TLS",
        Duration::from_secs(90),
        |s| {
            last_availability(s).as_deref() == Some("online")
                && s.events().iter().any(|(kind, _)| kind == "start")
        },
    )
    .await;
    let stats = get_json(&dmn.url("/api/stats")).await;
    assert_eq!(stats["mqtt"]["connected"], true, "{}", stats["mqtt"]);
    drop(dmn);

    // The CA but no certificate of its own: refused, and said what to set.
    let dmn = DaemonProc::street(&mqtt_config(&url, &format!("ca_file = {:?}", ca.pem())));
    expect_error(&dmn, "requires a client certificate: set mqtt.client_cert").await;
    drop(dmn);
    // The system's CAs (no ca_file) do not know the site's CA: the broker is not trusted.
    let dmn = DaemonProc::street(&mqtt_config(
        &url,
        &format!(
            "client_cert = {:?}\nclient_key = {:?}",
            client.cert, client.key
        ),
    ));
    expect_error(&dmn, "is not trusted: set mqtt.ca_file").await;
}
