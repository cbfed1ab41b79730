//! Recording against real parts: a gst-rtsp-server camera with a main stream and a substream,
//! file cameras, ffprobe and ffmpeg reading what was written, SIGKILL in the middle of a write.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness;
use harness::daemon::{get_json, http_get, http_get_head, DaemonProc};
use harness::rtsp::RtspServer;

const TOKEN: &str = "clip-test-token";

/// The street clip as a camera encodes it: H.264 at `w`x`h`, 10 fps, a key frame every 2 s, no
/// B-frames; `extra` adds encoder options.
fn camera_clip(dir: &Path, name: &str, w: u32, h: u32, frames: u32, extra: &[&str]) -> PathBuf {
    let scale = format!("scale={w}:{h}");
    let mut args = vec!["-vf", &scale, "-preset", "veryfast", "-g", "20", "-bf", "0"];
    args.extend_from_slice(extra);
    harness::x264_clip(dir, name, frames, &args)
}

/// ffprobe's JSON about `path`'s video stream and format; panics with its stderr on an error.
fn probe(path: &Path) -> serde_json::Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-of",
            "json",
            "-show_format",
            "-select_streams",
            "v",
        ])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_frames:format=duration",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffprobe {path:?}: {stderr}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Whether the first decoded frame of `path` is a key frame.
fn first_frame_is_key(path: &Path) -> bool {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-read_intervals",
            "%+#1",
        ])
        .args(["-show_entries", "frame=key_frame", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe");
    // A line is `key_frame[,side data...]`.
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned);
    first.is_some_and(|l| l.split(',').next() == Some("1"))
}

