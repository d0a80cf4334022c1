//! The engine stage: runs the bundle's ONNX model with tract.
//!
//! The model is loaded, checked against its manifest and optimised once; the
//! optimised plan is shared (`Arc`) by any number of [`InferenceWorker`]s, each
//! of which owns its own tract state and input tensor and runs one frame at a
//! time. Several single-threaded workers on separate frames use a board's
//! cores better than tract's own multithreaded matmul.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::bundle::{Activation, Bundle, Layout, Variant};
use crate::tomlfile::SettingsError;

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

/// One node of an optimised tract graph.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeSummary {
    /// Node name (from the ONNX graph, with tract's suffixes).
    pub name: String,
    /// tract op name, e.g. `OptMatMul`, `Im2col`, `ConvHir`.
    pub op: String,
    /// Element type of the node's first output, e.g. `F32`, `I32`, `U8`.
    pub output_type: String,
    /// Element types of its inputs.
    pub input_types: Vec<String>,
}

/// The tract engine: one optimised plan shared by all workers.
pub struct TractEngine {
    plan: Arc<TypedRunnableModel>,
    input_shape: [usize; 4],
    activation: Activation,
    labels: usize,
    path: PathBuf,
    variant: Variant,
}

fn shape_text<T: std::fmt::Display>(dims: impl IntoIterator<Item = T>) -> String {
    let dims: Vec<String> = dims.into_iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

impl TractEngine {
    /// Load `bundle`'s `variant`, check it against the manifest, optimise it.
    pub fn load(bundle: &Bundle, variant: Variant) -> Result<TractEngine, EngineError> {
        let path = bundle.model_path(variant)?.to_path_buf();
        Self::load_file(bundle, &path, variant)
    }

    fn load_file(bundle: &Bundle, path: &Path, variant: Variant) -> Result<TractEngine, EngineError> {
        let mismatch = |what: String| EngineError::Mismatch {
            path: path.to_path_buf(),
            manifest: bundle.manifest.path.clone(),
            what,
        };
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| EngineError::NotOnnx { path: path.to_path_buf(), reason: format!("{e:#}") })?;
        if model.inputs.len() != 1 {
            return Err(mismatch(format!("manifest describes 1 input, graph has {}", model.inputs.len())));
        }
        if model.outputs.is_empty() {
            return Err(mismatch("graph has no output".into()));
        }
        let expected = bundle.input.shape();
        let layout = match bundle.input.layout {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
        };
        let declared = model
            .input_fact(0)
            .map_err(|e| EngineError::Prepare { path: path.to_path_buf(), reason: format!("{e:#}") })?
            .clone();
        if let Some(dt) = declared.datum_type.concretize()
            && dt != f32::datum_type()
        {
            return Err(mismatch(format!("manifest input dtype is f32, graph input is {dt:?}")));
        }
        if let Some(dims) = declared.shape.concretize() {
            let agrees =
                dims.len() == 4 && dims.iter().zip(expected).all(|(d, e)| d.as_i64().is_none_or(|d| d == e as i64));
            if !agrees {
                return Err(mismatch(format!(
                    "manifest input is {} ({layout}, {}x{}, {} channel(s)), graph input is {}",
                    shape_text(expected),
                    bundle.input.width,
                    bundle.input.height,
                    bundle.input.channels.count(),
                    shape_text(dims.iter())
                )));
            }
        }
        let prepare = |e: TractError| EngineError::Prepare { path: path.to_path_buf(), reason: format!("{e:#}") };
        let optimized =
            model.with_input_fact(0, f32::fact(expected).into()).and_then(|m| m.into_optimized()).map_err(prepare)?;
        let out_fact = optimized.output_fact(0).map_err(prepare)?;
        let out_dims: Vec<usize> = match out_fact.shape.as_concrete() {
            Some(d) => d.to_vec(),
            None => {
                return Err(mismatch(format!("graph output shape {:?} is not fixed", out_fact.shape)));
            }
        };
        let scores: usize = out_dims.iter().product();
        let non_unit = out_dims.iter().filter(|&&d| d != 1).count();
        if scores != bundle.labels.len() || non_unit > 1 {
            return Err(mismatch(format!(
                "manifest lists {} labels, graph output is {} = {scores} scores",
                bundle.labels.len(),
                shape_text(&out_dims)
            )));
        }
        let plan = optimized.into_runnable().map_err(prepare)?;
        Ok(TractEngine {
            plan,
            input_shape: expected,
            activation: bundle.activation,
            labels: scores,
            path: path.to_path_buf(),
            variant,
        })
    }

    /// The optimised graph, node by node in evaluation order: op name and the
    /// element type of its first output. Used by `vigil inspect` and to prove an
    /// INT8 model runs on integer kernels (integer matmuls, not float ones).
    pub fn optimized_nodes(&self) -> Vec<NodeSummary> {
        let model = self.plan.model();
        model
            .eval_order()
            .unwrap_or_default()
            .into_iter()
            .map(|id| {
                let node = &model.nodes()[id];
                NodeSummary {
                    name: node.name.clone(),
                    op: node.op().name().to_string(),
                    output_type: node.outputs.first().map(|o| format!("{:?}", o.fact.datum_type)).unwrap_or_default(),
                    input_types: node
                        .inputs
                        .iter()
                        .map(|i| {
                            format!("{:?}", model.outlet_fact(*i).map(|f| f.datum_type).unwrap_or(DatumType::Bool))
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// A worker with the concrete type (for benchmarks that avoid dynamic dispatch).
    pub fn tract_worker(&self) -> Result<TractWorker, EngineError> {
        let state = self.plan.spawn().map_err(|e| EngineError::Run(format!("{e:#}")))?;
        Ok(TractWorker { state, activation: self.activation, labels: self.labels })
    }
}

impl InferenceEngine for TractEngine {
    fn new_worker(&self) -> Result<Box<dyn InferenceWorker>, EngineError> {
        Ok(Box::new(self.tract_worker()?))
    }

    fn new_input(&self) -> Result<InputTensor, EngineError> {
        InputTensor::zeros(&self.input_shape)
    }

    fn describe(&self) -> String {
        format!(
            "tract {} model {} (input {}, {} scores)",
            self.variant,
            self.path.display(),
            shape_text(self.input_shape),
            self.labels
        )
    }
}

/// A tract worker: its own state over the shared plan.
pub struct TractWorker {
    state: TypedSimpleState,
    activation: Activation,
    labels: usize,
}

impl InferenceWorker for TractWorker {
    fn infer(&mut self, input: &mut InputTensor, scores: &mut [f32]) -> Result<(), EngineError> {
        let outputs = self
            .state
            .run(tvec![TValue::from_const(Arc::clone(&input.0))])
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        let out = outputs[0].to_plain_array_view::<f32>().map_err(|e| EngineError::Run(format!("{e:#}")))?;
        if out.len() != self.labels || scores.len() != self.labels {
            return Err(EngineError::Run(format!("expected {} scores, got {}", self.labels, out.len())));
        }
        for (s, &v) in scores.iter_mut().zip(out.iter()) {
            *s = v;
        }
        apply_activation(self.activation, scores);
        Ok(())
    }
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
