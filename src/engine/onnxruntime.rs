//! The ONNX Runtime engine (cargo feature `npu`): the same bundle, preprocessing and
//! decisions as tract, with the model run by ONNX Runtime and its execution providers
//! (TensorRT, CUDA, ACL, XNNPACK, QNN, OpenVINO, or its own CPU kernels).
//!
//! ONNX Runtime is not linked in: the library is loaded at start from the path the config
//! names (or `$ORT_DYLIB_PATH`), so the daemon starts, and `tract` runs, on a board without
//! it. Before handing the path to `ort`, this module checks it itself (file there, a shared
//! library, exporting `OrtGetApiBase`, version new enough), because `ort` reports those cases
//! with less detail. A library loads once per process; a reload that names another one is
//! refused (restart instead).
//!
//! Each provider is registered so that a failure is an error, never ONNX Runtime's silent fall
//! to its CPU kernels; unless the config lists `cpu`, nodes no listed provider takes are an
//! error too. Which provider took how many nodes is logged and shown by `vigil check`.
//!
//! Each worker owns its own session (ONNX Runtime runs a session one call at a time) and an
//! input tensor it copies the preprocessed frame into.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::AsPointer;
use ort::ep::{self, ExecutionProviderDispatch};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::{
    DeclaredInput, EngineError, InferenceEngine, InferenceWorker, InputTensor, OnnxRuntimeSettings, Provider,
    apply_activation, check_input, check_output, shape_text,
};
use crate::bundle::{Activation, Bundle, Int8Form, Variant};

/// The oldest ONNX Runtime this build can drive: the API level `ort` is built for (feature
/// `api-24`: the graph-assignment API that tells which provider took which nodes).
pub const MIN_MINOR_VERSION: u32 = ort::MINOR_VERSION;

/// The process's loaded ONNX Runtime.
struct Runtime {
    library: PathBuf,
    version: String,
    environment: ort::environment::Environment,
}

/// ONNX Runtime allows one library and one environment per process, for its whole life.
static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

fn failure(library: &Path, version: Option<&str>, provider: Option<&str>, reason: impl Into<String>) -> EngineError {
    EngineError::OnnxRuntime {
        library: library.to_path_buf(),
        version: version.map(String::from),
        provider: provider.map(String::from),
        reason: reason.into(),
    }
}

/// The library's own version string ("1.32.0"), read through its C entry point. Also the
/// check that the file is a loadable shared library and is ONNX Runtime.
fn library_version(library: &Path) -> Result<String, EngineError> {
    // SAFETY: loading a shared library runs its initialisers; the path is the one the operator
    // configured as ONNX Runtime, which is what `ort` would load next anyway. The symbol's type
    // is the C API's `const OrtApiBase* OrtGetApiBase(void)`, and GetVersionString returns a
    // static NUL-terminated string.
    unsafe {
        let lib = libloading::Library::new(library).map_err(|e| {
            failure(
                library,
                None,
                None,
                format!(
                    "cannot be loaded as a shared library: {e:?}: expected libonnxruntime.so.1.x.y built for this CPU"
                ),
            )
        })?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").map_err(|_| {
                failure(
                    library,
                    None,
                    None,
                    "is not ONNX Runtime: it does not export `OrtGetApiBase`; expected libonnxruntime.so.1.x.y",
                )
            })?;
        let base = get();
        if base.is_null() {
            return Err(failure(library, None, None, "`OrtGetApiBase` returned nothing"));
        }
        let version = std::ffi::CStr::from_ptr(((*base).GetVersionString)()).to_string_lossy().into_owned();
        Ok(version)
    }
}

/// The ELF machine number of the CPU this build runs on.
const ELF_MACHINE: u16 = if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "x86_64") {
    62
} else {
    0
};