/// The MD5 of each video packet, as stored (`-c copy`: nothing decoded), without the
/// parameter sets (SPS, PPS) and access-unit delimiters an RTSP server repeats in-band.
fn packet_hashes(path: &Path) -> Vec<String> {
    let out = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v",
            "-c",
            "copy",
            "-bsf:v",
            "filter_units=remove_types=7|8|9",
        ])
        .args(["-f", "framemd5", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const AUTH: (&str, &str) = ("Authorization", "Bearer clip-test-token");

/// The camera's `recording` object in /api/cameras.
async fn recording_state(dmn: &DaemonProc, camera: &str, auth: bool) -> serde_json::Value {
    let headers: &[(&str, &str)] = if auth { &[AUTH] } else { &[] };
    let (status, body) = http_get(&dmn.url("/api/cameras"), headers).await;
    assert_eq!(status, 200);
    let cams: serde_json::Value = serde_json::from_slice(&body).unwrap();
    cams.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == camera)
        .map(|c| c["recording"].clone())
        .unwrap_or(serde_json::Value::Null)
}

async fn wait_recording(dmn: &DaemonProc, camera: &str, auth: bool, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let r = recording_state(dmn, camera, auth).await;
        if r["state"] == "recording" {
            return;
        }
        assert!(t0.elapsed() < limit, "{camera} never recorded: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The segment files of `camera` under the daemon's recordings directory, by name.
fn segments(dmn: &DaemonProc, camera: &str) -> Vec<(String, u64)> {
    let dir = dmn.dir.path().join("recordings").join(camera);
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|f| {
                    let len = f.metadata().ok()?.len();
                    Some((f.file_name().to_string_lossy().to_string(), len))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort_by_key(|(name, _)| start_of(name));
    files
}

fn start_of(name: &str) -> i64 {
    name.trim_end_matches(".mp4")
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// An RTSP camera whose substream is detected and whose main stream is recorded: an event's
/// clip is the main stream at its own size, starts on a key frame, covers the event with its
/// pre- and post-roll, and holds the camera's own packets; it is served with Range and only
/// with the token.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_clip_is_the_main_stream_copied_packet_for_packet_with_range_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let main = camera_clip(dir.path(), "main.mp4", 1280, 720, 500, &[]);
    let sub = camera_clip(dir.path(), "sub.mp4", 640, 360, 500, &[]);
    let main_srv = RtspServer::start(&main, harness::free_port(), None);
    let sub_srv = RtspServer::start(&sub, harness::free_port(), None);
    let (pre_s, post_s) = (2.0, 2.0);
    let dmn = DaemonProc::start(
        &format!("[server]\ntoken = {TOKEN:?}\n"),
        &format!(
            "[[cameras]]\nid = \"door\"\nsource = \"{}\"\nrecord_source = \"{}\"\n\
             [cameras.record]\npre_s = {pre_s}\npost_s = {post_s}\n",
            sub_srv.url("", "/stream"),
            main_srv.url("", "/stream")
        ),
    );
    // An event that ended, its post-roll recorded (a fragment closes within a second), and
    // that began after the main stream's recording could hold its pre-roll: each RTSP session
    // of the test server plays the file from its start, so the main stream has nothing from
    // before its own session began (a camera's streams run all the time).
    let t0 = Instant::now();
    let event = loop {
        let (status, body) = http_get(&dmn.url("/api/events?limit=100"), &[AUTH]).await;
        assert_eq!(status, 200);
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let recorded_from = segments(&dmn, "door").first().map(|(n, _)| start_of(n));
        let done = page["events"].as_array().unwrap().iter().find(|e| {
            let (start, end) = (e["start_ms"].as_i64(), e["end_ms"].as_i64());
            end.is_some_and(|end| end + (post_s * 1000.0) as i64 + 2500 < now_ms())
                && recorded_from
                    .zip(start)
                    .is_some_and(|(from, start)| start - (pre_s * 1000.0) as i64 >= from + 2000)
        });
        if let Some(e) = done {
            break e.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no event ended: {page}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let id = event["id"].as_i64().unwrap();
    let path = format!("/api/events/{id}/clip.mp4");
    assert_eq!(event["clip"], path.as_str(), "{event}");

    let (status, _) = http_get(&dmn.url(&path), &[]).await;
    assert_eq!(status, 401, "a clip without the token");
    let (status, head, clip) = http_get_head(&dmn.url(&path), &[AUTH]).await;
    assert_eq!(status, 200, "{head}");
    let file = dir.path().join("clip.mp4");
    std::fs::write(&file, &clip).unwrap();

    let info = probe(&file);
    let stream = &info["streams"][0];
    assert_eq!(stream["codec_name"], "h264");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(1280), Some(720))
    );
    assert!(first_frame_is_key(&file), "the clip starts on a key frame");
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let span = (event["end_ms"].as_i64().unwrap() - event["start_ms"].as_i64().unwrap()) as f64
        / 1000.0
        + pre_s
        + post_s;
    // From the key frame at or before start - pre (GOP 2 s) to end + post; the main stream's
    // session started within a moment of the substream's.
    assert!(
        duration >= span - 0.6 && duration <= span + 2.6,
        "clip of {duration} s for an event with its rolls of {span} s"
    );
    let source: HashSet<String> = packet_hashes(&main).into_iter().collect();
    let hashes = packet_hashes(&file);
    let same = hashes.iter().filter(|h| source.contains(*h)).count();
    assert!(
        same * 100 >= hashes.len() * 95,
        "only {same} of the clip's {} packets are the camera's own",
        hashes.len()
    );
    eprintln!(
        "clip: {} packets ({same} byte-identical to the camera's), {duration:.1} s for {span:.1} s",
        hashes.len()
    );

    // A range: exactly the bytes asked for.
    let (status, head, part) =
        http_get_head(&dmn.url(&path), &[AUTH, ("Range", "bytes=1000-1999")]).await;
    assert_eq!(status, 206, "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-length: 1000"), "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 1000-1999/{}", clip.len())),
        "{head}"
    );
    assert_eq!(part, clip[1000..2000]);
    let (status, head, _) = http_get_head(
        &dmn.url(&path),
        &[AUTH, ("Range", &format!("bytes={}-", clip.len()))],
    )
    .await;
    assert_eq!(status, 416, "{head}");
    drop((main_srv, sub_srv));
}

/// SIGKILL in the middle of a recording: the database passes its integrity check, the segment
/// left open plays to within a fragment of the kill once the daemon is back, and recording
/// goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_recording_killed_mid_write_plays_to_its_last_fragment_and_recording_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let clip = camera_clip(dir.path(), "cam.mp4", 640, 360, 400, &[]);
    let mut dmn = DaemonProc::start(
        "",
        &format!(
            "[[cameras]]\nid = \"yard\"\nsource = {:?}\n[cameras.record]\nmode = \"continuous\"\n",
            clip.to_str().unwrap()
        ),
    );
    wait_recording(&dmn, "yard", false, Duration::from_secs(30)).await;
    // A few fragments in.
    let t0 = Instant::now();
    while segments(&dmn, "yard").last().map_or(0, |s| s.1) < 150_000 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the segment does not grow"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_ms = now_ms();
    dmn.kill_9();
    let conn = rusqlite::Connection::open(&dmn.db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let (name, _) = segments(&dmn, "yard").pop().unwrap();
    let dmn = dmn.start_again();
    wait_recording(&dmn, "yard", false, Duration::from_secs(30)).await;

    let file = dmn.dir.path().join("recordings/yard").join(&name);
    let info = probe(&file);
    assert!(first_frame_is_key(&file));
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let recorded_until = start_of(&name) + (duration * 1000.0) as i64;
    // Fragments close every second at the latest (and at each 2 s key frame).
    assert!(
        recorded_until >= killed_ms - 1600,
        "the repaired segment ends {} ms before the kill",
        killed_ms - recorded_until
    );
    let conn = rusqlite::Connection::open(&dmn.db).unwrap();
    let t0 = Instant::now();
    let (end_ms, open): (i64, bool) = loop {
        let row: rusqlite::Result<(i64, bool)> = conn.query_row(
            "SELECT end_ms, open FROM recordings WHERE path = ?1",
            [format!("yard/{name}")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        );
        match row {
            Ok(row) if !row.1 => break row,
            _ => {}
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the repaired segment is not indexed: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!open);
    assert!(
        (end_ms - recorded_until).abs() <= 200,
        "index {end_ms} file {recorded_until}"
    );
    // Recording resumed in a new segment.
    assert!(segments(&dmn, "yard")
        .iter()
        .any(|(n, _)| start_of(n) > start_of(&name)));
}

/// Continuous recording under a `max_bytes` of 2 MB: the files on disk never pass it, and the
/// oldest go first.
#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_recordings_under_max_bytes_deleting_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    // About 2 Mbit/s, a key frame every second: segments of max_bytes / 4 close often.
    let clip = camera_clip(
        dir.path(),
        "cam.mp4",
        1280,
        720,
        300,
        &["-b:v", "2M", "-g", "10"],
    );
    let max_bytes = 2_000_000u64;
    let dmn = DaemonProc::start(
        &format!("[recordings]\nmax_bytes = {max_bytes}\nmin_free_bytes = 0\n"),
        &format!(
            "[[cameras]]\nid = \"lot\"\nsource = {:?}\n[cameras.record]\nmode = \"continuous\"\n",
            clip.to_str().unwrap()
        ),
    );
    wait_recording(&dmn, "lot", false, Duration::from_secs(30)).await;
    let mut seen = BTreeSet::new();
    let mut peak = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        let now = segments(&dmn, "lot");
        let total: u64 = now.iter().map(|(_, len)| len).sum();
        peak = peak.max(total);
        assert!(total <= max_bytes, "{total} bytes on disk: {now:?}");
        let present: BTreeSet<i64> = now.iter().map(|(n, _)| start_of(n)).collect();
        seen.extend(present.iter().copied());
        // Whatever is gone is older than whatever is left.
        let gone: Vec<i64> = seen.difference(&present).copied().collect();
        if let (Some(newest_gone), Some(oldest_left)) = (gone.last(), present.first()) {
            assert!(
                newest_gone < oldest_left,
                "deleted {gone:?}, kept {present:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = segments(&dmn, "lot").len();
    assert!(
        seen.len() >= kept + 3,
        "retention deleted {} segments in 30 s",
        seen.len() - kept
    );
    eprintln!(
        "retention: {} segments written, {kept} kept, peak {peak} bytes",
        seen.len()
    );
    let cams = get_json(&dmn.url("/api/cameras")).await;
    assert_eq!(cams[0]["recording"]["state"], "recording", "{cams}");

    // Any recorded range, as one MP4: three seconds that ended 1.5 s ago (GOP 1 s; retention
    // keeps about 8 s at this rate).
    let now = now_ms();
    let range = format!(
        "/api/cameras/lot/recording.mp4?from={}&to={}",
        now - 4500,
        now - 1500
    );
    let (status, head, body) = http_get_head(&dmn.url(&range), &[]).await;
    assert_eq!(status, 200, "{head}");
    let file = dir.path().join("range.mp4");
    std::fs::write(&file, &body).unwrap();
    let info = probe(&file);
    assert_eq!(info["streams"][0]["width"], 1280);
    let duration: f64 = info["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (2.5..=4.5).contains(&duration),
        "{duration} s for 3 s asked"
    );
    assert!(first_frame_is_key(&file));
    // Long gone (deleted by retention, or never recorded): 404 saying so.
    let (status, body) = http_get(
        &dmn.url(&format!(
            "/api/cameras/lot/recording.mp4?from={}&to={}",
            now - 120_000,
            now - 110_000
        )),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("not_recorded"));
}

/// Fills the file system holding `dir` with a ballast file until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

/// Recordings on a 24 MiB tmpfs (the daemon in its own user and mount namespace, as the
/// reliability tests run it) filled by something else: the recorder says the disk is full in
/// /api/cameras and the journal, events go on being stored, and recording resumes by itself
/// once space is freed.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_stops_recording_loudly_and_nothing_else_until_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let clip = camera_clip(dir.path(), "cam.mp4", 1280, 720, 300, &["-b:v", "2M"]);
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let db = dir.path().join("events.db");
    let cfg = dir.path().join("ocellus.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\npath = {:?}\n[recordings]\npath = {:?}\nmin_free_bytes = 0\n\
             [[cameras]]\nid = \"street\"\nsource = {:?}\n[cameras.record]\nmode = \"continuous\"\n",
            db.to_str().unwrap(),
            disk.join("rec").to_str().unwrap(),
            clip.to_str().unwrap()
        ),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=24m tmpfs "$1" && shift 2 && OCELLUS_LOG=info exec "$@" 2>"$LOG""#)
        .args(["sh", disk.to_str().unwrap(), "--"])
        .arg(env!("CARGO_BIN_EXE_ocellus"))
        .args(["run", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("LOG", &log);
    let dmn = DaemonProc::spawn(cmd, tempfile::tempdir().unwrap(), db.clone());
    let inside =
        PathBuf::from(format!("/proc/{}/root", dmn.pid())).join(disk.strip_prefix("/").unwrap());
    wait_recording(&dmn, "street", false, Duration::from_secs(30)).await;

    let ballast = fill(&inside);
    let t0 = Instant::now();
    let error = loop {
        let r = recording_state(&dmn, "street", false).await;
        if r["state"] == "error" {
            break r["error"].as_str().unwrap_or_default().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never said the disk is full: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.contains("disk full") || error.contains("No space left"),
        "{error}"
    );
    // Detection and the database go on: a new event is stored while recording cannot.
    let newest = |page: serde_json::Value| page["events"][0]["id"].as_i64().unwrap_or(0);
    let before = newest(get_json(&dmn.url("/api/events?limit=1")).await);
    let t0 = Instant::now();
    while newest(get_json(&dmn.url("/api/events?limit=1")).await) <= before {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no event stored while the disk is full"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_file(&ballast).unwrap();
    wait_recording(&dmn, "street", false, Duration::from_secs(30)).await;
    let journal = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        journal.contains("recording stopped") && journal.contains("recording resumed"),
        "{journal}"
    );
}

/// `ocellus replay --record`: the video's own packets recorded on its clock and every event's
/// clip cut from them, the same files on two runs; what cannot be recorded is refused before
/// the replay starts.
#[test]
fn replay_record_writes_the_same_clips_on_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    // 30 s of the street, a key frame every 2 s and B-frames, as a camera's main stream.
    let video = harness::h264_clip(dir.path(), 300);
    let run = |name: &str| {
        let out_dir = dir.path().join(name);
        let out = harness::ocellus(&[
            "replay",
            video.to_str().unwrap(),
            "--json",
            "--record",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", harness::stderr(&out));
        (out_dir, harness::events(&out), harness::stderr(&out))
    };
    let (a, events, summary) = run("a");
    let (b, _, _) = run("b");
    assert!(!events.is_empty(), "no event to clip: {summary}");
    assert!(
        summary.contains(&format!("{} clips in", events.len())),
        "{summary}"
    );

    // Both runs wrote the same files, byte for byte: segments and clips.
    let files = |root: &Path| -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for sub in ["segments/replay", "clips"] {
            let mut names: Vec<_> = std::fs::read_dir(root.join(sub))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            for n in names {
                out.push((
                    format!("{sub}/{n}"),
                    std::fs::read(root.join(sub).join(&n)).unwrap(),
                ));
            }
        }
        out
    };
    let (fa, fb) = (files(&a), files(&b));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb));
    for ((name, x), (_, y)) in fa.iter().zip(&fb) {
        assert!(x == y, "{name} differs between two runs");
    }
    let clips: Vec<&String> = fa
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with("clips/"))
        .collect();
    assert_eq!(clips.len(), events.len());

    // Each clip is the source's packets, from a key frame, covering the event and its pre- and
    // post-roll (5 s each) within one GOP, cut to the video's own length.
    let source = packet_hashes(&video);
    for e in &events {
        let clip = a.join("clips").join(format!("{}.mp4", e["id"]));
        let info = probe(&clip);
        assert_eq!(info["streams"][0]["codec_name"], "h264", "{info}");
        assert_eq!(info["streams"][0]["width"], 768);
        assert!(first_frame_is_key(&clip), "{clip:?}");
        let hashes = packet_hashes(&clip);
        assert!(
            source.windows(hashes.len()).any(|w| w == hashes.as_slice()),
            "{clip:?}: its packets are not a run of the source's"
        );
        let (start, end) = (
            e["start_ms"].as_i64().unwrap(),
            e["end_ms"].as_i64().unwrap(),
        );
        let want_s = ((end + 5000).min(30_000) - (start - 5000).max(0)) as f64 / 1000.0;
        let got_s: f64 = info["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            got_s >= want_s - 0.2 && got_s <= want_s + 2.2,
            "event {e}: clip of {got_s} s, {want_s} s wanted"
        );
    }

    // The sample clip is MPEG-4: refused at once, naming why; so is a directory in use.
    let refused = harness::ocellus(&[
        "replay",
        harness::vtest().to_str().unwrap(),
        "--record",
        dir.path().join("c").to_str().unwrap(),
    ]);
    let why = harness::stderr(&refused);
    assert!(!refused.status.success());
    assert!(
        why.contains("--record") && why.contains("not H.264 or H.265"),
        "{why}"
    );
    assert!(
        !why.contains("frames "),
        "the replay ran before the refusal: {why}"
    );
    let in_use = harness::ocellus(&[
        "replay",
        video.to_str().unwrap(),
        "--record",
        a.to_str().unwrap(),
    ]);
    assert!(
        harness::stderr(&in_use).contains("is not empty"),
        "{}",
        harness::stderr(&in_use)
    );
}
