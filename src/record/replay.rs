//! `ocellus replay --record DIR`: the video's own packets recorded as its camera would record
//! them, on the video's clock, and every event's clip cut from the recording — the daemon's
//! recorder, segments and clips, deterministic: the same video and config give the same files.
//!
//! `DIR/segments/<camera>/` holds the segments (indexed in the replay's database, as the
//! daemon's are), `DIR/clips/<event id>.mp4` each event's clip.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::recorder::record_file;
use super::{build_range_clip, Limits, RecorderSettings, Recordings, Trigger};
use crate::capture::packets::{
    PacketClock, PacketError, PacketMsg, PacketOptions, PacketTx, Session,
};
use crate::capture::Source;
use crate::config::{Config, RecordConfig, RecordMode, RtspTransport};
use crate::db::DbHandle;

#[derive(Debug, thiserror::Error)]
pub enum RecordReplayError {
    #[error("--record {}: {what}", .dir.display())]
    Dir { dir: PathBuf, what: String },
    #[error("--record: {0}")]
    Stream(String),
    #[error("--record: the video's stream ended before its first packet")]
    Empty,
    #[error("--record: recording stopped: {0}")]
    Stopped(String),
    #[error("--record: the clip of event {id}: {what}")]
    Clip { id: i64, what: String },
}

/// An event as replay's recorder needs it (times on the video's clock, ms).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReplayEvent {
    pub(crate) id: i64,
    pub(crate) start_ms: i64,
    pub(crate) end_ms: i64,
}

/// What was recorded.
#[derive(Debug)]
pub struct ReplayRecording {
    pub dir: PathBuf,
    pub segments: usize,
    pub bytes: u64,
    /// Each event's clip, by event id.
    pub clips: Vec<(i64, PathBuf)>,
}

/// The recording of `--record DIR`, checked before the replay starts: DIR is new or empty, and
/// the video's stream can be recorded (H.264 or H.265).
pub(crate) struct ReplayRecorder {
    dir: PathBuf,
    video: PathBuf,
    settings: RecorderSettings,
    min_free_bytes: u64,
}

