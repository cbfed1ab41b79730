//! RTSP cameras: opening a stream through OpenCV's FFmpeg backend with per-camera options, and a
//! pre-flight `DESCRIBE` that says in plain words why a camera cannot be reached (refused, wrong
//! path, wrong password), which FFmpeg's own errors do not.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use md5::{Digest, Md5};
use opencv::core::Vector;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};

use crate::config::RtspTransport;

/// Why an RTSP camera could not be opened. Messages never contain the password.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RtspError {
    #[error("{0} is not an rtsp:// URL with a host")]
    BadUrl(String),
    #[error("connection refused by {0}: is the camera on, and is RTSP enabled on that port?")]
    Refused(String),
    #[error("no answer from {0} within {1} s: wrong address, or a firewall in between")]
    NoAnswer(String, u64),
    #[error("cannot reach {0}: {1}")]
    Network(String, String),
    #[error("the camera has no stream at {0} (404 Not Found): check the path in the URL; the camera's manual gives its stream paths")]
    NotFound(String),
    #[error("the camera refused the user name or password (401 Unauthorized)")]
    WrongCredentials,
    #[error("the camera needs a user name and password (401 Unauthorized): put them in the URL, rtsp://user:password@host/path")]
    NeedsCredentials,
    #[error("the camera answered {0} {1}")]
    Status(u16, String),
    #[error("{0} does not speak RTSP: {1}")]
    NotRtsp(String, String),
    #[error("connected, but no stream could be opened within {timeout_s} s over {transport}: {detail}; try rtsp_transport = \"{other}\"")]
    Open {
        timeout_s: u64,
        transport: &'static str,
        other: &'static str,
        detail: String,
    },
}

/// The parts of an `rtsp://[user[:password]@]host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq)]
struct RtspUrl {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    /// The URL without credentials, as sent in requests.
    bare: String,
    path: String,
}

impl RtspUrl {
    fn parse(url: &str) -> Result<RtspUrl, RtspError> {
        let bad = || RtspError::BadUrl(crate::config::redact_url(url));
        let rest = url
            .strip_prefix("rtsp://")
            .or_else(|| url.strip_prefix("rtsps://"))
            .ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
                None => (Some(percent_decode(u)), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, rest) = v6.split_once(']').ok_or_else(bad)?;
            let port = rest.strip_prefix(':').map(str::parse).transpose();
            (h.to_string(), port.map_err(|_| bad())?.unwrap_or(554))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (hostport.to_string(), 554),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let scheme = if url.starts_with("rtsps") {
            "rtsps"
        } else {
            "rtsp"
        };
        Ok(RtspUrl {
            bare: format!("{scheme}://{hostport}{path}"),
            host,
            port,
            user,
            password,
            path: path.to_string(),
        })
    }

    fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A URL's user or password as written, `%40` for `@` and so on.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One RTSP response: status, reason and headers (names lower-cased).
struct Response {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Asks the camera to `DESCRIBE` the stream (authenticating when asked to), the same first step
/// FFmpeg takes, and turns the answer into a plain reason. `Ok` means the stream exists and the
/// credentials are right; what remains to fail is the media itself.
pub(crate) fn preflight(url: &str, timeout: Duration) -> Result<(), RtspError> {
    let u = RtspUrl::parse(url)?;
    if url.starts_with("rtsps://") {
        // TLS: leave it to FFmpeg; its error is all we can give.
        return Ok(());
    }
    let endpoint = u.endpoint();
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| RtspError::Network(endpoint.clone(), e.to_string()))?
        .next()
        .ok_or_else(|| RtspError::Network(endpoint.clone(), "no address".into()))?;
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => RtspError::Refused(endpoint.clone()),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            RtspError::NoAnswer(endpoint.clone(), timeout.as_secs())
        }
        _ => RtspError::Network(endpoint.clone(), e.to_string()),
    };
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
    let mut writer = stream;

    let mut auth: Option<String> = None;
    for cseq in 1..=2 {
        let mut req = format!(
            "DESCRIBE {} RTSP/1.0\r\nCSeq: {cseq}\r\nAccept: application/sdp\r\nUser-Agent: ocellus\r\n",
            u.bare
        );
        if let Some(a) = &auth {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        writer.write_all(req.as_bytes()).map_err(io)?;
        let resp = read_response(&mut reader, &endpoint).map_err(|e| match e {
            ReadError::Io(e) => io(e),
            ReadError::NotRtsp(line) => RtspError::NotRtsp(endpoint.clone(), line),
        })?;
        match resp.status {
            200..=299 => return Ok(()),
            404 => return Err(RtspError::NotFound(u.path.clone())),
            401 if auth.is_none() => {
                let (Some(user), Some(pass)) = (&u.user, &u.password) else {
                    return Err(RtspError::NeedsCredentials);
                };
                let challenge = resp.header("www-authenticate").unwrap_or("");
                auth = Some(authorization(challenge, user, pass, &u.bare));
                // The body, if any, is skipped by reading its length below.
                skip_body(&mut reader, &resp).map_err(io)?;
            }
            401 => return Err(RtspError::WrongCredentials),
            s => return Err(RtspError::Status(s, resp.reason)),
        }
    }
    Err(RtspError::WrongCredentials)
}

