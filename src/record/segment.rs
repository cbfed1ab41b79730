//! One segment file being written: the init segment, then a fragment per GOP (or per second,
//! whichever is first), each synced to disk before the next, so that a crash or a power cut
//! loses at most the fragment in flight. And the repair of a segment a crash left open.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::mp4::{self, CodecConfig, Sample};
use crate::capture::packets::Packet;
use crate::db::SegmentRow;

/// A fragment is closed at each key frame, and at the latest after this long (90 kHz).
const MAX_FRAGMENT_90K: i64 = 90_000;

/// Why a fragment was not written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{0}")]
    NoRoom(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WriteError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
        move |source| WriteError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

pub(crate) struct SegmentWriter {
    file: File,
    abs: PathBuf,
    row: SegmentRow,
    config: CodecConfig,
    /// The file's time origin: `start_ms` in 90 kHz ticks.
    origin90: i64,
    sequence: u32,
    pending: Vec<Packet>,
    last_duration: u32,
}

/// Syncs a directory, so that a file created in it survives a power cut.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl SegmentWriter {
    /// Creates `<dir>/<camera>/<start_ms>.mp4` with its init segment, synced with its folder.
    pub(crate) fn create(
        dir: &Path,
        camera: &str,
        first: &Packet,
        config: &CodecConfig,
    ) -> Result<Self, WriteError> {
        let start_ms = first.wall_ms();
        let cam_dir = dir.join(camera);
        std::fs::create_dir_all(&cam_dir).map_err(WriteError::io(&cam_dir))?;
        let (mut file, rel, abs) = (0..100)
            .find_map(|n| {
                let name = match n {
                    0 => format!("{start_ms}.mp4"),
                    n => format!("{start_ms}-{n}.mp4"),
                };
                let abs = cam_dir.join(&name);
                File::options()
                    .write(true)
                    .create_new(true)
                    .open(&abs)
                    .ok()
                    .map(|f| (f, format!("{camera}/{name}"), abs))
            })
            .ok_or_else(|| WriteError::Io {
                path: cam_dir.clone(),
                source: std::io::Error::other("cannot create a segment file"),
            })?;
        let init = mp4::init_segment(config);
        let io = WriteError::io(&abs);
        file.write_all(&init).map_err(io)?;
        file.sync_all().map_err(WriteError::io(&abs))?;
        sync_dir(&cam_dir).map_err(WriteError::io(&cam_dir))?;
        Ok(Self {
            file,
            row: SegmentRow {
                camera: camera.to_string(),
                path: rel,
                start_ms,
                end_ms: start_ms,
                bytes: init.len() as u64,
                open: true,
            },
            abs,
            config: config.clone(),
            origin90: start_ms * 90,
            sequence: 0,
            pending: Vec::new(),
            last_duration: 3000,
        })
    }

    pub(crate) fn config(&self) -> &CodecConfig {
        &self.config
    }

    pub(crate) fn row(&self) -> &SegmentRow {
        &self.row
    }

    /// How long the segment is, up to the packets not yet in a fragment.
    pub(crate) fn span_ms(&self) -> i64 {
        self.pending.last().map_or(self.row.end_ms, |p| p.wall_ms()) - self.row.start_ms
    }

    /// Adds a packet; when it closes a fragment, `room` is asked for the fragment's bytes
    /// first and the fragment is written and synced. Returns true when a fragment was written.
    pub(crate) fn push(
        &mut self,
        p: Packet,
        room: &mut dyn FnMut(u64) -> Result<(), String>,
    ) -> Result<bool, WriteError> {
        let due = self
            .pending
            .first()
            .is_some_and(|first| p.key || p.dts90 - first.dts90 >= MAX_FRAGMENT_90K);
        let wrote = if due {
            self.flush(p.dts90, room)?;
            true
        } else {
            false
        };
        self.pending.push(p);
        Ok(wrote)
    }

    /// Writes the pending packets as one fragment; `next_dts90` ends the last one's duration.
    fn flush(
        &mut self,
        next_dts90: i64,
        room: &mut dyn FnMut(u64) -> Result<(), String>,
    ) -> Result<(), WriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut samples = Vec::with_capacity(pending.len());
        for (i, p) in pending.iter().enumerate() {
            let next = pending.get(i + 1).map_or(next_dts90, |n| n.dts90);
            let duration = match next - p.dts90 {
                d if d > 0 && d < 90_000 * 10 => d as u32,
                _ => self.last_duration,
            };
            self.last_duration = duration;
            samples.push(Sample {
                dts: p.dts90 - self.origin90,
                duration,
                cto: p.cto,
                key: p.key,
                data: p.data.clone(),
            });
        }
        self.sequence += 1;
        let bytes = mp4::fragment(self.sequence, &samples);
        room(bytes.len() as u64).map_err(WriteError::NoRoom)?;
        if let Err(e) = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
        {
            // Leave the file ending at its last whole fragment.
            let _ = self.file.set_len(self.row.bytes);
            return Err(WriteError::Io {
                path: self.abs.clone(),
                source: e,
            });
        }
        self.row.bytes += bytes.len() as u64;
        let end90 = samples
            .last()
            .map_or(0, |s| s.dts + s.duration as i64 + self.origin90);
        self.row.end_ms = end90.div_euclid(90);
        Ok(())
    }

    /// Writes what is pending and closes the file; its row, no longer open.
    pub(crate) fn finish(
        mut self,
        room: &mut dyn FnMut(u64) -> Result<(), String>,
    ) -> (SegmentRow, Option<WriteError>) {
        let next = self
            .pending
            .last()
            .map_or(0, |p| p.dts90 + self.last_duration as i64);
        let err = self.flush(next, room).err();
        self.row.open = false;
        (self.row, err)
    }
}

