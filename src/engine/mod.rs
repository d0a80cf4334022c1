//! The engine stage: runs the bundle's ONNX model.
//!
//! Two engines implement [`InferenceEngine`]: [`TractEngine`] (pure Rust, always built) and,
//! with the cargo feature `npu`, [`OnnxRuntimeEngine`] (ONNX Runtime loaded at start from a
//! library path, with execution providers for accelerators). Either loads the model once,
//! checks it against its manifest and hands out [`InferenceWorker`]s, each of which owns its
//! own run state and runs one frame at a time. Several single-threaded workers on separate
//! frames use a board's cores better than one engine's multithreaded kernels.
//!
//! [`load`] is the one place that picks the engine from an [`EngineChoice`] and applies its
//! fallback; the daemon, `check`, `classify`, `eval`, `calibrate` and `bench` all go through it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::bundle::{Activation, Bundle, Layout, Variant};
use crate::tomlfile::SettingsError;

#[cfg(feature = "npu")]
mod onnxruntime;
mod settings;
mod tract;

#[cfg(feature = "npu")]
pub use self::onnxruntime::OnnxRuntimeEngine;
pub use self::settings::{EngineChoice, EngineKind, Fallback, OnnxRuntimeSection, OnnxRuntimeSettings, Provider};
pub use self::tract::{NodeSummary, TractEngine, TractWorker};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The manifest names no model for the asked variant (e.g. no `model_int8`).
    #[error(transparent)]
    Manifest(#[from] SettingsError),
    /// The file is not an ONNX model tract can read.
    #[error("{path}: not a loadable ONNX model: {reason}")]
    NotOnnx {
        /// The model file.
        path: PathBuf,
        /// tract's explanation.
        reason: String,
    },
    /// The graph disagrees with its manifest.
    #[error("{path}: the model does not match its manifest {manifest}: {what}")]
    Mismatch {
        /// The model file.
        path: PathBuf,
        /// The manifest file.
        manifest: PathBuf,
        /// Both values, manifest's and graph's.
        what: String,
    },
    /// tract could not type or optimise the graph.
    #[error("{path}: tract cannot prepare this model: {reason}")]
    Prepare {
        /// The model file.
        path: PathBuf,
        /// tract's explanation.
        reason: String,
    },
    /// ONNX Runtime could not be loaded, or could not set the model up as configured.
    #[error("ONNX Runtime library `{}`{}{}: {reason}", library.display(),
        version.as_ref().map(|v| format!(" (version {v})")).unwrap_or_default(),
        provider.as_ref().map(|p| format!(", provider `{p}`")).unwrap_or_default())]
    OnnxRuntime {
        /// The library file that was asked for.
        library: PathBuf,
        /// Its version, once known.
        version: Option<String>,
        /// The execution provider concerned, if one.
        provider: Option<String>,
        /// What went wrong and what was expected.
        reason: String,
    },
    /// The engine asked for is not in this build.
    #[error("{0}")]
    NotBuilt(String),
    /// Running one frame failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// A loaded model that hands out workers and input tensors.
pub trait InferenceEngine: Send + Sync {
    /// A new worker with its own run state.
    fn new_worker(&self) -> Result<Box<dyn InferenceWorker>, EngineError>;
    /// A new input tensor of the model's shape. Tensors are pooled by the
    /// pipeline: the preprocessor fills one, a worker runs it, it comes back.
    fn new_input(&self) -> Result<InputTensor, EngineError>;
    /// One line for logs: model file, variant, input and output shapes.
    fn describe(&self) -> String;
}

/// Runs one frame at a time.
pub trait InferenceWorker: Send {
    /// Run the model on `input` and write one score per label (after the
    /// manifest's activation) into `scores`.
    fn infer(&mut self, input: &mut InputTensor, scores: &mut [f32]) -> Result<(), EngineError>;
}

/// A model input: f32 elements in the manifest's shape and layout.
///
/// Kept in an `Arc` that tract borrows only for the length of a run, so it is
/// exclusively ours again afterwards: filling it never allocates.
#[derive(Debug, Clone)]
pub struct InputTensor(Arc<Tensor>);

impl InputTensor {
    /// A zeroed tensor of `shape`.
    pub fn zeros(shape: &[usize]) -> Result<InputTensor, EngineError> {
        Tensor::zero::<f32>(shape).map(|t| InputTensor(Arc::new(t))).map_err(|e| EngineError::Run(format!("{e:#}")))
    }

    /// The elements, to be filled by the preprocessor.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // tract keeps no reference after a run (0.23); if it ever did, copy rather than fail.
        let tensor = Arc::make_mut(&mut self.0);
        tensor
            .to_plain_array_view_mut::<f32>()
            .expect("input tensor is f32")
            .into_slice()
            .expect("input tensor is contiguous")
    }

    /// The elements.
    pub fn as_slice(&self) -> &[f32] {
        self.0.try_as_plain_ram().and_then(|v| v.as_slice::<f32>()).expect("input tensor is plain f32")
    }
}