/// Check that `path` is a complete 64-bit little-endian ELF shared object for this CPU, before
/// the dynamic loader maps it: a truncated library makes the loader touch pages past the end of
/// the file, which kills the process with SIGBUS instead of returning an error.
fn check_elf(path: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot be read: {e}"))?;
    let len = file.metadata().map_err(|e| format!("cannot be read: {e}"))?.len();
    let mut header = [0u8; 64];
    file.read_exact(&mut header).map_err(|_| "is not an ELF shared library (too short)".to_string())?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Err("is not a 64-bit little-endian ELF shared library".into());
    }
    let machine = u16_at(&header, 18);
    if ELF_MACHINE != 0 && machine != ELF_MACHINE {
        return Err(format!("is an ELF file for another CPU (machine {machine}, this one is {ELF_MACHINE})"));
    }
    let (phoff, phentsize, phnum) =
        (u64_at(&header, 32), u64::from(u16_at(&header, 54)), u64::from(u16_at(&header, 56)));
    let (shoff, shentsize, shnum) =
        (u64_at(&header, 40), u64::from(u16_at(&header, 58)), u64::from(u16_at(&header, 60)));
    let truncated = || format!("is truncated ({len} bytes): the ELF headers point past its end");
    if phentsize < 56 || phoff.saturating_add(phentsize.saturating_mul(phnum)) > len {
        return Err(truncated());
    }
    if shoff.saturating_add(shentsize.saturating_mul(shnum)) > len {
        return Err(truncated());
    }
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    file.seek(SeekFrom::Start(phoff)).and_then(|_| file.read_exact(&mut table)).map_err(|_| truncated())?;
    for entry in table.chunks_exact(phentsize as usize) {
        let (offset, file_size) = (u64_at(entry, 8), u64_at(entry, 32));
        if offset.saturating_add(file_size) > len {
            return Err(truncated());
        }
    }
    Ok(())
}

fn minor_version(version: &str) -> Option<u32> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some("1"), Some(minor)) => minor.parse().ok(),
        _ => None,
    }
}

/// Load ONNX Runtime from `library` (once per process).
fn runtime(library: &Path) -> Result<Arc<Runtime>, EngineError> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = slot.as_ref() {
        if rt.library == library {
            return Ok(Arc::clone(rt));
        }
        return Err(failure(
            library,
            None,
            None,
            format!(
                "ONNX Runtime `{}` is already loaded in this process: expected the same library, or restart vigil to load another",
                rt.library.display()
            ),
        ));
    }
    match std::fs::metadata(library) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(failure(library, None, None, "is not a file: expected libonnxruntime.so.1.x.y")),
        Err(e) => {
            return Err(failure(
                library,
                None,
                None,
                format!(
                    "cannot be read: {e}: expected the ONNX Runtime library (e.g. onnxruntime/capi/libonnxruntime.so.1.x.y from the onnxruntime wheel)"
                ),
            ));
        }
    }
    check_elf(library).map_err(|why| {
        failure(library, None, None, format!("{why}: expected libonnxruntime.so.1.x.y built for this CPU"))
    })?;
    let version = library_version(library)?;
    match minor_version(&version) {
        Some(minor) if minor >= MIN_MINOR_VERSION => {}
        _ => {
            return Err(failure(
                library,
                Some(&version),
                None,
                format!("too old: expected ONNX Runtime 1.{MIN_MINOR_VERSION} or newer"),
            ));
        }
    }
    let environment = ort::init_from(library)
        .map_err(|e| failure(library, Some(&version), None, format!("{e:?}")))?
        .with_name("vigil")
        .with_telemetry(false)
        .build()
        .map_err(|e| failure(library, Some(&version), None, format!("cannot start: {e}")))?;
    log::info!("ONNX Runtime {version} loaded from {}", library.display());
    let rt = Arc::new(Runtime { library: library.to_path_buf(), version, environment });
    *slot = Some(Arc::clone(&rt));
    Ok(rt)
}

