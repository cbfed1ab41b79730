//! All cameras' recordings on disk: the in-memory list of segments that retention works from
//! (oldest first), start-up repair of what a crash left, and the three limits — total bytes,
//! age and the file system's free-space reserve. The oldest finished segment goes first; a
//! segment being written is never deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::segment::{repair, Repaired};
use crate::base::clock::now_ms;
use crate::config::RecordingsConfig;
use crate::db::{DbCommand, DbHandle, SegmentRow};

/// The limits of `[recordings]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_age_ms: Option<i64>,
    pub(crate) min_free_bytes: u64,
}

impl Limits {
    pub(crate) fn from_config(c: &RecordingsConfig) -> Self {
        Self {
            max_bytes: c.max_bytes,
            max_age_ms: (c.max_age_days > 0).then(|| c.max_age_days as i64 * 86_400_000),
            min_free_bytes: c.min_free_bytes,
        }
    }
}

/// Every camera's segments, shared by the recorders (which add and grow them) and retention.
pub(crate) struct Recordings {
    dir: PathBuf,
    limits: Limits,
    db: Option<DbHandle>,
    segments: Mutex<Index>,
}

/// The segments by (start_ms, path), oldest first, and their bytes in all (kept as they change:
/// retention asks before every fragment).
#[derive(Default)]
struct Index {
    rows: BTreeMap<(i64, String), SegmentRow>,
    total: u64,
}

impl Index {
    fn insert(&mut self, row: SegmentRow) {
        self.total += row.bytes;
        if let Some(old) = self.rows.insert((row.start_ms, row.path.clone()), row) {
            self.total -= old.bytes;
        }
    }

    fn remove(&mut self, row: &SegmentRow) {
        if let Some(old) = self.rows.remove(&(row.start_ms, row.path.clone())) {
            self.total -= old.bytes;
        }
    }
}

