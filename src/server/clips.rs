//! Video out of the recordings: an event's clip (`/api/events/{id}/clip.mp4`) and any recorded
//! range of a camera (`/api/cameras/{id}/recording.mp4?from=&to=`), each one MP4 with its index
//! first, served with HTTP Range so that browsers (Safari included) can seek in it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::db;
use crate::record::mp4::VirtualFile;
use crate::record::{build_range_clip, ClipError};
use crate::server::extract::{ApiPath, ApiQuery};
use crate::server::state::{ApiError, AppState};

/// A response body is read from the segment files this much at a time.
const CHUNK: u64 = 1 << 20;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/events/{id}/clip.mp4", get(event_clip))
        .route("/api/cameras/{id}/recording.mp4", get(recording))
}

fn not_recording(camera: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_recorded",
        format!("camera {camera} does not record (docs/recording.md)"),
    )
}

impl From<ClipError> for ApiError {
    fn from(e: ClipError) -> Self {
        match e {
            ClipError::NotRecorded { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "not_recorded", e.to_string())
            }
            ClipError::TooLong { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            ClipError::Db(e) => e.into(),
            ClipError::Mp4(e) => {
                tracing::error!(error = %e, "clip: a recording cannot be read");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

async fn event_clip(
    State(state): State<Arc<AppState>>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(clips) = state.clips.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_recorded",
            "no camera records (docs/recording.md)",
        ));
    };
    let clip = state
        .readers
        .run(move |conn| {
            let Some(event) = db::get_event(conn, id)? else {
                return Ok(Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no event {id}"),
                )));
            };
            let Some(cam) = clips.cameras.get(&event.camera) else {
                return Ok(Err(not_recording(&event.camera)));
            };
            let (pre, post) = (cam.pre_ms, cam.post_ms);
            let end = event.end_ms.unwrap_or_else(db::now_ms);
            Ok(build_range_clip(
                conn,
                &clips.dir,
                &event.camera,
                event.start_ms - pre,
                end + post,
            )
            .map_err(ApiError::from))
        })
        .await??;
    Ok(serve(clip, &headers, &format!("event-{id}.mp4")).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    /// Unix ms.
    from: i64,
    to: i64,
}

async fn recording(
    State(state): State<Arc<AppState>>,
    ApiPath(camera): ApiPath<String>,
    ApiQuery(q): ApiQuery<RangeQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(clips) = state.clips.clone() else {
        return Err(not_recording(&camera));
    };
    if !clips.cameras.contains_key(&camera) {
        return Err(not_recording(&camera));
    }
    if q.to <= q.from {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "to must be after from",
        ));
    }
    let name = format!("{camera}-{}.mp4", q.from);
    let clip = state
        .readers
        .run(move |conn| {
            Ok(build_range_clip(conn, &clips.dir, &camera, q.from, q.to).map_err(ApiError::from))
        })
        .await??;
    Ok(serve(clip, &headers, &name).await)
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    All,
    /// `[start, end)`
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads one `bytes=` range (`a-b`, `a-`, `-n`); several ranges are answered with the whole
/// file, as RFC 9110 allows.
fn wanted(headers: &HeaderMap, len: u64) -> Wanted {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Wanted::All;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Wanted::All;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => (a, (b + 1).min(len)),
        (Ok(a), Err(_)) if b.is_empty() => (a, len),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (len.saturating_sub(n), len),
        _ => return Wanted::All,
    };
    if range.0 >= len {
        Wanted::Unsatisfiable
    } else {
        Wanted::Part(range.0, range.1)
    }
}

/// The clip, whole (200) or the range asked for (206), read from the segment files in chunks
/// on the blocking pool as the client takes them.
async fn serve(clip: VirtualFile, headers: &HeaderMap, name: &str) -> Response {
    let len = clip.len();
    let (status, start, end) = match wanted(headers, len) {
        Wanted::All => (StatusCode::OK, 0, len),
        Wanted::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        Wanted::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response()
        }
    };
    let clip = Arc::new(clip);
    let body = futures_util::stream::unfold(start, move |at| {
        let clip = clip.clone();
        async move {
            if at >= end {
                return None;
            }
            let to = (at + CHUNK).min(end);
            let read = tokio::task::spawn_blocking(move || clip.read_range(at, to))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            match read {
                Ok(bytes) => Some((Ok::<_, std::io::Error>(bytes), to)),
                // A segment deleted under a client mid-download: the response ends short.
                Err(e) => Some((Err(e), end)),
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::test_headers;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        let w = |r: &str| wanted(&test_headers(&[("range", r)]), 1000);
        assert_eq!(w("bytes=0-99"), Wanted::Part(0, 100));
        assert_eq!(w("bytes=900-"), Wanted::Part(900, 1000));
        assert_eq!(w("bytes=-100"), Wanted::Part(900, 1000));
        assert_eq!(w("bytes=990-5000"), Wanted::Part(990, 1000));
        assert_eq!(w("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=0-1,5-9"), Wanted::All);
        assert_eq!(w("items=0-1"), Wanted::All);
        assert_eq!(wanted(&HeaderMap::new(), 1000), Wanted::All);
    }
}