/// `provider` as `ort` registers it, with failure an error.
fn dispatch(provider: &Provider, threads: usize) -> ExecutionProviderDispatch {
    let d: ExecutionProviderDispatch = match provider {
        Provider::TensorRt { device, fp16, int8, engine_cache } => {
            let mut p = ep::TensorRT::default().with_device_id(*device).with_fp16(*fp16).with_int8(*int8);
            if let Some(dir) = engine_cache {
                let dir = dir.to_string_lossy();
                p = p
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.as_ref())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.as_ref());
            }
            p.build()
        }
        Provider::Cuda { device } => ep::CUDA::default().with_device_id(*device).build(),
        Provider::Acl { fast_math } => ep::ACL::default().with_fast_math(*fast_math).build(),
        Provider::Xnnpack { threads: x } => {
            let n = x.unwrap_or(threads).max(1);
            let mut p = ep::XNNPACK::default();
            if let Some(n) = std::num::NonZeroUsize::new(n) {
                p = p.with_intra_op_num_threads(n);
            }
            p.build()
        }
        Provider::Qnn { backend } => ep::QNN::default().with_backend_path(backend.to_string_lossy().as_ref()).build(),
        Provider::OpenVino { device, cache_dir } => {
            let mut p = ep::OpenVINO::default();
            if let Some(d) = device {
                p = p.with_device_type(d.as_str());
            }
            if let Some(c) = cache_dir {
                p = p.with_cache_dir(c.to_string_lossy().as_ref());
            }
            p.build()
        }
        Provider::Cpu => ep::CPU::default().with_arena_allocator(true).build(),
    };
    d.error_on_failure()
}

/// A session for `path` with the configured providers.
fn session(rt: &Runtime, settings: &OnnxRuntimeSettings, path: &Path) -> Result<Session, EngineError> {
    let general = |e: ort::Error<()>| failure(&rt.library, Some(&rt.version), None, format!("{}: {e}", path.display()));
    let built =
        |r: Result<SessionBuilder, ort::Error<SessionBuilder>>| r.map_err(|e| general(ort::Error::<()>::from(e)));
    let mut builder = Session::builder(&rt.environment).map_err(general)?;
    builder = built(builder.with_optimization_level(GraphOptimizationLevel::All))?;
    builder = built(builder.with_intra_threads(settings.threads))?;
    builder = built(builder.with_inter_threads(1))?;
    builder = built(builder.with_config_entry("session.record_ep_graph_assignment_info", "1"))?;
    // One registration per provider, so that a failure names it.
    for provider in &settings.providers {
        builder = builder.with_execution_providers([dispatch(provider, settings.threads)]).map_err(|e| {
            failure(
                &rt.library,
                Some(&rt.version),
                Some(provider.name()),
                format!("cannot register: {}", ort::Error::<()>::from(e)),
            )
        })?;
    }
    if !settings.providers.contains(&Provider::Cpu) {
        builder = built(builder.with_disable_cpu_fallback())?;
    }
    let providers: Vec<&str> = settings.providers.iter().map(Provider::name).collect();
    builder.commit_from_file(path).map_err(|e| {
        failure(
            &rt.library,
            Some(&rt.version),
            Some(&providers.join(", ")),
            format!("cannot set up {}: {e}", path.display()),
        )
    })
}

/// How many nodes each provider took, as ONNX Runtime placed them.
fn placement(session: &Session) -> Result<Vec<(String, usize)>, ort::Error> {
    let api = ort::api();
    let mut subgraphs: *const *const ort::sys::OrtEpAssignedSubgraph = std::ptr::null();
    let mut count = 0usize;
    // SAFETY: the session is live; ONNX Runtime owns the returned arrays for the session's life
    // and they are only read here, before the session can be dropped.
    unsafe {
        ort::Error::result_from_status((api.Session_GetEpGraphAssignmentInfo)(
            session.ptr(),
            &mut subgraphs,
            &mut count,
        ))?;
        let mut by_provider: Vec<(String, usize)> = Vec::new();
        for i in 0..count {
            let subgraph = *subgraphs.add(i);
            let mut name: *const std::ffi::c_char = std::ptr::null();
            ort::Error::result_from_status((api.EpAssignedSubgraph_GetEpName)(subgraph, &mut name))?;
            let mut nodes: *const *const ort::sys::OrtEpAssignedNode = std::ptr::null();
            let mut n = 0usize;
            ort::Error::result_from_status((api.EpAssignedSubgraph_GetNodes)(subgraph, &mut nodes, &mut n))?;
            let name = std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned();
            match by_provider.iter_mut().find(|(p, _)| *p == name) {
                Some((_, total)) => *total += n,
                None => by_provider.push((name, n)),
            }
        }
        Ok(by_provider)
    }
}

