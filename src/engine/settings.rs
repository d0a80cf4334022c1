//! Which engine runs the model: `[model] engine` and the `[onnxruntime]` section of a run
//! config, and the same choice made from the command line (`--engine`).
//!
//! Both are parsed in every build, so that a config is checked the same way everywhere; a
//! build without the `npu` feature refuses `engine = "onnxruntime"` with a message saying so.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::tomlfile::{SettingsError, TomlFile};

/// What a build without the `npu` feature says when ONNX Runtime is asked for.
pub(crate) const NOT_BUILT: &str = "this vigil was built without ONNX Runtime: `engine = \"onnxruntime\"` needs a build \
     with `cargo build --release --features npu`; expected `engine = \"tract\"` here";

/// Environment variable naming the ONNX Runtime library when the config does not.
pub const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// Most intra-op threads a config may give ONNX Runtime.
const MAX_THREADS: usize = 64;

/// `[model] engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// tract: pure Rust, in every build (the default).
    #[default]
    Tract,
    /// ONNX Runtime, loaded at start from a library (cargo feature `npu`).
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Tract => "tract",
            EngineKind::OnnxRuntime => "onnxruntime",
        })
    }
}

/// What to do when ONNX Runtime cannot be loaded or a provider cannot take the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Refuse to start (exit 2), naming the library and the provider (the default).
    #[default]
    Fail,
    /// Log the reason and run the model on tract.
    Tract,
}

/// One ONNX Runtime execution provider and its options, in `[onnxruntime] providers`.
/// Providers are tried in the order listed; each must register, or loading fails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Provider {
    /// NVIDIA TensorRT (Jetson, dGPU).
    #[serde(rename = "tensorrt")]
    TensorRt {
        /// GPU index (default 0).
        #[serde(default)]
        device: i32,
        /// Let TensorRT build FP16 kernels.
        #[serde(default)]
        fp16: bool,
        /// Let TensorRT build INT8 kernels.
        #[serde(default)]
        int8: bool,
        /// Directory where built engines are cached, so a restart does not rebuild them (minutes on a Jetson).
        #[serde(default)]
        engine_cache: Option<PathBuf>,
    },
    /// NVIDIA CUDA.
    Cuda {
        /// GPU index (default 0).
        #[serde(default)]
        device: i32,
    },
    /// Arm Compute Library (Arm CPUs and Mali GPUs).
    Acl {
        /// Allow ACL's faster, less exact kernels.
        #[serde(default)]
        fast_math: bool,
    },
    /// XNNPACK (Arm and x86 CPUs).
    Xnnpack {
        /// XNNPACK's own threads (default: ONNX Runtime's choice).
        #[serde(default)]
        threads: Option<usize>,
    },
    /// Qualcomm QNN (Hexagon NPU).
    Qnn {
        /// The QNN backend library, e.g. `libQnnHtp.so`.
        backend: PathBuf,
    },
    /// Intel OpenVINO.
    #[serde(rename = "openvino")]
    OpenVino {
        /// `CPU`, `GPU` or `NPU` (default: OpenVINO's choice).
        #[serde(default)]
        device: Option<String>,
        /// Directory for OpenVINO's compiled-model cache.
        #[serde(default)]
        cache_dir: Option<PathBuf>,
    },
    /// ONNX Runtime's own CPU kernels. Listing it lets nodes the providers before it cannot
    /// run fall back to the CPU; leaving it out makes such a model an error.
    Cpu,
}

impl Provider {
    /// The name used in config files and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::TensorRt { .. } => "tensorrt",
            Provider::Cuda { .. } => "cuda",
            Provider::Acl { .. } => "acl",
            Provider::Xnnpack { .. } => "xnnpack",
            Provider::Qnn { .. } => "qnn",
            Provider::OpenVino { .. } => "openvino",
            Provider::Cpu => "cpu",
        }
    }

    /// Parse a provider given by name on the command line, its options at their defaults: the
    /// same parse as a config's `{ kind = "NAME" }`, so names and defaults live in one place.
    pub fn from_name(name: &str) -> Result<Provider, String> {
        let mut table = toml::Table::new();
        table.insert("kind".into(), toml::Value::String(name.into()));
        Provider::deserialize(table).map_err(|e| format!("provider `{name}`: {}", e.message()))
    }
}

