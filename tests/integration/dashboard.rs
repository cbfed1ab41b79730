//! The dashboard in a real browser (Debian's headless Chromium driven through chromedriver)
//! against the real daemon playing the street clip.

use crate::harness;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use harness::browser::{browser, text_of};
use harness::daemon::DaemonProc;
use serde_json::json;

async fn probe(c: &Client) -> serde_json::Value {
    c.execute("return window.ocellus || {}", vec![])
        .await
        .unwrap()
}

/// Polls the page until `pred` holds (each check is a real observation of the page).
async fn until(
    c: &Client,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = probe(c).await;
        if pred(&p) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page state {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An attribute of the first element matching `css`, read like `text_of`.
async fn attr_of(c: &Client, css: &str, attr: &str) -> Option<String> {
    let v = c
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
            vec![json!(css), json!(attr)],
        )
        .await
        .unwrap();
    v.as_str().map(str::to_string)
}

/// Clicks the element matching `css`, finding it again if it was re-rendered in between.
async fn click(c: &Client, css: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = match c.find(Locator::Css(css)).await {
            Ok(e) => e.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match attempt {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sum and spread of the live tile's pixels.
async fn canvas_signature(c: &Client) -> (f64, f64) {
    let v = c
        .execute(
            "const cv = document.querySelector('.tile canvas');
             const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
             let sum = 0, sq = 0, n = 0;
             for (let i = 0; i < d.length; i += 16) { const g = (d[i] + d[i+1] + d[i+2]) / 3; sum += g; sq += g * g; n++; }
             const mean = sum / n;
             return [sum, Math.sqrt(sq / n - mean * mean)];",
            vec![],
        )
        .await
        .unwrap();
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_frames_boxes_events_and_stats_and_survives_a_restart() {
    // The street clip with an object mask in its bottom-left corner, drawn faintly.
    let dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"street\"\nsource = {:?}\nobject_masks = [[[0.0, 0.9], [0.1, 0.9], [0.1, 1.0], [0.0, 1.0]]]\n",
            harness::vtest().to_str().unwrap()
        ),
    );
    let (_driver, c, _profile) = browser().await;
    c.goto(&dmn.url("/")).await.unwrap();

    until(&c, "frames, boxes, masks and events", |p| {
        p["framesDrawn"].as_u64() >= Some(10)
            && p["boxesDrawn"].as_u64() >= Some(1)
            && p["masksDrawn"].as_u64() >= Some(1)
            && p["eventsShown"].as_u64() >= Some(1)
    })
    .await;

    // The live view is a picture (not blank) and it moves.
    let (sum1, spread1) = canvas_signature(&c).await;
    assert!(
        spread1 > 10.0,
        "live view looks blank (pixel spread {spread1})"
    );
    let drawn = probe(&c).await["framesDrawn"].as_u64().unwrap();
    until(&c, "more frames", |p| {
        p["framesDrawn"].as_u64() >= Some(drawn + 5)
    })
    .await;
    let (sum2, _) = canvas_signature(&c).await;
    assert_ne!(sum1, sum2, "live view does not change");

    // The event list holds person events.
    let list = text_of(&c, "#event-list").await.unwrap_or_default();
    assert!(list.contains("person"), "event list: {list}");

    // Stats show a non-zero fps for the camera (the stats topic ticks every second).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(text) = text_of(&c, "#stats tbody tr").await {
            if text.contains("connected") && !text.contains(" 0.0 fps") && text.contains("fps") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "stats never showed a non-zero fps"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(text_of(&c, "#conn").await.as_deref(), Some("live"));
    // The box's health follows the stats: CPU from the second reading on, memory, disk space.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = text_of(&c, "#box-health").await.unwrap_or_default();
        if text.contains("CPU ") && text.contains("memory ") && text.contains("disk ") {
            assert!(text.contains("GB free"), "health line: {text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the health line never showed CPU, memory and disk: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The large view opens on click and shows the camera at full size.
    click(&c, ".tile").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = c
            .execute(
                "return document.querySelector('#viewer-canvas').width",
                vec![],
            )
            .await
            .unwrap();
        if w.as_u64() == Some(768) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "large view never showed a full-size frame ({w})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.execute("document.querySelector('#viewer').close()", vec![])
        .await
        .unwrap();

    let png = c.screenshot().await.unwrap();
    let out = harness::root().join("target/dashboard.png");
    std::fs::write(&out, &png).unwrap();

    // Restart the daemon under the page: it reconnects by itself and frames flow again.
    let before = probe(&c).await;
    let dmn = dmn.restart();
    let connects = before["connects"].as_u64().unwrap();
    let drawn = before["framesDrawn"].as_u64().unwrap();
    until(&c, "a reconnect and new frames", |p| {
        p["connects"].as_u64() > Some(connects) && p["framesDrawn"].as_u64() >= Some(drawn + 10)
    })
    .await;
    let reloaded = c
        .execute(
            "return performance.getEntriesByType('navigation').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(reloaded, json!(1), "the page must recover without a reload");
    c.close().await.unwrap();
    drop(dmn);
}

/// A zone and a counting line on the street: both are drawn on the live view (and not once
/// the toggle is off), and the line's counter in the stats panel moves as people cross.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_and_lines_are_drawn_and_a_line_counter_moves() {
    let dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"street\"\nsource = {:?}\n\
             [[cameras.zones]]\nname = \"right_half\"\npoints = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]\n\
             [[cameras.lines]]\nname = \"middle\"\npoints = [[0.5, 0.0], [0.5, 1.0]]\n",
            harness::vtest().to_str().unwrap()
        ),
    );
    let (_driver, c, _profile) = browser().await;
    c.goto(&dmn.url("/")).await.unwrap();
    until(&c, "zones, lines and a crossing counted", |p| {
        p["zonesDrawn"].as_u64() >= Some(1)
            && p["linesDrawn"].as_u64() >= Some(1)
            && p["crossings"].as_u64() >= Some(1)
    })
    .await;
    // The counter row says it, and it keeps counting.
    let first = attr_of(&c, "#stats tr[data-line=\"middle\"]", "data-total")
        .await
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(first >= 1);
    until(&c, "another crossing", |p| {
        p["crossings"].as_u64() > Some(first)
    })
    .await;
    let text = text_of(&c, "#stats tr[data-line=\"middle\"]")
        .await
        .unwrap_or_default();
    assert!(
        text.starts_with("line middle:") && text.contains("left"),
        "{text}"
    );
    // The REST API lists the events by zone.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = harness::daemon::get_json(&dmn.url("/api/events?zone=right_half")).await;
        let evs = v["events"].as_array().unwrap().clone();
        assert!(evs.iter().all(|e| e["zones"]
            .as_array()
            .unwrap()
            .iter()
            .any(|z| z == "right_half")));
        if !evs.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "no event entered the zone");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let none = harness::daemon::get_json(&dmn.url("/api/events?zone=nowhere")).await;
    assert_eq!(none["events"].as_array().unwrap().len(), 0);

    // Off: frames keep coming, zones and lines are no longer drawn.
    click(&c, "#zones-toggle").await;
    let p = probe(&c).await;
    let (frames, zones) = (
        p["framesDrawn"].as_u64().unwrap(),
        p["zonesDrawn"].as_u64().unwrap(),
    );
    let p = until(&c, "frames with the toggle off", |p| {
        p["framesDrawn"].as_u64() >= Some(frames + 10)
    })
    .await;
    // A frame being drawn as the click landed may still have drawn them once.
    assert!(p["zonesDrawn"].as_u64().unwrap() <= zones + 1, "{p}");
}

/// The counts view against a database a replay of the street clip filled (a recorded day a
/// user looks back on; its camera is not running): the totals it shows for a range are the
/// database's, line by line and direction by direction, and zone by zone; hovering a bucket of
/// the chart shows that bucket's values; the CSV link asks for the same range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_view_shows_the_databases_totals_and_a_buckets_values_on_hover() {
    let dir = tempfile::tempdir().unwrap();
    let places = dir.path().join("places.toml");
    std::fs::write(
        &places,
        "[[cameras]]\nid = \"street\"\nsource = \"unused.avi\"\n\
         [[cameras.lines]]\nname = \"middle\"\npoints = [[0.5, 0.2], [0.5, 0.9]]\n\
         [[cameras.lines]]\nname = \"street\"\npoints = [[0.0, 0.45], [1.0, 0.45]]\n\
         [[cameras.zones]]\nname = \"road\"\npoints = [[0.0, 0.33], [1.0, 0.33], [1.0, 0.8], [0.0, 0.45]]\n",
    )
    .unwrap();
    let db = dir.path().join("events.db");
    let out = harness::ocellus(&[
        "replay",
        harness::vtest().to_str().unwrap(),
        "--config",
        places.to_str().unwrap(),
        "--camera",
        "street",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", harness::stderr(&out));
    // The database's own sums, by SQL.
    let (lines, road): (Vec<(String, i64, i64)>, i64) = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT line, sum(crossed_left), sum(crossed_right) FROM line_counts
                 GROUP BY line ORDER BY line",
            )
            .unwrap();
        let lines = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let road = conn
            .query_row(
                "SELECT sum(entries) FROM zone_counts WHERE zone = 'road'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (lines, road)
    };
    assert_eq!(lines.len(), 2, "{lines:?}");
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\npath = {:?}\n", db.to_str().unwrap()),
    )
    .unwrap();
    let dmn = DaemonProc::start_at(cfg, dir, db, "127.0.0.1:0", &[]);

    let (_driver, c, _profile) = browser().await;
    c.goto(&dmn.url("/")).await.unwrap();
    until(&c, "the counts view's first load", |p| {
        p["countsLoads"].as_u64() >= Some(1)
    })
    .await;
    // The clip's clock starts at 0: a custom range over its first hour, in the browser's time.
    click(&c, "#counts button[data-range=\"custom\"]").await;
    let loads = probe(&c).await["countsLoads"].as_u64().unwrap();
    c.execute(
        "const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 16);
         document.querySelector('#c-from').value = local(0);
         document.querySelector('#c-to').value = local(3600000);",
        vec![],
    )
    .await
    .unwrap();
    click(&c, "#c-apply").await;
    until(&c, "the custom range", |p| {
        p["countsLoads"].as_u64() > Some(loads)
    })
    .await;
    for (name, left, right) in &lines {
        let row = format!("#c-totals tr[data-kind=\"line\"][data-name=\"{name}\"]");
        let shown = (
            attr_of(&c, &row, "data-left").await,
            attr_of(&c, &row, "data-right").await,
        );
        assert_eq!(
            shown,
            (Some(left.to_string()), Some(right.to_string())),
            "{name}"
        );
        let text = text_of(&c, &row).await.unwrap();
        assert!(text.contains(&(left + right).to_string()), "{text}");
    }
    // The chart's legend, hovering the bucket of the first minute: its crossings that minute.
    let first_minute = harness::daemon::get_json(
        &dmn.url("/api/counts?camera=street&line=middle&from=0&to=60000&bucket=1m"),
    )
    .await;
    let want = first_minute["series"][0]["points"][0]["left"]
        .as_u64()
        .unwrap();
    let shown = c
        .execute(
            "const over = document.querySelector('#c-chart .u-over');
             const r = over.getBoundingClientRect();
             // The first bucket lies at the left edge of a range that starts on its minute.
             over.dispatchEvent(new MouseEvent('mousemove', { clientX: r.left + 2, clientY: r.top + r.height / 2, bubbles: true }));
             const rows = [...document.querySelectorAll('#c-chart .u-legend .u-series')];
             const row = rows.find((tr) => tr.querySelector('.u-label').textContent === 'middle left');
             return row ? row.querySelector('.u-value').textContent : null;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown.as_str(), Some(want.to_string().as_str()));
    let csv = attr_of(&c, "#c-csv", "href").await.unwrap();
    assert!(
        csv.contains("format=csv") && csv.contains("from=0"),
        "{csv}"
    );

    // Zones: the entries of the range.
    let loads = probe(&c).await["countsLoads"].as_u64().unwrap();
    c.execute(
        "const s = document.querySelector('#c-kind'); s.value = 'zone'; s.dispatchEvent(new Event('change'));",
        vec![],
    )
    .await
    .unwrap();
    until(&c, "the zones", |p| p["countsLoads"].as_u64() > Some(loads)).await;
    let row = "#c-totals tr[data-kind=\"zone\"][data-name=\"road\"]";
    assert_eq!(
        attr_of(&c, row, "data-entries").await,
        Some(road.to_string())
    );
}

/// An event of a recording camera opens with its clip, which Chromium plays: the video's time
/// advances and its size is the stream's.
#[tokio::test(flavor = "multi_thread")]
async fn an_events_clip_plays_in_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let clip = harness::h264_clip(dir.path(), 400);
    let dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"street\"\nsource = {:?}\n[cameras.record]\npre_s = 1.0\npost_s = 1.0\n",
            clip.to_str().unwrap()
        ),
    );
    // An event that ended, its post-roll recorded.
    let deadline = Instant::now() + Duration::from_secs(90);
    let id = loop {
        let page = harness::daemon::get_json(&dmn.url("/api/events?limit=100")).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let done = page["events"].as_array().unwrap().iter().find(|e| {
            e["clip"].is_string() && e["end_ms"].as_i64().is_some_and(|end| end + 3500 < now)
        });
        if let Some(e) = done {
            break e["id"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no ended event with a clip: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (_driver, c, _profile) = browser().await;
    c.goto(&dmn.url("/")).await.unwrap();
    click(&c, &format!("#ev-{id} button")).await;
    // Muted, as a page may start a video without a click.
    c.execute(
        "const v = document.querySelector('#detail-video'); v.muted = true; v.play(); return 0",
        vec![],
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c
            .execute(
                "const v = document.querySelector('#detail-video');
                 return {hidden: v.hidden, t: v.currentTime, w: v.videoWidth, h: v.videoHeight,
                         err: v.error ? v.error.code : null,
                         img: document.querySelector('#detail-img').hidden}",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(v["err"], serde_json::Value::Null, "the video failed: {v}");
        assert_eq!(v["hidden"], false, "{v}");
        if v["t"].as_f64().unwrap_or(0.0) > 1.0 {
            assert_eq!(
                (v["w"].as_u64(), v["h"].as_u64()),
                (Some(768), Some(576)),
                "{v}"
            );
            assert_eq!(v["img"], true, "the snapshot gives way to the video");
            break;
        }
        assert!(Instant::now() < deadline, "the clip does not play: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An H.264 camera plays as video through Media Source Extensions, near the live edge, at the
/// stream's size, with its boxes drawn over it; an H.265 camera, which Chromium cannot play,
/// shows its JPEG frames and says why.
#[tokio::test(flavor = "multi_thread")]
async fn live_h264_plays_as_video_with_boxes_and_h265_falls_back_to_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let h265 = harness::x264_clip(
        dir.path(),
        "h265.mp4",
        200,
        &[
            "-c:v",
            "libx265",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=error",
        ],
    );
    let dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"avc\"\nsource = {:?}\n[[cameras]]\nid = \"hevc\"\nsource = {:?}\n",
            harness::vtest_h264().to_str().unwrap(),
            h265.to_str().unwrap()
        ),
    );
    let (_driver, c, _profile) = browser().await;
    c.goto(&dmn.url("/")).await.unwrap();
    let p = until(&c, "the H.264 camera playing as video with boxes", |p| {
        let f = &p["feeds"]["avc"];
        f["feed"] == "video"
            && f["currentTime"].as_f64().unwrap_or(0.0) > 1.0
            && p["boxesOn"]["avc:video"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let f = &p["feeds"]["avc"];
    assert_eq!(
        (f["width"].as_u64(), f["height"].as_u64()),
        (Some(768), Some(576)),
        "{p}"
    );
    // It plays on, near the newest picture the daemon sent.
    let t0 = f["currentTime"].as_f64().unwrap();
    let p = until(&c, "the video's time advancing", |p| {
        p["feeds"]["avc"]["currentTime"].as_f64().unwrap_or(0.0) > t0 + 1.0
    })
    .await;
    let behind = p["feeds"]["avc"]["behindMs"].as_f64().unwrap();
    assert!(
        behind <= 2000.0,
        "{behind} ms behind the newest picture: {p}"
    );
    // The H.265 camera: its JPEG frames, and the reason.
    let p = until(&c, "the H.265 camera on JPEG, saying why", |p| {
        p["feeds"]["hevc"]["feed"] == "jpeg" && p["feeds"]["hevc"]["why"].is_string()
    })
    .await;
    let why = p["feeds"]["hevc"]["why"].as_str().unwrap_or("");
    assert!(why.contains("cannot play hvc1"), "{p}");
    let caption = text_of(&c, ".tile:nth-child(2) figcaption")
        .await
        .unwrap_or_default();
    assert!(caption.contains("JPEG"), "{caption}");
    let caption = text_of(&c, ".tile:nth-child(1) figcaption")
        .await
        .unwrap_or_default();
    assert!(caption.contains("H.264 video"), "{caption}");
}