/// What start-up found of a segment left open (a crash, a power cut) or unknown to the index.
pub(crate) enum Repaired {
    /// Cut to its last whole fragment (or already whole): its row.
    Kept(SegmentRow),
    /// Nothing playable in it: deleted.
    Deleted,
}

/// Truncates `abs` to its last whole fragment and reads its times; deletes it when no sample
/// survived.
pub(crate) fn repair(abs: &Path, rel: &str, camera: &str) -> std::io::Result<Repaired> {
    let bytes = std::fs::read(abs)?;
    let index = mp4::index_segment(&bytes);
    let start_ms = Path::new(rel)
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse::<i64>().ok());
    let (Some(index), Some(start_ms)) = (index, start_ms) else {
        std::fs::remove_file(abs)?;
        return Ok(Repaired::Deleted);
    };
    let Some(last) = index.samples.last() else {
        std::fs::remove_file(abs)?;
        return Ok(Repaired::Deleted);
    };
    if index.complete_len < bytes.len() as u64 {
        let f = File::options().write(true).open(abs)?;
        f.set_len(index.complete_len)?;
        f.sync_all()?;
    }
    Ok(Repaired::Kept(SegmentRow {
        camera: camera.to_string(),
        path: rel.to_string(),
        start_ms,
        end_ms: (start_ms * 90 + last.dts + last.duration as i64).div_euclid(90),
        bytes: index.complete_len,
        open: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::packets::Codec;
    use bytes::Bytes;

    fn config() -> CodecConfig {
        CodecConfig {
            codec: Codec::H264,
            width: 64,
            height: 48,
            record: Bytes::from_static(&[1, 0x42, 0, 0x1e, 0xff, 0xe0, 0]),
        }
    }

    fn packet(ms: i64, key: bool) -> Packet {
        Packet {
            dts90: ms * 90,
            cto: 0,
            key,
            data: Bytes::from(vec![7; 500]),
        }
    }

    #[test]
    fn fragments_are_cut_at_key_frames_and_a_crash_keeps_the_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let start = 1_700_000_000_000i64;
        let mut w =
            SegmentWriter::create(dir.path(), "cam", &packet(start, true), &config()).unwrap();
        let mut room = |_| Ok(());
        let mut fragments = 0;
        for i in 0..10 {
            // key frame every 4 packets, 40 ms apart
            if w.push(packet(start + i * 40, i % 4 == 0), &mut room)
                .unwrap()
            {
                fragments += 1;
            }
        }
        assert_eq!(fragments, 2); // at packets 4 and 8
        let rel = w.row().path.clone();
        let abs = dir.path().join(&rel);
        // The process dies here: packets 8 and 9 were never written.
        std::mem::forget(w);
        let written = std::fs::metadata(&abs).unwrap().len();
        // A torn write of the next fragment.
        let mut f = File::options().append(true).open(&abs).unwrap();
        f.write_all(&[0, 0, 1, 0, b'm', b'o', b'o', b'f', 1, 2])
            .unwrap();
        let Repaired::Kept(row) = repair(&abs, &rel, "cam").unwrap() else {
            panic!("deleted")
        };
        assert_eq!(row.bytes, written);
        assert_eq!(std::fs::metadata(&abs).unwrap().len(), written);
        assert_eq!((row.start_ms, row.end_ms), (start, start + 8 * 40));
        let index = mp4::read_segment(&abs).unwrap();
        assert_eq!(index.samples.len(), 8);
        assert!(index.samples[0].key && index.samples[4].key && !index.samples[5].key);
    }

    #[test]
    fn a_segment_with_no_whole_fragment_is_deleted_at_repair() {
        let dir = tempfile::tempdir().unwrap();
        let w = SegmentWriter::create(dir.path(), "cam", &packet(1000, true), &config()).unwrap();
        let rel = w.row().path.clone();
        drop(w);
        let abs = dir.path().join(&rel);
        assert!(matches!(
            repair(&abs, &rel, "cam").unwrap(),
            Repaired::Deleted
        ));
        assert!(!abs.exists());
    }

    #[test]
    fn no_room_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), "cam", &packet(0, true), &config()).unwrap();
        let before = w.row().bytes;
        let mut full = |_| Err("full".to_string());
        w.push(packet(0, true), &mut full).unwrap();
        let err = w.push(packet(40, true), &mut full).unwrap_err();
        assert!(matches!(err, WriteError::NoRoom(_)));
        assert_eq!(
            std::fs::metadata(dir.path().join(&w.row().path))
                .unwrap()
                .len(),
            before
        );
    }
}
