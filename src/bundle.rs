//! Model bundles: a directory holding an ONNX model (fp32, optionally an INT8
//! form) and its manifest `model.toml` (labels, input spec, output activation,
//! default thresholds, provenance). The engine checks the manifest against the
//! graph when it loads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::thresholds::ThresholdsSpec;
use crate::tomlfile::{SettingsError, TomlFile};
use crate::util::file::{MAX_TEXT_BYTES, check_regular, kind_name, read_regular_vec};

/// Name of the manifest inside a bundle directory.
pub const MANIFEST: &str = "model.toml";

/// Colour channels the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    /// Three channels, R G B.
    Rgb,
    /// One luma channel (BT.601 weights from colour sources).
    Grey,
}

impl Channels {
    /// Number of channels.
    pub fn count(self) -> usize {
        match self {
            Channels::Rgb => 3,
            Channels::Grey => 1,
        }
    }
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, C, H, W]` (PyTorch, most ONNX exports).
    Nchw,
    /// `[1, H, W, C]` (TensorFlow exports).
    Nhwc,
}

/// Element type of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float; the INT8 models vigil ships quantise inside the graph and also take f32.
    F32,
}

/// What turns the graph's raw outputs into per-label scores in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Independent per-label sigmoid: multi-label models.
    Sigmoid,
    /// Softmax across labels: single-label (one-of-N) models.
    Softmax,
    /// The graph already outputs probabilities.
    None,
}

/// The model's input, as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB or grey.
    pub channels: Channels,
    /// NCHW or NHWC.
    pub layout: Layout,
    /// Element type.
    pub dtype: DType,
    /// Pixel multiplier before mean/std: `value = (pixel * scale - mean) / std`.
    #[serde(default = "default_scale")]
    pub scale: f32,
    /// Per-channel mean (one value, or one per channel).
    #[serde(default)]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation (one value, or one per channel).
    #[serde(default)]
    pub std: Vec<f32>,
}

fn default_scale() -> f32 {
    1.0 / 255.0
}

impl InputSpec {
    /// The tensor shape the model takes, batch 1.
    pub fn shape(&self) -> [usize; 4] {
        let (c, h, w) = (self.channels.count(), self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [1, c, h, w],
            Layout::Nhwc => [1, h, w, c],
        }
    }

    /// Number of elements in the input tensor.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the tensor is empty (never, for a validated spec).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mean of channel `c` (a single value applies to all channels).
    pub fn mean_of(&self, c: usize) -> f32 {
        pick(&self.mean, c, 0.0)
    }

    /// Standard deviation of channel `c`.
    pub fn std_of(&self, c: usize) -> f32 {
        pick(&self.std, c, 1.0)
    }
}

fn pick(values: &[f32], c: usize, default: f32) -> f32 {
    match values.len() {
        0 => default,
        1 => values[0],
        _ => values[c],
    }
}

/// The `[output]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Activation applied to the graph's output.
    pub activation: Activation,
}

/// Where the model comes from and under which terms it may be used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Origin of the weights and how they were exported.
    pub source: String,
    /// Licence of the weights (and data, where it binds the model).
    pub licence: String,
}

/// `model.toml`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    #[serde(default)]
    description: String,
    model: Spanned<String>,
    model_int8: Option<Spanned<String>>,
    model_int8_qdq: Option<Spanned<String>>,
    labels: Option<Vec<String>>,
    labels_file: Option<Spanned<String>>,
    input: InputSpec,
    output: OutputSpec,
    #[serde(default)]
    thresholds: ThresholdsSpec,
    provenance: Provenance,
}

/// Which of a bundle's model files to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The float model (`model`).
    Fp32,
    /// The quantised model: `model_int8` on tract, `model_int8_qdq` (else `model_int8`) on
    /// ONNX Runtime.
    Int8,
}