/// Dimensions as `[a, b, c]`, for messages.
pub(crate) fn shape_text<T: std::fmt::Display>(dims: impl IntoIterator<Item = T>) -> String {
    let dims: Vec<String> = dims.into_iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// What a graph declares about its input, in engine-neutral terms, for [`check_input`].
pub(crate) struct DeclaredInput {
    /// How many inputs the graph has.
    pub count: usize,
    /// Whether the first input is f32, when the graph says.
    pub is_f32: Option<bool>,
    /// The first input's element type, for the message.
    pub dtype: String,
    /// Its dimensions, when the graph gives a rank: `None` for a symbolic one (a batch `N`).
    pub dims: Option<Vec<Option<i64>>>,
}

/// The manifest's input against the graph's, the same check for every engine.
pub(crate) fn check_input(bundle: &Bundle, path: &Path, declared: &DeclaredInput) -> Result<(), EngineError> {
    let mismatch =
        |what: String| EngineError::Mismatch { path: path.to_path_buf(), manifest: bundle.manifest.path.clone(), what };
    if declared.count != 1 {
        return Err(mismatch(format!("manifest describes 1 input, graph has {}", declared.count)));
    }
    if declared.is_f32 == Some(false) {
        return Err(mismatch(format!("manifest input dtype is f32, graph input is {}", declared.dtype)));
    }
    let expected = bundle.input.shape();
    if let Some(dims) = &declared.dims {
        let agrees = dims.len() == 4 && dims.iter().zip(expected).all(|(d, e)| d.is_none_or(|d| d == e as i64));
        if !agrees {
            let layout = match bundle.input.layout {
                Layout::Nchw => "nchw",
                Layout::Nhwc => "nhwc",
            };
            return Err(mismatch(format!(
                "manifest input is {} ({layout}, {}x{}, {} channel(s)), graph input is {}",
                shape_text(expected),
                bundle.input.width,
                bundle.input.height,
                bundle.input.channels.count(),
                shape_text(dims.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())))
            )));
        }
    }
    Ok(())
}

/// The graph's first output against the manifest's labels: one score per label, in one
/// non-unit dimension. Returns the number of scores.
pub(crate) fn check_output(bundle: &Bundle, path: &Path, out_dims: &[usize]) -> Result<usize, EngineError> {
    let scores: usize = out_dims.iter().product();
    let non_unit = out_dims.iter().filter(|&&d| d != 1).count();
    if scores != bundle.labels.len() || non_unit > 1 {
        return Err(EngineError::Mismatch {
            path: path.to_path_buf(),
            manifest: bundle.manifest.path.clone(),
            what: format!(
                "manifest lists {} labels, graph output is {} = {scores} scores",
                bundle.labels.len(),
                shape_text(out_dims)
            ),
        });
    }
    Ok(scores)
}

/// A loaded engine, and why it is not the one asked for when a fallback was taken.
pub struct LoadedEngine {
    /// The engine that runs.
    pub engine: Arc<dyn InferenceEngine>,
    /// Which engine this is.
    pub kind: EngineKind,
    /// The error of the engine asked for, when `fallback = "tract"` replaced it.
    pub fell_back: Option<EngineError>,
}

/// Load `bundle`'s `variant` on the engine `choice` names. With ONNX Runtime and
/// `fallback = "tract"`, a library or provider that fails is logged and tract runs instead;
/// with `fallback = "fail"` (the default) the error is returned.
pub fn load(bundle: &Bundle, variant: Variant, choice: &EngineChoice) -> Result<LoadedEngine, EngineError> {
    let tract = || -> Result<LoadedEngine, EngineError> {
        Ok(LoadedEngine {
            engine: Arc::new(TractEngine::load(bundle, variant)?),
            kind: EngineKind::Tract,
            fell_back: None,
        })
    };
    match choice {
        EngineChoice::Tract => tract(),
        EngineChoice::OnnxRuntime(settings) => match load_onnxruntime(bundle, variant, settings) {
            Ok(engine) => Ok(LoadedEngine { engine, kind: EngineKind::OnnxRuntime, fell_back: None }),
            // A model that does not match its manifest is the bundle's fault: tract would refuse it too.
            Err(e @ (EngineError::Manifest(_) | EngineError::Mismatch { .. })) => Err(e),
            Err(e) if settings.fallback == Fallback::Tract => {
                log::warn!("{e}; running tract instead, as [onnxruntime] fallback = \"tract\" says");
                let mut loaded = tract()?;
                loaded.fell_back = Some(e);
                Ok(loaded)
            }
            Err(e) => Err(e),
        },
    }
}

#[cfg(feature = "npu")]
fn load_onnxruntime(
    bundle: &Bundle,
    variant: Variant,
    settings: &OnnxRuntimeSettings,
) -> Result<Arc<dyn InferenceEngine>, EngineError> {
    Ok(Arc::new(OnnxRuntimeEngine::load(bundle, variant, settings)?))
}

#[cfg(not(feature = "npu"))]
fn load_onnxruntime(
    _bundle: &Bundle,
    _variant: Variant,
    _settings: &OnnxRuntimeSettings,
) -> Result<Arc<dyn InferenceEngine>, EngineError> {
    Err(EngineError::NotBuilt(settings::NOT_BUILT.into()))
}

/// Turn raw outputs into scores in place.
pub fn apply_activation(activation: Activation, scores: &mut [f32]) {
    match activation {
        Activation::None => {}
        Activation::Sigmoid => {
            for s in scores.iter_mut() {
                *s = 1.0 / (1.0 + (-*s).exp());
            }
        }
        Activation::Softmax => {
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += f64::from(*s);
            }
            let inv = (1.0 / sum) as f32;
            for s in scores.iter_mut() {
                *s *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut s = [1.0, 2.0, 3.0];
        apply_activation(Activation::Softmax, &mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(s[0] < s[1] && s[1] < s[2]);
        assert!((s[2] - 0.665_240_9).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_is_per_label() {
        let mut s = [0.0, 100.0, -100.0];
        apply_activation(Activation::Sigmoid, &mut s);
        assert_eq!(s[0], 0.5);
        assert!(s[1] > 0.999 && s[2] < 0.001);
    }
}