/// ONNX Runtime running one bundle model: its first session (checked against the manifest
/// at load) waits for the first worker; later workers get sessions of their own.
pub struct OnnxRuntimeEngine {
    runtime: Arc<Runtime>,
    settings: OnnxRuntimeSettings,
    path: PathBuf,
    variant: Variant,
    input_shape: [usize; 4],
    activation: Activation,
    labels: usize,
    placement: String,
    first: Mutex<Option<Session>>,
}

impl OnnxRuntimeEngine {
    /// Load ONNX Runtime (once per process), set `bundle`'s `variant` up on the configured
    /// providers and check it against the manifest.
    pub fn load(
        bundle: &Bundle,
        variant: Variant,
        settings: &OnnxRuntimeSettings,
    ) -> Result<OnnxRuntimeEngine, EngineError> {
        let path = bundle.model_path(variant, Int8Form::Qdq)?.to_path_buf();
        let library = settings.library.as_deref().ok_or_else(|| {
            failure(
                Path::new("(none)"),
                None,
                None,
                format!("no library named: expected `[onnxruntime] library = \"PATH\"` in the config, --ort-library, or ${}", super::settings::LIBRARY_ENV),
            )
        })?;
        let runtime = runtime(library)?;
        let session = session(&runtime, settings, &path)?;

        let inputs = session.inputs();
        let declared = inputs.first().map(|i| i.dtype());
        let (is_f32, dtype, dims) = match declared {
            Some(ValueType::Tensor { ty, shape, .. }) => (
                Some(*ty == TensorElementType::Float32),
                format!("{ty:?}"),
                Some(shape.iter().map(|&d| (d >= 0).then_some(d)).collect()),
            ),
            Some(other) => (Some(false), other.to_string(), None),
            None => (None, String::new(), None),
        };
        check_input(bundle, &path, &DeclaredInput { count: inputs.len(), is_f32, dtype, dims })?;
        let mismatch =
            |what: String| EngineError::Mismatch { path: path.clone(), manifest: bundle.manifest.path.clone(), what };
        let out_dims: Vec<usize> = match session.outputs().first().map(|o| o.dtype()) {
            Some(ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }) => {
                // A symbolic (batch) dimension runs as 1: vigil feeds one frame.
                shape.iter().map(|&d| if d < 0 { 1 } else { d as usize }).collect()
            }
            Some(other) => return Err(mismatch(format!("graph output is {other}: expected f32 scores"))),
            None => return Err(mismatch("graph has no output".into())),
        };
        let labels = check_output(bundle, &path, &out_dims)?;

        let placement = match placement(&session) {
            Ok(p) => p.iter().map(|(name, n)| format!("{name} took {n} node(s)")).collect::<Vec<_>>().join(", "),
            Err(e) => format!("placement unknown ({e})"),
        };
        log::info!("ONNX Runtime {}: {}: {placement}", runtime.version, path.display());
        Ok(OnnxRuntimeEngine {
            settings: settings.clone(),
            path,
            variant,
            input_shape: bundle.input.shape(),
            activation: bundle.activation,
            labels,
            placement,
            first: Mutex::new(Some(session)),
            runtime,
        })
    }

    /// The loaded library's version, e.g. `1.32.0`.
    pub fn version(&self) -> &str {
        &self.runtime.version
    }

    /// Which provider took how many of the model's nodes, e.g. `CPUExecutionProvider took 65 node(s)`.
    pub fn placement(&self) -> &str {
        &self.placement
    }
}