impl Recordings {
    /// The recordings under `dir`: `known` is the database's index; files it lists as open, and
    /// files it does not list (a crash between the file and its row), are repaired and indexed.
    pub(crate) fn open(
        dir: &Path,
        limits: Limits,
        known: Vec<SegmentRow>,
        db: Option<DbHandle>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut segments = Index::default();
        let mut closed = std::collections::HashSet::new();
        let send = |cmd| {
            if let Some(db) = &db {
                let _ = db.send(cmd);
            }
        };
        for row in known {
            if !row.open && dir.join(&row.path).exists() {
                closed.insert(row.path.clone());
                segments.insert(row);
            } else if !dir.join(&row.path).exists() {
                send(DbCommand::SegmentGone(row.path));
            }
        }
        for cam in std::fs::read_dir(dir)?.flatten() {
            if !cam.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let camera = cam.file_name().to_string_lossy().to_string();
            for f in std::fs::read_dir(cam.path())?.flatten() {
                let name = f.file_name().to_string_lossy().to_string();
                let rel = format!("{camera}/{name}");
                if !name.ends_with(".mp4") || closed.contains(&rel) {
                    continue;
                }
                match repair(&f.path(), &rel, &camera) {
                    Ok(Repaired::Kept(row)) => {
                        tracing::warn!(camera = %camera, "recording {rel} was left open (the daemon stopped without closing it); kept up to its last whole fragment, {} bytes", row.bytes);
                        send(DbCommand::Segment(row.clone()));
                        segments.insert(row);
                    }
                    Ok(Repaired::Deleted) => {
                        tracing::warn!(camera = %camera, "recording {rel} held no whole fragment; deleted");
                        send(DbCommand::SegmentGone(rel));
                    }
                    Err(e) => {
                        tracing::error!(camera = %camera, "recording {rel} cannot be repaired: {e}")
                    }
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            limits,
            db,
            segments: Mutex::new(segments),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A segment is closed at its next key frame once it holds this many bytes: with
    /// `max_bytes` set, a quarter of it (at least 256 KiB), so that retention always has a
    /// finished segment to delete before the limit is reached.
    pub(crate) fn segment_max_bytes(&self) -> u64 {
        match self.limits.max_bytes {
            0 => u64::MAX,
            m => (m / 4).max(256 << 10),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A segment written or grown: indexed here and in the database.
    pub(crate) fn update(&self, row: &SegmentRow) {
        self.lock().insert(row.clone());
        if let Some(db) = &self.db {
            let _ = db.send(DbCommand::Segment(row.clone()));
        }
    }

    /// Bytes of every segment.
    pub(crate) fn total_bytes(&self) -> u64 {
        self.lock().total
    }

    /// Segments, finished or being written.
    pub(crate) fn segment_count(&self) -> usize {
        self.lock().rows.len()
    }

    /// Free bytes on the recordings' file system.
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir)
    }

    /// Makes room for `incoming` more bytes by deleting the oldest finished segments (and any
    /// past `max_age`); an error says which limit cannot be kept when only segments being
    /// written are left.
    pub(crate) fn make_room(&self, incoming: u64) -> Result<(), String> {
        let now = now_ms();
        loop {
            let (total, oldest) = {
                let segs = self.lock();
                let oldest = segs.rows.values().find(|r| !r.open).cloned();
                (segs.total, oldest)
            };
            let too_old =
                |r: &SegmentRow| self.limits.max_age_ms.is_some_and(|a| r.end_ms < now - a);
            let over_bytes = self.limits.max_bytes > 0 && total + incoming > self.limits.max_bytes;
            let free = self.free_bytes();
            let low_space =
                free.is_some_and(|f| f < self.limits.min_free_bytes.saturating_add(incoming));
            let old = oldest.as_ref().is_some_and(too_old);
            if !over_bytes && !low_space && !old {
                return Ok(());
            }
            let Some(victim) = oldest else {
                return Err(if low_space {
                    format!(
                        "disk full: {} free on {}, below recordings.min_free_bytes ({}), and no finished recording is left to delete",
                        human(free.unwrap_or(0)),
                        self.dir.display(),
                        human(self.limits.min_free_bytes)
                    )
                } else {
                    format!(
                        "recordings.max_bytes ({}) reached by recordings still being written",
                        human(self.limits.max_bytes)
                    )
                });
            };
            self.delete(&victim);
        }
    }

    fn delete(&self, row: &SegmentRow) {
        match std::fs::remove_file(self.dir.join(&row.path)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(camera = %row.camera, "cannot delete recording {}: {e}", row.path);
                // Drop it from the list anyway, or retention would try it forever.
            }
        }
        tracing::debug!(camera = %row.camera, "retention deleted recording {} ({} bytes)", row.path, row.bytes);
        self.lock().remove(row);
        if let Some(db) = &self.db {
            let _ = db.send(DbCommand::SegmentGone(row.path.clone()));
        }
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Bytes as a person reads them.
fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, start: i64, bytes: u64, open: bool) -> SegmentRow {
        SegmentRow {
            camera: "c".into(),
            path: path.into(),
            start_ms: start,
            end_ms: start + 1000,
            bytes,
            open,
        }
    }

    #[test]
    fn retention_deletes_the_oldest_finished_segment_first_and_never_an_open_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("c")).unwrap();
        let limits = Limits {
            max_bytes: 3000,
            max_age_ms: None,
            min_free_bytes: 0,
        };
        let store = Recordings::open(dir.path(), limits, vec![], None).unwrap();
        for (p, start, open) in [
            ("c/1.mp4", 1, false),
            ("c/2.mp4", 2, false),
            ("c/3.mp4", 3, true),
        ] {
            std::fs::write(dir.path().join(p), [0u8; 10]).unwrap();
            store.update(&row(p, start, 1000, open));
        }
        store.make_room(500).unwrap();
        assert!(!dir.path().join("c/1.mp4").exists());
        assert!(dir.path().join("c/2.mp4").exists());
        assert_eq!(store.total_bytes(), 2000);
        store.make_room(1500).unwrap();
        assert!(!dir.path().join("c/2.mp4").exists());
        let err = store.make_room(2500).unwrap_err();
        assert!(err.contains("max_bytes"), "{err}");
        assert!(dir.path().join("c/3.mp4").exists());
    }

    #[test]
    fn the_free_space_reserve_is_named_when_it_cannot_be_kept() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 0,
            max_age_ms: None,
            min_free_bytes: u64::MAX / 2,
        };
        let store = Recordings::open(dir.path(), limits, vec![], None).unwrap();
        let err = store.make_room(1).unwrap_err();
        assert!(
            err.contains("disk full") && err.contains("min_free_bytes"),
            "{err}"
        );
    }
}
