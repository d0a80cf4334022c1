//! The tract engine: pure Rust, always built.
//!
//! The model is loaded, checked against its manifest and optimised once; the
//! optimised plan is shared (`Arc`) by any number of [`TractWorker`]s, each
//! of which owns its own tract state and runs one frame at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::{
    DeclaredInput, EngineError, InferenceEngine, InferenceWorker, InputTensor, apply_activation, check_input,
    check_output, shape_text,
};
use crate::bundle::{Activation, Bundle, Int8Form, Variant};

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

impl TractEngine {
    /// Load `bundle`'s `variant`, check it against the manifest, optimise it.
    pub fn load(bundle: &Bundle, variant: Variant) -> Result<TractEngine, EngineError> {
        let path = bundle.model_path(variant, Int8Form::QOperator)?.to_path_buf();
        Self::load_file(bundle, &path, variant)
    }

    fn load_file(bundle: &Bundle, path: &Path, variant: Variant) -> Result<TractEngine, EngineError> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| EngineError::NotOnnx { path: path.to_path_buf(), reason: format!("{e:#}") })?;
        if model.outputs.is_empty() {
            return Err(EngineError::Mismatch {
                path: path.to_path_buf(),
                manifest: bundle.manifest.path.clone(),
                what: "graph has no output".into(),
            });
        }
        let prepare = |e: TractError| EngineError::Prepare { path: path.to_path_buf(), reason: format!("{e:#}") };
        let declared = if model.inputs.len() == 1 { Some(model.input_fact(0).map_err(prepare)?.clone()) } else { None };
        check_input(
            bundle,
            path,
            &DeclaredInput {
                count: model.inputs.len(),
                is_f32: declared.as_ref().and_then(|d| d.datum_type.concretize()).map(|dt| dt == f32::datum_type()),
                dtype: declared
                    .as_ref()
                    .and_then(|d| d.datum_type.concretize())
                    .map(|dt| format!("{dt:?}"))
                    .unwrap_or_default(),
                dims: declared
                    .as_ref()
                    .and_then(|d| d.shape.concretize())
                    .map(|dims| dims.iter().map(|d| d.as_i64()).collect()),
            },
        )?;
        let expected = bundle.input.shape();
        let optimized =
            model.with_input_fact(0, f32::fact(expected).into()).and_then(|m| m.into_optimized()).map_err(prepare)?;
        let out_fact = optimized.output_fact(0).map_err(prepare)?;
        let out_dims: Vec<usize> = match out_fact.shape.as_concrete() {
            Some(d) => d.to_vec(),
            None => {
                return Err(EngineError::Mismatch {
                    path: path.to_path_buf(),
                    manifest: bundle.manifest.path.clone(),
                    what: format!("graph output shape {:?} is not fixed", out_fact.shape),
                });
            }
        };
        let scores = check_output(bundle, path, &out_dims)?;
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
