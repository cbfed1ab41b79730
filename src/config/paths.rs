//! Where files named in the config are: a relative path written in a config file is relative to
//! that file's directory (so a config works whatever directory the daemon is started from), and
//! the built-in defaults (the model, its labels, ONNX Runtime's copy in `vendor/`) are looked for
//! where a package installs them, then in the source checkout the binary was built in, then in
//! the working directory.

use std::path::{Path, PathBuf};

use super::{Config, DetectorConfig};

/// Where the Debian package (and the Yocto layer) install the data files.
pub const INSTALLED_DATA: &str = "/usr/share/ocellus";

impl Config {
    /// Makes the relative paths written in the config file at `file` (whose text is `text`)
    /// relative to its directory. Paths the file does not set keep their defaults.
    pub(super) fn resolve_relative_to(&mut self, file: &Path, text: &str) {
        let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return;
        };
        let Ok(doc) = text.parse::<toml::Table>() else {
            return;
        };
        let set = |section: &str, key: &str| {
            doc.get(section)
                .and_then(|s| s.as_table())
                .is_some_and(|t| t.contains_key(key))
        };
        let join = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = dir.join(&*p);
            }
        };
        if set("detector", "model") {
            join(&mut self.detector.model);
        }
        if set("detector", "labels") {
            join(&mut self.detector.labels);
        }
        // A bare library name is for the dynamic loader's search; a path is a file.
        if let Some(lib) = &mut self.detector.onnxruntime_library {
            if lib.components().count() > 1 {
                join(lib);
            }
        }
        if set("storage", "path") {
            join(&mut self.storage.path);
        }
        for p in self.file_paths_mut() {
            join(p);
        }
        for cam in &mut self.cameras {
            if is_relative_file(&cam.source) {
                cam.source = dir.join(cam.source.trim()).to_string_lossy().into_owned();
            }
        }
    }

    /// The optional files the config names (TLS certificates and keys), each given only when set.
    fn file_paths_mut(&mut self) -> impl Iterator<Item = &mut PathBuf> {
        let s = &mut self.server;
        let m = self.mqtt.as_mut();
        [s.tls_cert.as_mut(), s.tls_key.as_mut()]
            .into_iter()
            .chain(m.into_iter().flat_map(|m| {
                [
                    m.ca_file.as_mut(),
                    m.client_cert.as_mut(),
                    m.client_key.as_mut(),
                ]
            }))
            .flatten()
    }

    /// The same configuration with every relative path made absolute against the working
    /// directory: the files `run` started here would use, written so that they stay right
    /// wherever the text is pasted (`check-config` prints this).
    pub fn with_absolute_paths(&self) -> Config {
        let mut c = self.clone();
        let Ok(cwd) = std::env::current_dir() else {
            return c;
        };
        let abs = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = cwd.join(&*p);
            }
        };
        abs(&mut c.detector.model);
        abs(&mut c.detector.labels);
        if let Some(lib) = &mut c.detector.onnxruntime_library {
            if lib.components().count() > 1 {
                abs(lib);
            }
        }
        abs(&mut c.storage.path);
        for p in c.file_paths_mut() {
            abs(p);
        }
        for cam in &mut c.cameras {
            if is_relative_file(&cam.source) {
                cam.source = cwd.join(cam.source.trim()).to_string_lossy().into_owned();
            }
        }
        c
    }

    /// Points the default model and labels at where they are, when they are not in the working
    /// directory: the installed data, then the source checkout the binary was built in.
    pub fn locate_defaults(&mut self) {
        let d = DetectorConfig::default();
        for (path, default) in [
            (&mut self.detector.model, &d.model),
            (&mut self.detector.labels, &d.labels),
        ] {
            if *path == *default && !path.exists() {
                if let Some(found) = find_data(default) {
                    *path = found;
                }
            }
        }
    }
}