impl ReplayRecorder {
    pub(crate) fn prepare(
        cfg: &Config,
        camera: &str,
        video: &Path,
        dir: &Path,
    ) -> Result<Self, RecordReplayError> {
        let dir_err = |what: String| RecordReplayError::Dir {
            dir: dir.to_owned(),
            what,
        };
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(dir_err(
                        "is not empty (a replay records into a new or empty directory)".into(),
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(dir_err(e.to_string())),
        }
        let source = Source::File(video.to_owned());
        let options = PacketOptions {
            rtsp_transport: RtspTransport::Tcp,
            realtime: false,
            clock: PacketClock::Stream,
        };
        first_packet(&source, options)?;
        let record = cfg
            .camera(camera)
            .map_or_else(RecordConfig::default, |c| c.record.clone());
        Ok(Self {
            dir: dir.to_owned(),
            video: video.to_owned(),
            settings: RecorderSettings {
                camera: camera.to_string(),
                own_source: None,
                options,
                explicit: true,
                continuous: record.mode == RecordMode::Continuous,
                pre_ms: (record.pre_s * 1000.0) as i64,
                post_ms: (record.post_s * 1000.0) as i64,
                open_timeout: std::time::Duration::from_secs(10),
                read_timeout: std::time::Duration::from_secs(10),
            },
            min_free_bytes: cfg.recordings.min_free_bytes,
        })
    }

    /// Records the video with `events` opening and ending the recording where their times fall
    /// (a replay knows them all: each opens at its start, so its clip has the whole pre-roll),
    /// indexes the segments through `db`, and writes each event's clip. `db_path` is the
    /// database `db` writes.
    pub(crate) fn record(
        self,
        events: &[ReplayEvent],
        db: &DbHandle,
        db_path: &Path,
    ) -> Result<ReplayRecording, RecordReplayError> {
        let segments_dir = self.dir.join("segments");
        let clips_dir = self.dir.join("clips");
        for d in [&segments_dir, &clips_dir] {
            std::fs::create_dir_all(d).map_err(|e| RecordReplayError::Dir {
                dir: d.clone(),
                what: e.to_string(),
            })?;
        }
        // The video's clock starts at 0 (1970): an age limit would delete everything.
        let limits = Limits {
            max_bytes: 0,
            max_age_ms: None,
            min_free_bytes: self.min_free_bytes,
        };
        let store =
            Recordings::open(&segments_dir, limits, Vec::new(), Some(db.clone())).map_err(|e| {
                RecordReplayError::Dir {
                    dir: segments_dir.clone(),
                    what: e.to_string(),
                }
            })?;
        let store = Arc::new(store);
        let trigger = Arc::new(Trigger::default());
        let (pre_ms, post_ms) = (self.settings.pre_ms, self.settings.post_ms);
        let camera = self.settings.camera.clone();

        // Each event opens at its start and ends at its end, in time order.
        let mut marks: Vec<(i64, i64, Option<i64>)> = events
            .iter()
            .flat_map(|e| [(e.start_ms, e.id, None), (e.end_ms, e.id, Some(e.end_ms))])
            .collect();
        marks.sort_by_key(|&(t, id, end)| (t, end.is_some(), id));
        let mut next = 0;
        let status = record_file(
            self.settings,
            &Source::File(self.video.clone()),
            store.clone(),
            trigger.clone(),
            |t_ms| {
                while let Some(&(t, id, end)) = marks.get(next) {
                    if t > t_ms {
                        break;
                    }
                    trigger.event(id, end);
                    next += 1;
                }
            },
        )
        .map_err(stream)?;
        if status.state == "error" {
            return Err(RecordReplayError::Stopped(
                status.error.unwrap_or_else(|| "no reason given".into()),
            ));
        }
        db.flush()
            .map_err(|e| RecordReplayError::Stopped(e.to_string()))?;

        let conn = crate::db::open_reader(db_path)
            .map_err(|e| RecordReplayError::Stopped(e.to_string()))?;
        let mut clips = Vec::new();
        for e in events {
            let clip_err = |what: String| RecordReplayError::Clip { id: e.id, what };
            let file = build_range_clip(
                &conn,
                &segments_dir,
                &camera,
                e.start_ms - pre_ms,
                e.end_ms + post_ms,
            )
            .map_err(|err| clip_err(err.to_string()))?;
            let path = clips_dir.join(format!("{}.mp4", e.id));
            let bytes = file
                .read_range(0, file.len())
                .map_err(|err| clip_err(err.to_string()))?;
            std::fs::write(&path, bytes).map_err(|err| clip_err(err.to_string()))?;
            clips.push((e.id, path));
        }
        Ok(ReplayRecording {
            dir: self.dir,
            segments: store.segment_count(),
            bytes: store.total_bytes(),
            clips,
        })
    }
}

fn stream(e: PacketError) -> RecordReplayError {
    RecordReplayError::Stream(e.to_string())
}

/// Waits for the stream's first packet: an error when it cannot be recorded (not H.264 or
/// H.265, not a video).
fn first_packet(source: &Source, options: PacketOptions) -> Result<(), RecordReplayError> {
    let (tx, rx) = PacketTx::lossless(4);
    let session = Session::open(source, options, tx, false).map_err(stream)?;
    let mut found = Err(RecordReplayError::Empty);
    session
        .read_to_end(&rx, |msg| match msg {
            PacketMsg::Packet(..) => {
                found = Ok(());
                false
            }
            PacketMsg::Unrecordable(why) => {
                found = Err(RecordReplayError::Stopped(why));
                false
            }
            PacketMsg::Started => true,
        })
        .map_err(stream)?;
    found
}