/// The two ways an INT8 ONNX graph is written. The same fp32 graph quantised either way scores
/// nearly the same, but each engine is fast on only one of them, so a bundle may carry both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Form {
    /// Integer operators (`QLinearConv` chains; manifest key `model_int8`). tract runs these on
    /// its integer kernels; a QDQ graph would run there as float with extra rounding steps.
    QOperator,
    /// `QuantizeLinear`/`DequantizeLinear` pairs around float operators, weights per channel
    /// (manifest key `model_int8_qdq`). ONNX Runtime fuses each pair and its operator into one
    /// integer kernel, depthwise convolutions and residual adds included, and the accelerator
    /// providers (TensorRT, QNN, OpenVINO) take INT8 only in this form.
    Qdq,
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Variant::Fp32 => "fp32",
            Variant::Int8 => "int8",
        })
    }
}

/// A loaded, self-consistent manifest (the graph itself is checked by the engine).
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// Short name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// The fp32 ONNX file.
    pub model_fp32: PathBuf,
    /// The INT8 ONNX file in QOperator form (tract's), when the bundle has one.
    pub model_int8: Option<PathBuf>,
    /// The INT8 ONNX file in QDQ form (ONNX Runtime's), when the bundle has one.
    pub model_int8_qdq: Option<PathBuf>,
    /// Label names, in output order.
    pub labels: Arc<[String]>,
    /// Input spec.
    pub input: InputSpec,
    /// Output activation.
    pub activation: Activation,
    /// Default decision rules.
    pub thresholds: ThresholdsSpec,
    /// Provenance and licence.
    pub provenance: Provenance,
    /// The manifest file, for messages that point into it.
    pub manifest: TomlFile,
}

impl Bundle {
    /// Read and check `dir/model.toml`: fields, label list, input spec, files present.
    pub fn load(dir: &Path) -> Result<Bundle, SettingsError> {
        if !dir.is_dir() {
            let what =
                std::fs::metadata(dir).map_or("not found".to_string(), |m| format!("is {}", kind_name(m.file_type())));
            return Err(SettingsError {
                file: dir.to_path_buf(),
                position: None,
                key: None,
                message: format!("model bundle {what}: expected a directory holding model.toml and the ONNX file"),
            });
        }
        Bundle::from_manifest(dir, TomlFile::read(&dir.join(MANIFEST))?)
    }