/// `[onnxruntime]`, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeSection {
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.x.y`); default: `$ORT_DYLIB_PATH`.
    #[serde(default)]
    pub library: Option<Spanned<String>>,
    /// Execution providers in order of preference (default: `[{ kind = "cpu" }]`).
    #[serde(default)]
    pub providers: Option<Spanned<Vec<Provider>>>,
    /// Intra-op threads per worker (default 1: vigil runs one worker per core instead).
    #[serde(default)]
    pub threads: Option<Spanned<usize>>,
    /// `fail` (default) or `tract`.
    #[serde(default)]
    pub fallback: Fallback,
}

/// ONNX Runtime, ready to load: the library path resolved, the providers checked.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxRuntimeSettings {
    /// The library file; `None` when neither the config nor `$ORT_DYLIB_PATH` names one
    /// (loading then fails with a message saying how to name it).
    pub library: Option<PathBuf>,
    /// Providers in order; never empty.
    pub providers: Vec<Provider>,
    /// Intra-op threads per worker.
    pub threads: usize,
    /// What to do when it cannot load.
    pub fallback: Fallback,
}

impl OnnxRuntimeSettings {
    /// ONNX Runtime on its CPU provider, one thread, library from `$ORT_DYLIB_PATH` unless given.
    pub fn cpu(library: Option<PathBuf>) -> OnnxRuntimeSettings {
        OnnxRuntimeSettings {
            library: library.or_else(library_from_env),
            providers: vec![Provider::Cpu],
            threads: 1,
            fallback: Fallback::Fail,
        }
    }
}

fn library_from_env() -> Option<PathBuf> {
    std::env::var_os(LIBRARY_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Which engine to load, and its settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum EngineChoice {
    /// tract.
    #[default]
    Tract,
    /// ONNX Runtime.
    OnnxRuntime(OnnxRuntimeSettings),
}

impl EngineChoice {
    /// The choice a run config makes: `[model] engine` (its span, for messages) and the
    /// `[onnxruntime]` section, checked against each other.
    pub fn from_config(
        file: &TomlFile,
        engine: Option<&Spanned<EngineKind>>,
        section: Option<&OnnxRuntimeSection>,
    ) -> Result<EngineChoice, SettingsError> {
        let kind = engine.map(|e| *e.get_ref()).unwrap_or_default();
        match (kind, section) {
            (EngineKind::Tract, None) => Ok(EngineChoice::Tract),
            (EngineKind::Tract, Some(_)) => Err(file.error(
                Some("onnxruntime".into()),
                "an [onnxruntime] section, but `[model] engine` is tract: expected `engine = \"onnxruntime\"` in [model], or no [onnxruntime] section",
            )),
            // Without `npu`, a config that may fall back (a board profile meant for both builds)
            // runs tract with a warning at load; one that may not is refused here, at its line.
            (EngineKind::OnnxRuntime, s)
                if !cfg!(feature = "npu") && s.is_none_or(|s| s.fallback == Fallback::Fail) =>
            {
                let span = engine.map(|e| e.span()).unwrap_or(0..0);
                Err(file.error_at(span, "model.engine", NOT_BUILT))
            }
            (EngineKind::OnnxRuntime, section) => {
                let default = OnnxRuntimeSection::default();
                let s = section.unwrap_or(&default);
                let library = s.library.as_ref().map(|l| file.resolve(l.get_ref())).or_else(library_from_env);
                let providers = match &s.providers {
                    Some(p) if p.get_ref().is_empty() => {
                        return Err(file.error_at(
                            p.span(),
                            "onnxruntime.providers",
                            "no providers: expected at least one, e.g. [{ kind = \"cpu\" }]",
                        ));
                    }
                    Some(p) => {
                        let list = p.get_ref();
                        for (i, provider) in list.iter().enumerate() {
                            if list[..i].iter().any(|q| q.name() == provider.name()) {
                                return Err(file.error_at(
                                    p.span(),
                                    "onnxruntime.providers",
                                    format!("provider `{}` listed twice: expected each at most once", provider.name()),
                                ));
                            }
                        }
                        list.clone()
                    }
                    None => vec![Provider::Cpu],
                };
                let threads = match &s.threads {
                    Some(t) if !(1..=MAX_THREADS).contains(t.get_ref()) => {
                        return Err(file.error_at(
                            t.span(),
                            "onnxruntime.threads",
                            format!("{} threads: expected 1 to {MAX_THREADS}", t.get_ref()),
                        ));
                    }
                    Some(t) => *t.get_ref(),
                    None => 1,
                };
                Ok(EngineChoice::OnnxRuntime(OnnxRuntimeSettings { library, providers, threads, fallback: s.fallback }))
            }
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match self {
            EngineChoice::Tract => EngineKind::Tract,
            EngineChoice::OnnxRuntime(_) => EngineKind::OnnxRuntime,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_provider_names_parse_as_configs_do() {
        assert_eq!(Provider::from_name("cpu"), Ok(Provider::Cpu));
        assert_eq!(Provider::from_name("cuda"), Ok(Provider::Cuda { device: 0 }));
        let unknown = Provider::from_name("npu9000").unwrap_err();
        assert!(unknown.contains("unknown variant `npu9000`") && unknown.contains("tensorrt"), "{unknown}");
        let qnn = Provider::from_name("qnn").unwrap_err();
        assert!(qnn.contains("missing field `backend`"), "{qnn}");
    }
}
