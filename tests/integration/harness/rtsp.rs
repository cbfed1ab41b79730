//! tests/fixtures/rtsp_server.py: GStreamer's gst-rtsp-server serving an H.264 file, as an IP
//! camera does.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// tests/fixtures/rtsp_server.py, running; killed on drop.
pub struct RtspServer {
    pub child: Child,
    pub port: u16,
    /// Every line it printed ("ready", "setup PATH tcp|udp").
    lines: Arc<Mutex<Vec<String>>>,
}

impl RtspServer {
    pub fn start(clip: &Path, port: u16, auth: Option<(&str, &str)>) -> RtspServer {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(super::fixture("rtsp_server.py"))
            .args(["--port", &port.to_string(), "--file"])
            .arg(clip)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((user, password)) = auth {
            cmd.args(["--user", user, "--password", password]);
        }
        let mut child = cmd
            .spawn()
            .expect("python3-gi (scripts/setup.sh installs it)");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line == "ready" {
                        let _ = ready_tx.send(());
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the RTSP server did not start");
        RtspServer { child, port, lines }
    }

    pub fn url(&self, cred: &str, path: &str) -> String {
        format!("rtsp://{cred}127.0.0.1:{}{path}", self.port)
    }

    pub fn setups(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("setup "))
            .cloned()
            .collect()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