    /// Check an already-read manifest of the bundle in `dir` (the files it names are looked
    /// for there).
    pub fn from_manifest(dir: &Path, file: TomlFile) -> Result<Bundle, SettingsError> {
        let m: Manifest = file.parse()?;
        let existing = |s: &Spanned<String>, key: &str| -> Result<PathBuf, SettingsError> {
            let p = file.resolve(s.get_ref());
            match check_regular(&p) {
                Ok(()) => Ok(p),
                Err(e) => Err(file.error_at(
                    s.span(),
                    key,
                    format!("file `{}` {e}: expected a file in the bundle", p.display()),
                )),
            }
        };
        let model_fp32 = existing(&m.model, "model")?;
        let model_int8 = m.model_int8.as_ref().map(|s| existing(s, "model_int8")).transpose()?;
        let model_int8_qdq = m.model_int8_qdq.as_ref().map(|s| existing(s, "model_int8_qdq")).transpose()?;
        let labels: Vec<String> = match (&m.labels, &m.labels_file) {
            (Some(l), None) => l.clone(),
            (None, Some(f)) => {
                let path = existing(f, "labels_file")?;
                let bytes = read_regular_vec(&path, MAX_TEXT_BYTES, "the limit for a label list")
                    .map_err(|e| file.error_at(f.span(), "labels_file", format!("`{}` {e}", path.display())))?;
                let text = TomlFile::from_bytes(&path, bytes)?.text;
                text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
            }
            _ => {
                return Err(file.error(None, "expected exactly one of `labels` (a list) or `labels_file` (a path)"));
            }
        };
        if labels.is_empty() {
            return Err(file.error(Some("labels".into()), "the model has no labels: expected at least one"));
        }
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(file.error(
                    Some("labels".into()),
                    format!(
                        "label `{l}` appears twice (positions {} and {i}): expected unique names",
                        labels.iter().position(|x| x == l).unwrap_or(0)
                    ),
                ));
            }
        }
        check_input(&file, &m.input)?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            name: m.name,
            description: m.description,
            model_fp32,
            model_int8,
            model_int8_qdq,
            labels: labels.into(),
            input: m.input,
            activation: m.output.activation,
            thresholds: m.thresholds,
            provenance: m.provenance,
            manifest: file,
        })
    }

    /// The ONNX file to run for `variant` on an engine that prefers `form` for INT8, or an
    /// error naming the manifest key to add. QDQ falls back to the QOperator file (ONNX Runtime
    /// runs both); QOperator does not fall back to QDQ (tract would run it as float).
    pub fn model_path(&self, variant: Variant, form: Int8Form) -> Result<&Path, SettingsError> {
        match (variant, form) {
            (Variant::Fp32, _) => Ok(&self.model_fp32),
            (Variant::Int8, Int8Form::Qdq) => {
                self.model_int8_qdq.as_deref().or(self.model_int8.as_deref()).ok_or_else(|| {
                    self.manifest.error(
                        Some("model_int8_qdq".into()),
                        "this bundle has no INT8 model: expected `model_int8_qdq = \"FILE\"` (QDQ form) or \
                         `model_int8 = \"FILE\"`, or run the fp32 variant",
                    )
                })
            }
            (Variant::Int8, Int8Form::QOperator) => self.model_int8.as_deref().ok_or_else(|| {
                let message = if self.model_int8_qdq.is_some() {
                    "this bundle's INT8 model is in QDQ form only (`model_int8_qdq`), which is for the \
                     onnxruntime engine: expected `model_int8 = \"FILE\"` (QOperator form) for tract, or run \
                     the fp32 variant"
                } else {
                    "this bundle has no INT8 model: expected `model_int8 = \"FILE\"`, or run the fp32 variant"
                };
                self.manifest.error(Some("model_int8".into()), message)
            }),
        }
    }
}

fn check_input(file: &TomlFile, input: &InputSpec) -> Result<(), SettingsError> {
    if input.width == 0 || input.height == 0 || input.width > 8192 || input.height > 8192 {
        return Err(file.error(
            Some("input".into()),
            format!("input size {}x{}: expected width and height from 1 to 8192", input.width, input.height),
        ));
    }
    let channels = input.channels.count();
    for (key, values) in [("input.mean", &input.mean), ("input.std", &input.std)] {
        if !(values.is_empty() || values.len() == 1 || values.len() == channels) {
            return Err(file.error(
                Some(key.into()),
                format!("{} values for {channels} channel(s): expected 1 or {channels}", values.len()),
            ));
        }
    }
    // Every normalisation value in a range that makes sense for `value = (pixel * scale - mean)
    // / std`: NaN, infinities, a negative or denormal std passed before and gave garbage scores.
    let bad = |what: &str, key: &str, v: f32, expected: &str| {
        file.error(Some(key.into()), format!("{what} {v}: expected {expected}"))
    };
    if !(input.scale.is_normal() && input.scale > 0.0 && input.scale <= 1.0) {
        return Err(bad("scale", "input.scale", input.scale, "a positive number up to 1 (1/255 for 8-bit pixels)"));
    }
    for &m in &input.mean {
        if !(m.is_finite() && (-1000.0..=1000.0).contains(&m)) {
            return Err(bad("mean", "input.mean", m, "a finite number from -1000 to 1000"));
        }
    }
    for &sd in &input.std {
        if !(sd.is_normal() && (1e-6..=1000.0).contains(&sd)) {
            return Err(bad("std", "input.std", sd, "a positive number from 0.000001 to 1000"));
        }
    }
    Ok(())
}
