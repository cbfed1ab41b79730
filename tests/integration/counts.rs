//! Counts over time end to end: a replay of the street clip with counting lines and a zone,
//! its counts read back every way a user can (replay's CSV, the database, REST as JSON and CSV,
//! the WebSocket query) and held to the events' own crossings, zones and starts.

use crate::harness;
use std::collections::BTreeMap;

use harness::daemon::{connect, get_json, http_get, next_of_type, send, DaemonProc};
use harness::{events, ocellus, stderr};

const PLACES: &str = "[[cameras]]
id = \"street\"
source = \"unused.avi\"
[[cameras.lines]]
name = \"middle\"
points = [[0.5, 0.2], [0.5, 0.9]]
[[cameras.lines]]
name = \"street\"
points = [[0.0, 0.45], [1.0, 0.45]]
[[cameras.zones]]
name = \"road\"
points = [[0.0, 0.33], [1.0, 0.33], [1.0, 0.8], [0.0, 0.45]]
";

/// (line, direction) -> crossings.
type Crossings = BTreeMap<(String, String), u64>;

fn csv_lines(csv: &str) -> Crossings {
    let mut out = Crossings::new();
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    for row in rows {
        let f: Vec<&str> = row.split(',').collect();
        if f[col("kind")] == "line" {
            for dir in ["left", "right"] {
                *out.entry((f[col("name")].into(), dir.into())).or_default() +=
                    f[col(dir)].parse::<u64>().unwrap();
            }
        }
    }
    out.retain(|_, n| *n > 0);
    out
}

fn series_lines(answer: &serde_json::Value) -> Crossings {
    let mut out = Crossings::new();
    for s in answer["series"].as_array().unwrap() {
        for dir in ["left", "right"] {
            let n = s["total"][dir].as_u64().unwrap();
            let sum: u64 = s["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[dir].as_u64().unwrap())
                .sum();
            assert_eq!(n, sum, "a series' total is the sum of its buckets: {s}");
            if n > 0 {
                out.insert((s["name"].as_str().unwrap().into(), dir.into()), n);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replays_counts_are_its_events_crossings_in_the_csv_the_database_rest_and_the_websocket()
{
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("places.toml");
    std::fs::write(&cfg, PLACES).unwrap();
    let db = dir.path().join("events.db");
    let csv_path = dir.path().join("counts.csv");
    let out = ocellus(&[
        "replay",
        harness::vtest().to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--camera",
        "street",
        "--db",
        db.to_str().unwrap(),
        "--counts",
        csv_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let evs = events(&out);

    // What the events say: their crossings, their zones, their starts.
    let mut crossings = Crossings::new();
    for e in &evs {
        for c in e["crossings"].as_array().unwrap() {
            *crossings
                .entry((
                    c["line"].as_str().unwrap().into(),
                    c["direction"].as_str().unwrap().into(),
                ))
                .or_default() += 1;
        }
    }
    let entries = evs
        .iter()
        .filter(|e| e["zones"].as_array().unwrap().iter().any(|z| z == "road"))
        .count() as u64;
    let people = evs.iter().filter(|e| e["label"] == "person").count() as u64;
    assert!(
        crossings.values().sum::<u64>() >= 20 && entries >= 10,
        "the street clip crosses both lines and enters the road: {crossings:?}, {entries}"
    );

    // replay --counts.
    let csv = std::fs::read_to_string(&csv_path).unwrap();
    assert_eq!(csv_lines(&csv), crossings, "{csv}");
    assert!(csv.starts_with("camera,kind,name,start_ms,"));

    // The database, by SQL.
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT line, sum(crossed_left), sum(crossed_right) FROM line_counts GROUP BY line",
            )
            .unwrap();
        let mut stored = Crossings::new();
        for row in stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .unwrap()
        {
            let (line, l, r) = row.unwrap();
            for (dir, n) in [("left", l), ("right", r)] {
                if n > 0 {
                    stored.insert((line.clone(), dir.into()), n as u64);
                }
            }
        }
        assert_eq!(stored, crossings);
        let (zone_entries, label_events): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT sum(entries) FROM zone_counts WHERE zone = 'road'),
                        (SELECT sum(events) FROM label_counts WHERE label = 'person')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(zone_entries as u64, entries);
        assert_eq!(label_events as u64, people);
    }

    // A daemon serving that database (its camera is not running: the history stays
    // reachable), over REST and the WebSocket.
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\npath = {:?}\n", db.to_str().unwrap()),
    )
    .unwrap();
    let dmn = DaemonProc::start_at(cfg, dir, db, "127.0.0.1:0", &[]);
    let range = "camera=street&from=0&to=3600000&bucket=1m";
    let rest = get_json(&dmn.url(&format!("/api/counts?{range}&line=*"))).await;
    assert_eq!(series_lines(&rest), crossings, "{rest}");
    let zone = get_json(&dmn.url(&format!("/api/counts?{range}&zone=road"))).await;
    assert_eq!(
        zone["series"][0]["total"]["entries"].as_u64(),
        Some(entries)
    );
    let peak = zone["series"][0]["total"]["peak"].as_u64().unwrap();
    assert!(peak >= 1, "{zone}");
    let label =
        get_json(&dmn.url("/api/counts?camera=street&from=0&to=3600000&bucket=1h&label=person"))
            .await;
    assert_eq!(label["series"][0]["total"]["events"].as_u64(), Some(people));
    let (code, body) = http_get(
        &dmn.url(&format!("/api/counts?{range}&line=*&format=csv")),
        &[],
    )
    .await;
    assert_eq!(code, 200);
    let rest_csv = String::from_utf8(body).unwrap();
    assert_eq!(csv_lines(&rest_csv), crossings);
    // The same rows as replay's file, line for line.
    let line_rows = |c: &str| -> Vec<String> {
        c.lines()
            .filter(|l| l.split(',').nth(1) == Some("line"))
            .map(String::from)
            .collect()
    };
    assert_eq!(line_rows(&rest_csv), line_rows(&csv));

    let mut ws = connect(&dmn).await;
    send(
        &mut ws,
        serde_json::json!({"op": "query", "id": 7, "counts": {
            "camera": "street", "line": "*", "from": 0, "to": 3600000, "bucket": "1m"}}),
    )
    .await;
    let reply = next_of_type(&mut ws, "reply", std::time::Duration::from_secs(10)).await;
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["counts"], rest);

    // Bad parameters: a 400 (REST) or a bad_request error (WebSocket) naming the parameter.
    for (query, param) in [
        ("camera=nowhere&line=*", "camera"),
        ("camera=street", "line"),
        ("camera=street&line=*&bucket=5m", "bucket"),
        ("camera=street&line=*&from=yesterday", "from"),
        ("camera=street&line=*&tz=1000", "tz"),
        ("camera=street&line=*&colour=red", "colour"),
    ] {
        let (code, body) = http_get(&dmn.url(&format!("/api/counts?{query}")), &[]).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(code, 400, "{query}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{param}:")),
            "{query}: {v}"
        );
    }
    send(
        &mut ws,
        serde_json::json!({"op": "query", "id": 8, "counts": {"camera": "street", "zone": "road", "bucket": "2h"}}),
    )
    .await;
    let err = next_of_type(&mut ws, "error", std::time::Duration::from_secs(10)).await;
    assert_eq!(
        (err["id"].as_i64(), err["code"].as_str()),
        (Some(8), Some("bad_request"))
    );
    assert!(
        err["message"].as_str().unwrap().starts_with("bucket:"),
        "{err}"
    );
}
