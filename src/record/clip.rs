//! A clip: the samples of a camera's segments between two times, from the key frame at or
//! before the start, as one MP4 whose index comes first and whose sample bytes are read from
//! the segment files when a range of it is asked for.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::mp4::{self, ClipSamples, SegmentIndex, VirtualFile};
use crate::db::{segments_between, DbError};

/// The longest range one clip may span: an hour (a few GB at a camera's main-stream rate).
pub(crate) const MAX_CLIP_MS: i64 = 3_600_000;
/// A key frame is looked for this far before a clip's start (cameras send one every 1-10 s).
const KEY_SEARCH_MS: i64 = 30_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClipError {
    #[error("nothing of camera {camera} is recorded between {from_ms} and {to_ms} (not recorded, or deleted by retention)")]
    NotRecorded {
        camera: String,
        from_ms: i64,
        to_ms: i64,
    },
    #[error("a clip spans at most {} s; asked for {} s", MAX_CLIP_MS / 1000, .asked_ms / 1000)]
    TooLong { asked_ms: i64 },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Mp4(#[from] mp4::Mp4Error),
}

/// The clip of `camera` covering `[from_ms, to_ms]`: from the key frame at or before `from_ms`
/// (or the first recorded after it) to the last sample at or before `to_ms`. Segments that
/// overlap (a recording started from the pre-roll while another had just ended) are read once:
/// a sample is taken only when it comes after the last one taken.
pub(crate) fn build_range_clip(
    conn: &Connection,
    dir: &Path,
    camera: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<VirtualFile, ClipError> {
    if to_ms - from_ms > MAX_CLIP_MS {
        return Err(ClipError::TooLong {
            asked_ms: to_ms - from_ms,
        });
    }
    let not_recorded = || ClipError::NotRecorded {
        camera: camera.to_string(),
        from_ms,
        to_ms,
    };
    let rows = segments_between(conn, camera, from_ms - KEY_SEARCH_MS, to_ms)?;
    let (from90, to90) = (from_ms * 90, to_ms * 90);
    let mut segments: Vec<(PathBuf, i64, SegmentIndex)> = Vec::new();
    for row in rows {
        let path = dir.join(&row.path);
        match mp4::read_segment(&path) {
            Ok(index) => segments.push((path, row.start_ms * 90, index)),
            // Deleted by retention between the query and now, or unreadable: the clip is made
            // of the rest.
            Err(e) => tracing::debug!("clip of {camera}: {e}"),
        }
    }
    // Every sample on the wall clock, in order, each once.
    let mut all: Vec<(&Path, i64, mp4::StoredSample)> = Vec::new();
    let mut config = None;
    for (path, origin90, index) in &segments {
        let config = config.get_or_insert(&index.config);
        if **config != index.config {
            // The camera changed its stream (size, profile): one clip holds one of them.
            if all.iter().any(|(_, t, _)| *t >= from90) {
                break;
            }
            all.clear();
            *config = &index.config;
        }
        for s in &index.samples {
            let t = origin90 + s.dts;
            if all.last().is_none_or(|(_, last, _)| t > *last) {
                all.push((path.as_path(), t, *s));
            }
        }
    }
    let start = all
        .iter()
        .rposition(|(_, t, s)| s.key && *t <= from90)
        .or_else(|| all.iter().position(|(_, t, s)| s.key && *t >= from90))
        .ok_or_else(not_recorded)?;
    let end = all
        .iter()
        .rposition(|(_, t, _)| *t <= to90)
        .ok_or_else(not_recorded)?;
    if end < start {
        return Err(not_recorded());
    }
    let config = config.ok_or_else(not_recorded)?;
    let samples = all[start..=end].iter().map(|(p, _, s)| (*p, *s)).collect();
    Ok(mp4::build_clip(&ClipSamples { config, samples }))
}
