//! ONNX Runtime as the DNN detector's inference engine, loaded at run time (the `ort` crate with
//! `load-dynamic`): the binary builds, cross-compiles and runs without the library, and uses it
//! where it is found. The library is looked up once per process, its version checked against
//! the C API level this build asks for ([`ort::MINOR_VERSION`], 1.17), and sessions are made
//! per detector, sharing one container of pre-packed weights.

use std::ffi::{CStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::session::Session;
use ort::value::TensorRef;

use super::decode::Tensor;
use crate::config::{DetectorConfig, ExecutionProvider};
use crate::pipeline::detect::DetectError;

/// Why a file is not an ONNX Runtime this build can use.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OrtLibraryError {
    #[error("not found")]
    NotFound,
    #[error("cannot load it as a shared library ({0})")]
    NotALibrary(String),
    #[error("not on the system's library path")]
    NotOnPath,
    #[error("it is not ONNX Runtime (it has no OrtGetApiBase)")]
    NotOnnxRuntime,
    #[error("its OrtGetApiBase returned nothing")]
    NoApiBase,
    #[error("it reports no version")]
    NoVersion,
    #[error("it reports a version this build cannot read ({0:?})")]
    UnreadableVersion(String),
    #[error("it is ONNX Runtime {found}; this build needs 1.{needs} or newer")]
    TooOld { found: String, needs: u32 },
}

/// The ONNX Runtime library this process loaded.
#[derive(Clone, Debug)]
pub struct Library {
    pub path: PathBuf,
    pub version: String,
}

/// Where the library was looked for, and why each place failed; for the error and the warning.
#[derive(Debug)]
pub struct NotLoaded {
    pub tried: Vec<(PathBuf, String)>,
    /// The user named the library (config or `ORT_DYLIB_PATH`): a failure is worth an error.
    pub explicit: bool,
}