/// The `Authorization` header answering `challenge` (Digest, as nearly every camera asks, or
/// Basic).
fn authorization(challenge: &str, user: &str, pass: &str, uri: &str) -> String {
    let lower = challenge.to_ascii_lowercase();
    if lower.starts_with("digest") {
        let param = |name: &str| -> String {
            let key = format!("{name}=");
            challenge
                .split(',')
                .map(|p| p.trim().trim_start_matches("Digest").trim())
                .find_map(|p| {
                    p.strip_prefix(&key)
                        .map(|v| v.trim_matches('"').to_string())
                })
                .unwrap_or_default()
        };
        let (realm, nonce) = (param("realm"), param("nonce"));
        let md5 = |s: String| format!("{:x}", Md5::digest(s.as_bytes()));
        let ha1 = md5(format!("{user}:{realm}:{pass}"));
        let ha2 = md5(format!("DESCRIBE:{uri}"));
        let response = md5(format!("{ha1}:{nonce}:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\""
        )
    } else {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        format!("Basic {token}")
    }
}

enum ReadError {
    Io(std::io::Error),
    NotRtsp(String),
}

fn read_response(r: &mut impl BufRead, _endpoint: &str) -> Result<Response, ReadError> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(ReadError::Io)?;
    let status_line = line.trim_end().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let (proto, code, reason) = (parts.next(), parts.next(), parts.next());
    let status = match (proto, code.and_then(|c| c.parse::<u16>().ok())) {
        (Some(p), Some(s)) if p.starts_with("RTSP/") => s,
        _ => {
            let shown: String = status_line.chars().take(60).collect();
            return Err(ReadError::NotRtsp(if shown.is_empty() {
                "it closed the connection".into()
            } else {
                format!("it answered {shown:?}")
            }));
        }
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(ReadError::Io)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(Response {
        status,
        reason: reason.unwrap_or("").to_string(),
        headers,
    })
}

fn skip_body(r: &mut impl BufRead, resp: &Response) -> std::io::Result<()> {
    let n: usize = resp
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut buf = vec![0u8; n.min(64 * 1024)];
    std::io::Read::read_exact(r, &mut buf)
}

/// `OPENCV_FFMPEG_CAPTURE_OPTIONS` is the only way to hand FFmpeg options through OpenCV, and it
/// is one process-wide variable read while a capture opens: opens are serialised on this lock so
/// that two cameras never see each other's options.
static FFMPEG_OPTIONS: Mutex<()> = Mutex::new(());

/// FFmpeg's options for one camera: its transport, and a stream probe bounded well inside the
/// open timeout (FFmpeg's default probe, 5 s, was cut by a 5 s open timeout, leaving a capture
/// that opened but never decoded).
fn ffmpeg_options(transport: RtspTransport, open_timeout: Duration) -> String {
    let probe_us = (open_timeout.as_micros() / 3).clamp(500_000, 5_000_000);
    format!(
        "rtsp_transport;{}|analyzeduration;{probe_us}|probesize;5000000",
        transport.as_str()
    )
}

/// Opens `url` with FFmpeg over `transport`; the open (connect, probe, first packets) may take
/// `open_timeout`, each read then `read_timeout`.
pub(crate) fn open(
    url: &str,
    transport: RtspTransport,
    open_timeout: Duration,
    read_timeout: Duration,
) -> Result<VideoCapture, RtspError> {
    let fail = |detail: String| RtspError::Open {
        timeout_s: open_timeout.as_secs(),
        transport: transport.as_str(),
        other: transport.other().as_str(),
        detail,
    };
    let params = Vector::from_slice(&[
        videoio::CAP_PROP_OPEN_TIMEOUT_MSEC,
        open_timeout.as_millis().min(i32::MAX as u128) as i32,
        videoio::CAP_PROP_READ_TIMEOUT_MSEC,
        read_timeout.as_millis().min(i32::MAX as u128) as i32,
    ]);
    let cap = {
        let _serial = FFMPEG_OPTIONS.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var(
            "OPENCV_FFMPEG_CAPTURE_OPTIONS",
            ffmpeg_options(transport, open_timeout),
        );
        let cap = VideoCapture::from_file_with_params(url, videoio::CAP_FFMPEG, &params);
        std::env::remove_var("OPENCV_FFMPEG_CAPTURE_OPTIONS");
        cap
    }
    .map_err(|e| fail(e.message))?;
    if !cap.is_opened().unwrap_or(false) {
        return Err(fail("FFmpeg could not open the stream".into()));
    }
    Ok(cap)
}

/// The stream's codec as FFmpeg names it (`h264`, `hevc`, `mjpeg`), for messages.
pub(crate) fn codec(cap: &VideoCapture) -> String {
    let fourcc = cap.get(videoio::CAP_PROP_FOURCC).unwrap_or(0.0) as u32;
    let s: String = fourcc
        .to_le_bytes()
        .iter()
        .filter(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .collect();
    if s.is_empty() {
        "unknown codec".into()
    } else {
        s.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_credentials_and_path() {
        let u =
            RtspUrl::parse("rtsp://admin:p%40ss@192.0.2.7:8554/Streaming/Channels/101").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("192.0.2.7", 8554));
        assert_eq!(u.user.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.bare, "rtsp://192.0.2.7:8554/Streaming/Channels/101");
        assert_eq!(u.path, "/Streaming/Channels/101");
        let u = RtspUrl::parse("rtsp://cam.local").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("cam.local", 554, "/")
        );
        let u = RtspUrl::parse("rtsp://[::1]:9000/live").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        let err = RtspUrl::parse("rtsp://user:secret@/x").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn digest_answer_matches_rfc_2617_example() {
        // RFC 2617 3.5, without qop: response = MD5(HA1:nonce:HA2).
        let h = authorization(
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
            "Mufasa",
            "Circle Of Life",
            "/dir/index.html",
        );
        let ha1 = format!(
            "{:x}",
            Md5::digest(b"Mufasa:testrealm@host.com:Circle Of Life")
        );
        assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
        assert!(h.starts_with("Digest username=\"Mufasa\""), "{h}");
        assert!(h.contains("uri=\"/dir/index.html\""), "{h}");
        assert_eq!(
            authorization("Basic realm=\"cam\"", "a", "b", "/"),
            "Basic YTpi"
        );
    }

    #[test]
    fn a_closed_port_is_reported_as_refused() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = preflight(
            &format!("rtsp://127.0.0.1:{port}/x"),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert_eq!(err, RtspError::Refused(format!("127.0.0.1:{port}")));
    }

    /// A listener on a free port that answers each connection with `reply` (or, with `None`,
    /// accepts and says nothing).
    fn fake_server(reply: Option<&'static str>) -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut s, &mut buf);
                match reply {
                    Some(r) => {
                        let _ = s.write_all(r.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_secs(3)),
                }
            }
        });
        port
    }

    #[test]
    fn a_web_server_on_the_port_is_not_rtsp_and_silence_is_no_answer() {
        let port = fake_server(Some("HTTP/1.1 400 Bad Request\r\n\r\n"));
        let err = preflight(
            &format!("rtsp://127.0.0.1:{port}/x"),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(err, RtspError::NotRtsp(..)), "{err}");
        assert!(err.to_string().contains("does not speak RTSP"), "{err}");
        let port = fake_server(None);
        let err = preflight(
            &format!("rtsp://127.0.0.1:{port}/x"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(err, RtspError::NoAnswer(format!("127.0.0.1:{port}"), 1));
    }

    #[test]
    fn other_statuses_are_reported_with_their_reason() {
        let port = fake_server(Some("RTSP/1.0 503 Service Unavailable\r\nCSeq: 1\r\n\r\n"));
        let err = preflight(
            &format!("rtsp://127.0.0.1:{port}/x"),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert_eq!(err, RtspError::Status(503, "Service Unavailable".into()));
    }

    #[test]
    fn probe_stays_inside_the_open_timeout() {
        let o = ffmpeg_options(RtspTransport::Udp, Duration::from_secs(15));
        assert_eq!(
            o,
            "rtsp_transport;udp|analyzeduration;5000000|probesize;5000000"
        );
        let o = ffmpeg_options(RtspTransport::Tcp, Duration::from_secs(3));
        assert!(
            o.starts_with("rtsp_transport;tcp|analyzeduration;1000000|"),
            "{o}"
        );
    }
}