/// A camera source that is a relative file path. The classification is `capture::Source::parse`'s
/// (a pipeline has `!` and `appsink`, a URL `://`, a device is `/dev/video*` or an index,
/// anything else a file), repeated here because capture depends on config, not the reverse;
/// a test holds the two together.
fn is_relative_file(source: &str) -> bool {
    let s = source.trim();
    let pipeline = s.contains('!') && s.contains("appsink");
    let url = s.contains("://");
    let device = s.starts_with("/dev/video") || s.parse::<u32>().is_ok();
    !(pipeline || url || device || s.is_empty()) && Path::new(s).is_relative()
}

/// `rel` (a default data path such as `models/fastestdet/FastestDet.onnx`) under the installed
/// data directory, or in the source checkout above the running binary (`target/release/..`).
pub fn find_data(rel: &Path) -> Option<PathBuf> {
    let installed = Path::new(INSTALLED_DATA).join(rel);
    if installed.exists() {
        return Some(installed);
    }
    checkout_dirs().map(|d| d.join(rel)).find(|p| p.exists())
}

/// The directories above the running binary, nearest first (a few levels: `target/release`
/// and `target/<triple>/release` sit two and three below the checkout).
pub fn checkout_dirs() -> impl Iterator<Item = PathBuf> {
    let exe = std::env::current_exe().ok();
    let mut dirs = Vec::new();
    let mut cur = exe.as_deref().and_then(Path::parent);
    for _ in 0..4 {
        let Some(d) = cur else { break };
        dirs.push(d.to_path_buf());
        cur = d.parent();
    }
    dirs.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_file_source_is_what_capture_opens_as_a_file() {
        use crate::capture::Source;
        for s in [
            "clip.avi",
            "media/a b.mp4",
            "  frames/%04d.png",
            "/var/clips/a.avi",
            "/dev/video0",
            "0",
            "rtsp://cam/stream",
            "videotestsrc ! appsink",
            "a!b.avi",
        ] {
            let file = matches!(Source::parse(s), Source::File(p) if p.is_relative());
            assert_eq!(is_relative_file(s), file, "{s:?}");
        }
    }

    #[test]
    fn relative_paths_in_a_file_are_relative_to_it_and_the_rest_stays() {
        let text =
            "[detector]\nmodel = \"m/net.onnx\"\nonnxruntime_library = \"lib/libonnxruntime.so\"\n\
                    [storage]\npath = \"data/events.db\"\n\
                    [[cameras]]\nid = \"a\"\nsource = \"clips/a.avi\"\n\
                    [[cameras]]\nid = \"b\"\nsource = \"rtsp://cam/stream\"\n\
                    [[cameras]]\nid = \"c\"\nsource = \"/dev/video0\"\n\
                    [[cameras]]\nid = \"d\"\nsource = \"videotestsrc ! appsink\"\n";
        let file = Path::new("/etc/ocellus/ocellus.toml");
        let mut cfg = Config::parse(text, file).unwrap();
        cfg.resolve_relative_to(file, text);
        assert_eq!(cfg.detector.model, Path::new("/etc/ocellus/m/net.onnx"));
        assert_eq!(
            cfg.detector.onnxruntime_library.as_deref(),
            Some(Path::new("/etc/ocellus/lib/libonnxruntime.so"))
        );
        // Not set in the file: the default, looked up later.
        assert_eq!(cfg.detector.labels, DetectorConfig::default().labels);
        assert_eq!(cfg.storage.path, Path::new("/etc/ocellus/data/events.db"));
        let sources: Vec<&str> = cfg.cameras.iter().map(|c| c.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "/etc/ocellus/clips/a.avi",
                "rtsp://cam/stream",
                "/dev/video0",
                "videotestsrc ! appsink"
            ]
        );
        // A bare library name stays for the loader's search.
        let text = "[detector]\nonnxruntime_library = \"libonnxruntime.so.1\"\n";
        let mut cfg = Config::parse(text, file).unwrap();
        cfg.resolve_relative_to(file, text);
        assert_eq!(
            cfg.detector.onnxruntime_library.as_deref(),
            Some(Path::new("libonnxruntime.so.1"))
        );
    }
}
