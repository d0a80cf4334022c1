//! One-shot classification of image files (`vigil classify`): the same
//! preprocessing and engine as the daemon, one decision per image from the
//! label's `on` threshold (no frame history).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::decide::LabelRule;
use crate::engine::{InferenceWorker, InputTensor};
use crate::frame::{Frame, PixelFormat};
use crate::preprocess::Preprocessor;
use crate::util::file::{MAX_IMAGE_FILE_BYTES, read_regular_vec};

/// A label and its score.
#[derive(Debug, Clone, Serialize)]
pub struct Scored {
    /// Label name.
    pub label: String,
    /// Score after the model's activation.
    pub score: f32,
}

/// The result for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageResult {
    /// The image file.
    pub image: PathBuf,
    /// Why it could not be classified, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The highest scores, best first.
    pub top: Vec<Scored>,
    /// Labels whose score reaches their `on` threshold.
    pub detected: Vec<Scored>,
    /// Every score, in label order (omitted from JSON unless asked for).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<f32>,
}

/// Classifies files with one preprocessor and one worker.
pub struct Classifier<'a> {
    /// Label names.
    pub labels: &'a [String],
    /// Per-label rules (only `on` is used).
    pub rules: &'a [LabelRule],
    /// Turns files into tensors.
    pub pre: Preprocessor,
    /// Runs the model.
    pub worker: Box<dyn InferenceWorker>,
    /// The model input.
    pub input: InputTensor,
}

impl Classifier<'_> {
    /// Classify one file; keep the `top_k` best scores (and all scores if `all_scores`).
    pub fn classify(&mut self, path: &Path, top_k: usize, all_scores: bool) -> ImageResult {
        let mut result =
            ImageResult { image: path.to_path_buf(), error: None, top: vec![], detected: vec![], scores: vec![] };
        let mut frame = Frame::empty();
        frame.format = PixelFormat::Encoded;
        // A FIFO, a device or a huge file named on the command line is refused, never waited on.
        match read_regular_vec(path, MAX_IMAGE_FILE_BYTES, "the limit for an image file") {
            Ok(bytes) => frame.data = bytes,
            Err(e) => {
                result.error = Some(e.to_string());
                return result;
            }
        }
        if let Err(e) = self.pre.run(&frame, self.input.as_mut_slice()) {
            result.error = Some(e.to_string());
            return result;
        }
        let mut scores = vec![0.0f32; self.labels.len()];
        if let Err(e) = self.worker.infer(&mut self.input, &mut scores) {
            result.error = Some(e.to_string());
            return result;
        }
        let mut order: Vec<usize> = (0..scores.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let scored = |i: usize| Scored { label: self.labels[i].clone(), score: scores[i] };
        result.top = order.iter().take(top_k).map(|&i| scored(i)).collect();
        result.detected = order.iter().filter(|&&i| scores[i] >= self.rules[i].on).map(|&i| scored(i)).collect();
        if all_scores {
            result.scores = scores;
        }
        result
    }
}
