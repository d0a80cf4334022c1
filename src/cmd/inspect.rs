//! `vigil inspect`: a bundle's optimised tract graph, node by node or counted
//! per op and types (INT8 models that run on integer kernels show integer matmuls).

use std::collections::BTreeMap;
use std::path::Path;

use super::{EXIT_OK, Error};
use vigil::bundle::{Bundle, Variant};
use vigil::engine::{InferenceEngine, TractEngine};

/// Print the graph of `model`'s `variant`; every node when `nodes`.
pub fn run(model: &Path, variant: Variant, nodes: bool) -> Result<i32, Error> {
    let bundle = Bundle::load(model)?;
    let engine = TractEngine::load(&bundle, variant)?;
    outln!("{}", engine.describe());
    let graph = engine.optimized_nodes();
    let mut counts = BTreeMap::new();
    for n in &graph {
        if nodes {
            outln!("  {:<24} {:<40} {} -> {}", n.op, n.name, n.input_types.join(","), n.output_type);
        }
        *counts.entry(format!("{} ({} -> {})", n.op, n.input_types.join(","), n.output_type)).or_insert(0) += 1;
    }
    outln!("{} nodes:", graph.len());
    for (k, v) in counts {
        outln!("  {v:>4} x {k}");
    }
    Ok(EXIT_OK)
}