impl NotLoaded {
    pub fn describe(&self) -> String {
        self.tried
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Where the Debian package puts its own copy of ONNX Runtime.
pub const PACKAGED_DIR: &str = "/usr/lib/ocellus";

/// Where ONNX Runtime is looked for, in order: `detector.onnxruntime_library`, else
/// `ORT_DYLIB_PATH`, else the system's library path, then the package's private copy
/// (`/usr/lib/ocellus`), then the copy scripts/setup.sh fetches.
/// A path given by the user is the only one tried.
/// `env` is `ORT_DYLIB_PATH`'s value.
pub fn candidates(configured: Option<&Path>, env: Option<OsString>) -> (Vec<PathBuf>, bool) {
    if let Some(p) = configured.filter(|p| !p.as_os_str().is_empty()) {
        return (vec![p.to_owned()], true);
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return (vec![PathBuf::from(p)], true);
    }
    let vendored = PathBuf::from(VENDORED);
    let mut list = vec![
        // The development package's link, or an unpacked release on LD_LIBRARY_PATH.
        PathBuf::from("libonnxruntime.so"),
        // Upstream's soname.
        PathBuf::from("libonnxruntime.so.1"),
    ];
    // Debian's and Ubuntu's runtime package (libonnxruntime1.21) has only its versioned
    // soname, libonnxruntime.so.1.21, in the multiarch directory: the newest found.
    list.extend(versioned_in(&library_dirs()));
    // The Debian package's private copy, for distributions without ONNX Runtime (Debian 12,
    // Raspberry Pi OS bookworm): after the system's, so an administrator's GPU build wins.
    list.extend(versioned_in(&[PathBuf::from(PACKAGED_DIR)]));
    // The setup script's copy: from the working directory, or the source checkout the binary
    // was built in.
    if vendored.exists() {
        list.push(vendored);
    }
    list.extend(
        crate::config::checkout_dirs()
            .map(|d| d.join(VENDORED))
            .filter(|p| p.exists())
            .take(1),
    );
    (list, false)
}

/// The system's library directories for this architecture.
fn library_dirs() -> Vec<PathBuf> {
    let triplet = match std::env::consts::ARCH {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        other => other,
    };
    [
        "/usr/local/lib",
        &format!("/usr/lib/{triplet}"),
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// `libonnxruntime.so.1.N[.M]` files in `dirs`, newest version first.
fn versioned_in(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .strip_prefix("libonnxruntime.so.1.")?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((version, e.path()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Where scripts/setup.sh unpacks the pinned ONNX Runtime library.
pub const VENDORED: &str = "vendor/onnxruntime/libonnxruntime.so";

static LOADED: OnceLock<Library> = OnceLock::new();
/// Loading is tried once at a time: `ort` keeps the first library that loads for the process.
static LOADING: Mutex<()> = Mutex::new(());

/// Loads ONNX Runtime (once per process; later calls return the library loaded first).
pub fn load(configured: Option<&Path>) -> Result<Library, NotLoaded> {
    let _guard = LOADING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(lib) = LOADED.get() {
        return Ok(lib.clone());
    }
    let (paths, explicit) = candidates(configured, std::env::var_os("ORT_DYLIB_PATH"));
    let mut tried = Vec::new();
    for path in paths {
        match check_library(&path) {
            Ok(version) => match ort::init_from(&path) {
                Ok(env) => {
                    env.with_name("ocellus").commit();
                    let lib = Library { path, version };
                    let _ = LOADED.set(lib.clone());
                    return Ok(lib);
                }
                Err(e) => tried.push((path, e.to_string())),
            },
            Err(why) => tried.push((path, why.to_string())),
        }
    }
    Err(NotLoaded { tried, explicit })
}

/// Opens `path` and reads ONNX Runtime's version from its C API entry point, before `ort` is
/// let near it: a file that is not a library, a library that is not ONNX Runtime, and a
/// version older than this build's API level each get their own message.
fn check_library(path: &Path) -> Result<String, OrtLibraryError> {
    // SAFETY: loading a shared library runs its initialisers; the user pointed us at this file
    // as ONNX Runtime (or it is the system's libonnxruntime), which is what we then run anyway.
    // A bare name is looked for by the dynamic loader; anything else is a file.
    let is_file = path.components().count() > 1;
    if is_file && !path.exists() {
        return Err(OrtLibraryError::NotFound);
    }
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
        if is_file {
            OrtLibraryError::NotALibrary(crate::base::errors::chain(&e))
        } else {
            OrtLibraryError::NotOnPath
        }
    })?;
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's one exported entry point, with this signature.
    let get: libloading::Symbol<GetApiBase> =
        unsafe { lib.get(b"OrtGetApiBase") }.map_err(|_| OrtLibraryError::NotOnnxRuntime)?;
    // SAFETY: as above; the base and its version string are static in the library.
    let version = unsafe {
        let base = get();
        if base.is_null() {
            return Err(OrtLibraryError::NoApiBase);
        }
        let v = ((*base).GetVersionString)();
        if v.is_null() {
            return Err(OrtLibraryError::NoVersion);
        }
        CStr::from_ptr(v).to_string_lossy().into_owned()
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok())
        .ok_or_else(|| OrtLibraryError::UnreadableVersion(version.clone()))?;
    if !version.starts_with("1.") || minor < ort::MINOR_VERSION {
        return Err(OrtLibraryError::TooOld {
            found: version,
            needs: ort::MINOR_VERSION,
        });
    }
    Ok(version)
}

/// Weights shared by the sessions of one model in this process.
pub struct Shared {
    model: Vec<u8>,
    prepacked: PrepackedWeights,
}

impl Shared {
    /// Reads the model once; every session built from it shares its pre-packed weights.
    pub fn new(model: &Path) -> Result<Self, DetectError> {
        let bytes = std::fs::read(model).map_err(|e| DetectError::ModelLoad {
            path: model.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            model: bytes,
            prepacked: PrepackedWeights::new(),
        })
    }
}

/// One ONNX Runtime session of the model, and the output copied out of it.
pub struct OrtEngine {
    session: Session,
    input: String,
    /// The execution provider nodes go to first (`cpu` unless a GPU provider registered).
    pub provider: &'static str,
    shapes: Vec<Vec<i32>>,
    outputs: Vec<Vec<f32>>,
}

/// Refuses a model whose input is fixed (NCHW) at another size than `cfg`'s, naming the keys to
/// set and the model's own `model.toml` when there is one: ONNX Runtime would otherwise fail on
/// the first frame with "Got invalid dimensions for input". A dynamic size (-1) is accepted.
fn check_input_size(cfg: &DetectorConfig, shape: Option<&[i64]>) -> Result<(), DetectError> {
    let Some(&[_, _, h, w]) = shape else {
        return Ok(());
    };
    let (cw, ch) = (cfg.input_width, cfg.input_height);
    if h <= 0 || w <= 0 || (w == i64::from(cw) && h == i64::from(ch)) {
        return Ok(());
    }
    let toml = cfg.model.with_file_name("model.toml");
    let hint = if toml.exists() {
        format!(
            " (all of them are in {}: copy its [detector] table)",
            toml.display()
        )
    } else {
        String::new()
    };
    Err(DetectError::InputSize {
        path: cfg.model.clone(),
        model_w: w,
        model_h: h,
        config_w: cw,
        config_h: ch,
        hint,
    })
}

impl OrtEngine {
    pub fn new(cfg: &DetectorConfig, shared: &Shared) -> Result<Self, DetectError> {
        let path = &cfg.model;
        let fail = |reason: String| DetectError::ModelLoad {
            path: path.clone(),
            reason,
        };
        let err = |e: ort::Error<SessionBuilder>| fail(first_line(&e.to_string()));
        let mut builder = Session::builder()
            .map_err(|e| fail(first_line(&e.to_string())))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(err)?
            .with_prepacked_weights(&shared.prepacked)
            .map_err(err)?
            // A thread that spins after each inference burns a core a live camera needs for
            // decoding; the detector runs a few times a second at most per frame.
            .with_intra_op_spinning(false)
            .map_err(err)?;
        if cfg.threads > 0 {
            builder = builder
                .with_intra_threads(cfg.threads as usize)
                .map_err(err)?;
        }
        let (builder, provider) = register_providers(builder, &cfg.execution_providers);
        let mut builder = builder.with_memory_pattern(false).map_err(err)?;
        let session = builder
            .commit_from_memory(&shared.model)
            .map_err(|e| fail(first_line(&e.to_string())))?;
        let first = session
            .inputs()
            .first()
            .ok_or_else(|| fail("the model has no input".into()))?;
        check_input_size(cfg, first.dtype().tensor_shape().map(|s| &s[..]))?;
        let input = first.name().to_string();
        if session.outputs().is_empty() {
            return Err(fail("the model has no output".into()));
        }
        Ok(Self {
            session,
            input,
            provider,
            shapes: Vec::new(),
            outputs: Vec::new(),
        })
    }

    /// Runs the network on an NCHW float tensor; returns its outputs in the model's order.
    pub fn run(
        &mut self,
        shape: [usize; 4],
        input: &[f32],
    ) -> Result<Vec<Tensor<'_>>, DetectError> {
        let failed = |e: ort::Error| DetectError::Onnxruntime(first_line(&e.to_string()));
        let tensor = TensorRef::from_array_view((shape, input)).map_err(failed)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(failed)?;
        self.shapes.resize_with(outputs.len(), Vec::new);
        self.outputs.resize_with(outputs.len(), Vec::new);
        for (i, (_, value)) in outputs.iter().enumerate() {
            let (dims, data) = value.try_extract_tensor::<f32>().map_err(failed)?;
            self.shapes[i].clear();
            self.shapes[i].extend(dims.iter().map(|&d| d as i32));
            self.outputs[i].clear();
            self.outputs[i].extend_from_slice(data);
        }
        Ok(self
            .shapes
            .iter()
            .zip(&self.outputs)
            .map(|(shape, data)| Tensor { shape, data })
            .collect())
    }
}

/// Registers the preferred execution providers in order; one this ONNX Runtime lacks, or that
/// fails to start (no GPU, no CUDA libraries), is skipped with a warning. Returns the builder
/// and the provider that takes the nodes first.
fn register_providers(
    mut builder: SessionBuilder,
    wanted: &[ExecutionProvider],
) -> (SessionBuilder, &'static str) {
    let mut first = None;
    for &want in wanted {
        let dispatch = match want {
            ExecutionProvider::Cpu => {
                first.get_or_insert("cpu");
                // The CPU provider is always there; nothing to register.
                break;
            }
            ExecutionProvider::Cuda => (
                ep::CUDA::default().is_available(),
                ep::CUDA::default().build(),
            ),
            ExecutionProvider::Tensorrt => (
                ep::TensorRT::default().is_available(),
                ep::TensorRT::default().build(),
            ),
        };
        match dispatch {
            (Ok(true), dispatch) => {
                match builder.with_execution_providers([dispatch.error_on_failure()]) {
                    Ok(b) => {
                        builder = b;
                        first.get_or_insert(want.name());
                    }
                    Err(e) => {
                        tracing::warn!(provider = want.name(), error = %first_line(&e.to_string()), "ONNX Runtime execution provider failed to start; trying the next");
                        builder = e.recover();
                    }
                }
            }
            _ => tracing::warn!(
                provider = want.name(),
                "this ONNX Runtime has no such execution provider; trying the next (see docs/deployment.md for a GPU build)"
            ),
        }
    }
    (builder, first.unwrap_or("cpu"))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_library_then_ort_dylib_path_then_the_system_are_tried() {
        let env = Some(OsString::from("/opt/ort/libonnxruntime.so"));
        let (list, explicit) = candidates(Some(Path::new("/etc/lib.so")), env.clone());
        assert_eq!((list, explicit), (vec![PathBuf::from("/etc/lib.so")], true));
        let (list, explicit) = candidates(None, env);
        assert_eq!(
            (list, explicit),
            (vec![PathBuf::from("/opt/ort/libonnxruntime.so")], true)
        );
        // Empty means unset, for both.
        let (list, explicit) = candidates(Some(Path::new("")), Some(OsString::new()));
        assert!(!explicit);
        assert_eq!(list[0], PathBuf::from("libonnxruntime.so"));
        assert_eq!(list[1], PathBuf::from("libonnxruntime.so.1"));
    }

    #[test]
    fn a_distribution_soname_is_found_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "libonnxruntime.so.1.16",
            "libonnxruntime.so.1.21",
            "libonnxruntime.so.1.21.0",
            "libonnxruntime.so.1.x",
            "libonnxruntime_providers_shared.so",
            "libonnx.so.1",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let names: Vec<String> = versioned_in(&[dir.path().to_owned()])
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "libonnxruntime.so.1.21.0",
                "libonnxruntime.so.1.21",
                "libonnxruntime.so.1.16"
            ]
        );
    }
}
