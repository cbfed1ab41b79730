//! The journal as docs/operations.md documents it, against a real systemd-journald: the test
//! starts one in its own mount namespace (`unshare`; tmpfs over the journal directories, so the
//! machine's own journal is untouched), runs the daemon under it for a few seconds, and runs
//! every `journalctl` query the doc lists.

use crate::harness;
use std::collections::BTreeMap;
use std::process::Command;

/// The `journalctl -u ocellus ...` commands in docs/operations.md's journal table, without
/// `-f` (it never returns).
fn documented_queries() -> Vec<String> {
    let doc = std::fs::read_to_string(harness::root().join("docs/operations.md")).unwrap();
    doc.lines()
        .filter(|l| l.starts_with('|'))
        .filter_map(|l| {
            let start = l.find("`journalctl -u ocellus")? + 1;
            let end = start + l[start..].find('`')?;
            Some(l[start..end].to_string())
        })
        .filter(|q| !q.split_whitespace().any(|w| w == "-f"))
        .collect()
}

/// Runs the daemon under a private journald and returns each query's output.
fn run_under_journald(queries: &[String]) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ocellus.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\npath = {:?}\n\
             [[cameras]]\nid = \"front\"\nsource = {:?}\n\
             [[cameras]]\nid = \"gate\"\nsource = \"rtsp://admin:Hunter2Hunter2@127.0.0.1:1/stream\"\n",
            dir.path().join("events.db").to_str().unwrap(),
            harness::vtest().to_str().unwrap()
        ),
    )
    .unwrap();
    let query_file = dir.path().join("queries");
    std::fs::write(
        &query_file,
        queries
            .iter()
            .map(|q| q.replacen("-u ocellus", "-t ocellus", 1) + "\n")
            .collect::<String>(),
    )
    .unwrap();
    // The daemon runs 12 s (events start after a second or two of walking), then gets SIGTERM
    // and ends its events; `journalctl --sync` waits until journald has written everything.
    let script = r#"
set -e
for d in /run/systemd/journal /run/log/journal /var/log/journal; do
    mkdir -p "$d"; mount -t tmpfs tmpfs "$d"
done
/lib/systemd/systemd-journald &
journald=$!
i=0
until [ -S /run/systemd/journal/socket ]; do
    i=$((i + 1)); [ $i -lt 400 ] || { echo "journald did not start" >&2; exit 1; }
    sleep 0.05
done
status=0
JOURNAL_STREAM=8:1 timeout --preserve-status -s TERM 12 "$@" >/dev/null 2>&1 || status=$?
journalctl --sync
# The daemon's last line is "ocellus stopped": once journald has it, it has every line before.
# (Up to 30 s: a journald in a namespace on a loaded machine has been seen to take over 10.)
i=0
until journalctl -t ocellus -o cat | grep -qx 'ocellus stopped'; do
    i=$((i + 1)); [ $i -lt 600 ] || break
    sleep 0.05
done
while IFS= read -r q; do
    echo "=== $q"
    eval "$q --no-pager -o cat" || true
done < "$QUERIES"
echo "=== daemon exit"
echo "$status"
echo "=== all"
journalctl --no-pager -o cat -t ocellus
echo "=== verbose warnings"
journalctl --no-pager -o verbose -t ocellus -p warning
kill "$journald"
"#;
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_ocellus"))
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .current_dir(harness::root())
        .env("QUERIES", &query_file)
        .env_remove("OCELLUS_LOG")
        .env_remove("RUST_LOG")
        .output()
        .expect("unshare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sections = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== ") {
            if let Some((n, body)) = current.take() {
                sections.insert(n, body);
            }
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, body)) = &mut current {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((n, body)) = current {
        sections.insert(n, body);
    }
    sections
}

#[test]
fn every_documented_journal_query_finds_what_the_doc_says() {
    let queries = documented_queries();
    assert!(queries.len() >= 8, "the doc lists {queries:?}");
    let out = run_under_journald(&queries);
    let got = |q: &str| -> &str {
        let key = q.replacen("-u ocellus", "-t ocellus", 1);
        out.get(&key)
            .unwrap_or_else(|| panic!("no output section for {key}: {out:?}"))
    };
    for q in &queries {
        assert!(
            !got(q).trim().is_empty(),
            "`{q}` found nothing; all: {out:?}"
        );
    }
    let find = |needle: &str| {
        queries
            .iter()
            .find(|q| q.contains(needle))
            .unwrap_or_else(|| panic!("the doc has no query with {needle}"))
    };
    // Person events on the camera, as lines that stand on their own.
    let people = got(find("CAMERA=front LABEL=person"));
    assert!(
        people.lines().all(|l| l.starts_with("person event ")),
        "{people}"
    );
    assert!(people.contains(" started on front (score 0."), "{people}");
    // One event from start to end.
    let one = got(find("EVENT_ID=1"));
    assert!(one.contains("person event 1 started on front"), "{one}");
    assert!(
        one.contains("person event 1 ended on front after "),
        "{one}\nthe daemon's exit status: {}\nall:\n{}",
        out["daemon exit"].trim(),
        out["all"]
    );
    // The unreachable camera: warnings with its id and the reason, no password.
    let gate = got(find("CAMERA=gate -p warning"));
    assert!(
        gate.lines()
            .all(|l| l.starts_with("camera gate retrying in ")),
        "{gate}"
    );
    assert!(gate.contains("connection refused by 127.0.0.1:1"), "{gate}");
    let retrying = got(find("STATE=retrying"));
    assert!(retrying.contains("camera gate retrying"), "{retrying}");
    let lifecycle = got(find("-g "));
    for word in [
        "starting",
        "listening on http://127.0.0.1:",
        "stopping",
        "ocellus stopped",
    ] {
        assert!(lifecycle.contains(word), "no {word:?} in {lifecycle}");
    }
    let verbose = &out["verbose warnings"];
    for field in [
        "PRIORITY=4",
        "CAMERA=gate",
        "STATE=retrying",
        "ERROR=connection refused",
        "SOURCE=rtsp://***@127.0.0.1:1/stream",
    ] {
        assert!(verbose.contains(field), "no {field} in {verbose}");
    }
    assert_eq!(
        out["daemon exit"].trim(),
        "0",
        "the daemon did not stop cleanly on SIGTERM"
    );
    let all = &out["all"];
    assert!(!all.contains("Hunter2"), "the journal shows the password");
    // Nothing a person reads is in Rust's Debug form.
    for debug in ["Start", "End", "Update", "Some(", "\"person\""] {
        assert!(!all.contains(debug), "{debug:?} in the journal:\n{all}");
    }
    eprintln!("journalctl -t ocellus:\n{all}");
}