impl InferenceEngine for OnnxRuntimeEngine {
    fn new_worker(&self) -> Result<Box<dyn InferenceWorker>, EngineError> {
        let first = self.first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let session = match first {
            Some(s) => s,
            None => session(&self.runtime, &self.settings, &self.path)?,
        };
        let shape: Vec<i64> = self.input_shape.iter().map(|&d| d as i64).collect();
        let input = Tensor::<f32>::from_array((shape, vec![0f32; self.input_shape.iter().product()]))
            .map_err(|e| EngineError::Run(format!("ONNX Runtime input tensor: {e}")))?;
        Ok(Box::new(OnnxRuntimeWorker { session, input, activation: self.activation, labels: self.labels }))
    }

    fn new_input(&self) -> Result<InputTensor, EngineError> {
        InputTensor::zeros(&self.input_shape)
    }

    fn describe(&self) -> String {
        let providers: Vec<&str> = self.settings.providers.iter().map(Provider::name).collect();
        format!(
            "onnxruntime {} ({}) {} model {} (input {}, {} scores), providers [{}]: {}",
            self.runtime.version,
            self.runtime.library.display(),
            self.variant,
            self.path.display(),
            shape_text(self.input_shape),
            self.labels,
            providers.join(", "),
            self.placement
        )
    }
}

/// One ONNX Runtime session, run one frame at a time.
struct OnnxRuntimeWorker {
    session: Session,
    input: Tensor<f32>,
    activation: Activation,
    labels: usize,
}

impl InferenceWorker for OnnxRuntimeWorker {
    fn infer(&mut self, input: &mut InputTensor, scores: &mut [f32]) -> Result<(), EngineError> {
        let run = |e: ort::Error| EngineError::Run(format!("ONNX Runtime: {e}"));
        let (_, buffer) = self.input.extract_tensor_mut();
        let frame = input.as_slice();
        if buffer.len() != frame.len() {
            return Err(EngineError::Run(format!(
                "input has {} values, the model takes {}",
                frame.len(),
                buffer.len()
            )));
        }
        buffer.copy_from_slice(frame);
        let outputs = self.session.run(ort::inputs![&self.input]).map_err(run)?;
        let (_, out) = outputs[0].try_extract_tensor::<f32>().map_err(run)?;
        if out.len() != self.labels || scores.len() != self.labels {
            return Err(EngineError::Run(format!("expected {} scores, got {}", self.labels, out.len())));
        }
        scores.copy_from_slice(out);
        apply_activation(self.activation, scores);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_to_their_minor_number() {
        assert_eq!(minor_version("1.32.0"), Some(32));
        assert_eq!(minor_version("1.20.1"), Some(20));
        assert_eq!(minor_version("2.0.0"), None);
        assert_eq!(minor_version("garbage"), None);
    }

    #[test]
    fn truncated_foreign_and_non_elf_files_are_refused_before_the_loader_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let whole = dir.path().join("whole");
        std::fs::write(&whole, &me).unwrap();
        assert_eq!(check_elf(&whole), Ok(()));
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &me[..me.len() / 2]).unwrap();
        assert!(check_elf(&cut).unwrap_err().contains("truncated"));
        let mut foreign = me.clone();
        foreign[18] ^= 0x01;
        std::fs::write(&cut, &foreign).unwrap();
        assert!(check_elf(&cut).unwrap_err().contains("another CPU"));
        std::fs::write(&cut, b"not a library").unwrap();
        assert!(check_elf(&cut).unwrap_err().contains("not an ELF"));
    }

    #[test]
    fn a_missing_library_is_named_in_the_error() {
        let e = runtime(Path::new("/nonexistent/libonnxruntime.so.1.32.0")).err().expect("refused");
        let text = e.to_string();
        assert!(text.contains("/nonexistent/libonnxruntime.so.1.32.0") && text.contains("cannot be read"), "{text}");
    }
}
