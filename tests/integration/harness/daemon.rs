//! Starting the real `ocellus run` for a test, and talking to it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A running daemon; killed when dropped.
pub struct DaemonProc {
    pub child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

impl DaemonProc {
    /// Starts `ocellus run` with `extra` TOML appended to a config that listens on a free
    /// loopback port and stores into a fresh database. `cameras` is TOML for `[[cameras]]`.
    pub fn start(extra: &str, cameras: &str) -> DaemonProc {
        Self::start_env(extra, cameras, &[])
    }

    /// As `start`, with extra environment variables for the daemon.
    pub fn start_env(extra: &str, cameras: &str, env: &[(&str, &str)]) -> DaemonProc {
        let (dir, db, cfg) = Self::config(extra, cameras);
        Self::start_at(cfg, dir, db, "127.0.0.1:0", env)
    }

    /// A fresh directory with a database path and a config of `extra`, the database and
    /// `cameras`: (dir, db, config).
    fn config(extra: &str, cameras: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("events.db");
        let cfg = dir.path().join("ocellus.toml");
        std::fs::write(
            &cfg,
            format!(
                "{extra}\n[storage]\npath = {:?}\n{cameras}\n",
                db.to_str().unwrap()
            ),
        )
        .unwrap();
        (dir, db, cfg)
    }

    /// `ocellus run --config CFG --listen LISTEN`, for [`DaemonProc::spawn`] to start.
    pub fn command(cfg: &std::path::Path, listen: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ocellus"));
        cmd.args(["run", "--config", cfg.to_str().unwrap(), "--listen", listen]);
        cmd
    }

    /// Starts on a given address (to restart a daemon where a client expects it).
    pub fn start_at(
        cfg: PathBuf,
        dir: tempfile::TempDir,
        db: PathBuf,
        listen: &str,
        env: &[(&str, &str)],
    ) -> DaemonProc {
        let mut cmd = Self::command(&cfg, listen);
        cmd.envs(env.iter().copied());
        Self::spawn(cmd, dir, db)
    }

    /// Runs `cmd` (which must end up exec'ing `ocellus run`) and waits for it to listen.
    pub fn spawn(cmd: Command, dir: tempfile::TempDir, db: PathBuf) -> DaemonProc {
        Self::spawn_with(cmd, dir, db, Stdio::inherit())
    }

    /// As `start`, with the daemon's log (stderr) kept in a file for [`DaemonProc::log`].
    pub fn start_logged(extra: &str, cameras: &str) -> DaemonProc {
        Self::start_logged_env(extra, cameras, &[])
    }

    /// As `start_logged`, with extra environment variables (`OCELLUS_LOG` among them: the
    /// daemon logs at `warn` otherwise).
    pub fn start_logged_env(extra: &str, cameras: &str, env: &[(&str, &str)]) -> DaemonProc {
        let (dir, db, cfg) = Self::config(extra, cameras);
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let mut cmd = Self::command(&cfg, "127.0.0.1:0");
        cmd.envs(env.iter().copied());
        Self::spawn_with(cmd, dir, db, Stdio::from(log))
    }

    /// What a daemon started with [`DaemonProc::start_logged`] has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn spawn_with(
        mut cmd: Command,
        dir: tempfile::TempDir,
        db: PathBuf,
        stderr: Stdio,
    ) -> DaemonProc {
        // From the repository root, unless the caller chose a directory.
        if cmd.get_current_dir().is_none() {
            cmd.current_dir(super::root());
        }
        if !cmd
            .get_envs()
            .any(|(k, v)| k == "OCELLUS_LOG" && v.is_some())
        {
            cmd.env("OCELLUS_LOG", "warn");
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("ocellus listening on ")
            .and_then(|l| {
                l.strip_prefix("http://")
                    .or_else(|| l.strip_prefix("https://"))
            })
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end_matches('/')
            .to_string();
        DaemonProc {
            child,
            addr,
            dir,
            db,
        }
    }

    /// The street clip, looping at its own 10 fps.
    pub fn street(extra: &str) -> DaemonProc {
        let video = super::vtest();
        Self::start(
            extra,
            &format!(
                "[[cameras]]\nid = \"street\"\nsource = {:?}\n",
                video.to_str().unwrap()
            ),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.pid(), sig);
    }

    /// Resident memory of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Stops this daemon with SIGTERM and starts a new one on the same address, config and
    /// database.
    pub fn restart(mut self) -> DaemonProc {
        self.signal(15);
        assert!(self
            .wait_exit(Duration::from_secs(15))
            .is_some_and(|s| s.success()));
        self.start_again()
    }

    /// Kills this daemon with SIGKILL (a crash, a power cut) and starts a new one on the same
    /// address, config and database.
    pub fn restart_after_kill_9(mut self) -> DaemonProc {
        self.signal(9);
        assert!(self.wait_exit(Duration::from_secs(15)).is_some());
        self.start_again()
    }

    /// Kills this daemon with SIGKILL and waits for it to be gone (`start_again` brings it back).
    pub fn kill_9(&mut self) {
        self.signal(9);
        assert!(self.wait_exit(Duration::from_secs(15)).is_some());
    }

    /// Starts a daemon again on the same address, config and database (after `kill_9`).
    pub fn start_again(mut self) -> DaemonProc {
        let addr = self.addr.clone();
        let dir = tempfile::tempdir().unwrap();
        let old = std::mem::replace(&mut self.dir, dir);
        let cfg = old.path().join("ocellus.toml");
        let db = self.db.clone();
        DaemonProc::start_at(cfg, old, db, &addr, &[])
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub async fn get_json(url: &str) -> serde_json::Value {
    let body = http_get(url, &[]).await;
    assert_eq!(body.0, 200, "{url}: {}", String::from_utf8_lossy(&body.1));
    serde_json::from_slice(&body.1).unwrap()
}

/// A minimal HTTP/1.1 GET over a TCP socket: (status, body). Enough for our own server.
pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let (status, _, body) = http_get_head(url, headers).await;
    (status, body)
}

/// As `http_get`, with the response's head (status line and headers) as text.
pub async fn http_get_head(url: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

/// Prometheus text -> the value of one sample (name with labels as written).
pub async fn metric(d: &DaemonProc, sample: &str) -> f64 {
    let (_, body) = http_get(&d.url("/metrics"), &[]).await;
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{sample} not in /metrics"))
        .parse()
        .unwrap()
}

pub async fn connect(d: &DaemonProc) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", d.addr))
        .await
        .unwrap();
    ws
}

pub async fn send(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// Reads `ws` up to its close frame, handing each text message to `text`; the close code.
/// Panics when 15 s pass without a message or the socket ends without a close frame.
pub async fn until_close(ws: &mut Ws, mut text: impl FnMut(&str)) -> CloseCode {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("no close")
        {
            Some(Ok(Message::Text(t))) => text(&t),
            Some(Ok(Message::Close(f))) => break f.expect("a close frame without a code").code,
            Some(Ok(_)) => {}
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// The next text message, parsed; binary frames are skipped. Panics after `limit`.
pub async fn next_json(ws: &mut Ws, limit: Duration) -> serde_json::Value {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let msg = tokio::time::timeout_at(end, ws.next())
            .await
            .expect("timed out waiting for a message")
            .expect("socket closed")
            .expect("socket error");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The next text message whose `type` is `ty`.
pub async fn next_of_type(ws: &mut Ws, ty: &str, limit: Duration) -> serde_json::Value {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let v = next_json(ws, left).await;
        if v["type"] == ty {
            return v;
        }
    }
}

/// The first camera's state and last error, from /api/cameras.
pub async fn camera_state(dmn: &DaemonProc) -> (String, Option<String>) {
    let cams = get_json(&dmn.url("/api/cameras")).await;
    (
        cams[0]["state"].as_str().unwrap().to_string(),
        cams[0]["last_error"].as_str().map(String::from),
    )
}

/// The first `n` frames of the street clip as JPEGs.
pub fn street_jpegs(n: usize) -> std::sync::Arc<Vec<Vec<u8>>> {
    use opencv::core::Vector;
    let jpegs = super::read_frames(&super::vtest(), 0, n)
        .iter()
        .map(|m| {
            let mut buf = Vector::<u8>::new();
            opencv::imgcodecs::imencode(".jpg", m, &mut buf, &Vector::new()).unwrap();
            buf.as_slice().to_vec()
        })
        .collect();
    std::sync::Arc::new(jpegs)
}

/// A tiny MJPEG-over-HTTP camera (multipart/x-mixed-replace, as cheap IP cameras serve),
/// streaming JPEGs at 10 fps. `pause` keeps connections open but sends nothing (a hung camera);
/// `stop` cuts everything (a camera that went away).
pub struct MjpegCamera {
    pub addr: std::net::SocketAddr,
    pub paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What every connection streams from its next frame on (see `set_frames`).
    frames: std::sync::Arc<std::sync::Mutex<std::sync::Arc<Vec<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MjpegCamera {
    pub async fn start(addr: &str, jpegs: std::sync::Arc<Vec<Vec<u8>>>) -> MjpegCamera {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let p = paused.clone();
        let frames = std::sync::Arc::new(std::sync::Mutex::new(jpegs));
        let f = frames.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (frames, paused) = (f.clone(), p.clone());
                conns.spawn(async move {
                    let mut req = [0u8; 2048];
                    let _ = sock.read(&mut req).await;
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\nCache-Control: no-cache\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let mut tick = tokio::time::interval(Duration::from_millis(100));
                    for i in 0usize.. {
                        tick.tick().await;
                        if paused.load(Ordering::Relaxed) {
                            continue;
                        }
                        let jpegs = frames.lock().unwrap().clone();
                        let jpeg = &jpegs[i % jpegs.len()];
                        let part = format!("--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", jpeg.len());
                        if sock.write_all(part.as_bytes()).await.is_err()
                            || sock.write_all(jpeg).await.is_err()
                            || sock.write_all(b"\r\n").await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        MjpegCamera {
            addr,
            paused,
            frames,
            task,
        }
    }

    /// Streams these frames from now on, on the open connections too.
    pub fn set_frames(&self, jpegs: std::sync::Arc<Vec<Vec<u8>>>) {
        *self.frames.lock().unwrap() = jpegs;
    }

    pub fn pause(&self, on: bool) {
        self.paused.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops accepting and cuts every open stream (dropping the task drops its JoinSet).
    pub fn stop(self) {
        self.task.abort();
    }
}
