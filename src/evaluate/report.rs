//! How evaluation results are shown: terminal tables ([`std::fmt::Display`]
//! on the reports) and `--report DIR`, a folder with `report.md`,
//! `report.html`, `pr_curves.svg` (one precision-recall panel per label with
//! positives) and `cooccurrence.svg` (a heat map of the set's labels).

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::metrics::{self, Metrics};
use super::{CalibrateReport, EvalError, EvalReport};

/// Most panels `pr_curves.svg` draws (labels with the most positives first).
pub const MAX_PR_PANELS: usize = 100;
/// Most labels the heat map and the terminal co-occurrence table show.
pub const MAX_HEATMAP_LABELS: usize = 40;
/// Most labels whose co-occurrence is printed on the terminal.
const MAX_TERMINAL_MATRIX: usize = 12;

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn summary_rows(m: &Metrics) -> Vec<(&'static str, String)> {
    vec![
        ("mAP", format!("{} (mean AP over {} labels with positives)", opt(m.map), m.map_labels)),
        ("micro P / R / F1", format!("{:.3} / {:.3} / {:.3}", m.micro_precision, m.micro_recall, m.micro_f1)),
        ("macro P / R / F1", format!("{:.3} / {:.3} / {:.3}", m.macro_precision, m.macro_recall, m.macro_f1)),
        ("samples F1", format!("{:.3}", m.samples_f1)),
        ("Hamming loss", format!("{:.4}", m.hamming_loss)),
        ("subset accuracy", format!("{:.3}", m.subset_accuracy)),
    ]
}

/// The labels' name column width, capped so one long name does not push the numbers off screen.
fn name_width(labels: &[String]) -> usize {
    labels.iter().map(|l| l.chars().count()).max().unwrap_or(5).clamp(5, 32)
}

/// The "scored in ..." line both reports start with.
fn write_timing(f: &mut fmt::Formatter<'_>, t: &super::Timing) -> fmt::Result {
    writeln!(
        f,
        "scored in {:.2} s on {} workers: {:.1} ms per image (wall), {:.1} images/s",
        t.elapsed_s, t.workers, t.ms_per_image, t.images_per_s
    )
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timing;
        writeln!(
            f,
            "{} ({}) on {}: {} images, {} labels evaluated",
            self.model.display(),
            self.variant,
            self.data.display(),
            t.images,
            self.labels.len()
        )?;
        write_timing(f, t)?;
        let w = name_width(&self.labels);
        writeln!(
            f,
            "\n{:<w$}  {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5}",
            "label", "support", "freq", "AP", "on", "P", "R", "F1", "tp", "fp", "fn"
        )?;
        for l in &self.metrics.labels {
            writeln!(
                f,
                "{:<w$}  {:>7} {:>6.3} {:>6} {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>5} {:>5} {:>5}",
                truncate(&l.label, w),
                l.support,
                l.frequency,
                opt(l.ap),
                l.on,
                l.precision,
                l.recall,
                l.f1,
                l.counts.tp,
                l.counts.fp,
                l.counts.fn_
            )?;
        }
        writeln!(f)?;
        for (name, value) in summary_rows(&self.metrics) {
            writeln!(f, "{name:<18} {value}")?;
        }
        let k = self.labels.len();
        if k <= MAX_TERMINAL_MATRIX {
            writeln!(f, "\nco-occurrence (images with both labels; diagonal = support):")?;
            // Row names carry a `[i] ` prefix.
            let w = w + 5;
            write!(f, "{:<w$} ", "")?;
            for j in 0..k {
                write!(f, " {:>4}", format!("[{j}]"))?;
            }
            writeln!(f)?;
            for (i, row) in self.cooccurrence.iter().enumerate() {
                write!(f, "{:<w$} ", truncate(&format!("[{i}] {}", self.labels[i]), w))?;
                for c in row {
                    write!(f, " {c:>4}")?;
                }
                writeln!(f)?;
            }
        } else {
            writeln!(f, "\nco-occurrence: {k} labels, see --json or --report")?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CalibrateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.timing;
        writeln!(
            f,
            "{} ({}) on {}: {} images, objective {}, margin {}",
            self.model.display(),
            self.variant,
            self.data.display(),
            t.images,
            self.objective,
            self.margin
        )?;
        write_timing(f, t)?;
        let w = name_width(&self.labels);
        writeln!(
            f,
            "\n{:<w$}  {:>7}  {:>18}  {:>18}  {:>17}  note",
            "label", "support", "on before → after", "off before → after", "F1 before → after"
        )?;
        for (c, (b, a)) in self.thresholds.iter().zip(self.before.labels.iter().zip(&self.after.labels)) {
            let note = match c.objective_met {
                None => "no positives: kept",
                Some(false) => "objective not reachable: most precise threshold",
                Some(true) => "",
            };
            writeln!(
                f,
                "{:<w$}  {:>7}  {:>18}  {:>18}  {:>17}  {note}",
                truncate(&c.label, w),
                c.support,
                // Thresholds in their shortest exact form: calibrated ones can be tiny (softmax scores).
                format!("{} → {}", c.before_on, c.on),
                format!("{} → {}", c.before_off, c.off),
                format!("{:.3} → {:.3}", b.f1, a.f1),
            )?;
        }
        writeln!(f, "\n{:<18} {:>8} {:>8}", "", "before", "after")?;
        let (b, a) = (&self.before, &self.after);
        let rows = [
            ("macro F1", b.macro_f1, a.macro_f1),
            ("micro F1", b.micro_f1, a.micro_f1),
            ("samples F1", b.samples_f1, a.samples_f1),
            ("macro precision", b.macro_precision, a.macro_precision),
            ("macro recall", b.macro_recall, a.macro_recall),
            ("Hamming loss", b.hamming_loss, a.hamming_loss),
            ("subset accuracy", b.subset_accuracy, a.subset_accuracy),
        ];
        for (name, before, after) in rows {
            writeln!(f, "{name:<18} {before:>8.4} {after:>8.4}")?;
        }
        writeln!(f, "{:<18} {:>8} (threshold-free, unchanged)", "mAP", opt(a.map))?;
        writeln!(f)?;
        match &self.written {
            Some(w) => match &w.backup {
                Some(b) => writeln!(f, "wrote {} (previous version kept as {})", w.path.display(), b.display())?,
                None => writeln!(f, "wrote {}", w.path.display())?,
            },
            None => writeln!(f, "wrote nothing (see notes)")?,
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        s.chars().take(width.saturating_sub(1)).collect::<String>() + "…"
    }
}

/// Write `report.md`, `report.html`, `pr_curves.svg` and `cooccurrence.svg` into `dir` (created if needed).
pub fn write_report(dir: &Path, report: &EvalReport) -> Result<Vec<PathBuf>, EvalError> {
    let fail = |path: &Path, e: &dyn fmt::Display| EvalError::Write { path: path.to_path_buf(), reason: e.to_string() };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    let panels = pr_panels(report);
    let heat = heat_labels(report);
    let files = [
        ("pr_curves.svg", pr_svg(report, &panels).map_err(|e| fail(&dir.join("pr_curves.svg"), &e))?),
        ("cooccurrence.svg", heatmap_svg(report, &heat).map_err(|e| fail(&dir.join("cooccurrence.svg"), &e))?),
        ("report.md", markdown(report, panels.len(), heat.len())),
        ("report.html", html(report, panels.len(), heat.len())),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| fail(&path, &e))?;
        written.push(path);
    }
    Ok(written)
}

/// Columns that get a PR panel: labels with positives, most positives first, capped.
fn pr_panels(report: &EvalReport) -> Vec<usize> {
    let mut cols: Vec<usize> = (0..report.labels.len()).filter(|&j| report.metrics.labels[j].support > 0).collect();
    cols.sort_by_key(|&j| std::cmp::Reverse(report.metrics.labels[j].support));
    cols.truncate(MAX_PR_PANELS);
    cols.sort_unstable();
    cols
}

/// Columns shown in the heat map: the most frequent labels, capped, in report order.
fn heat_labels(report: &EvalReport) -> Vec<usize> {
    let mut cols: Vec<usize> = (0..report.labels.len()).collect();
    cols.sort_by_key(|&j| std::cmp::Reverse(report.metrics.labels[j].support));
    cols.truncate(MAX_HEATMAP_LABELS);
    cols.sort_unstable();
    cols
}

type DrawResult<T> = Result<T, String>;

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    format!("drawing failed: {e}")
}

/// One precision-recall panel per label (the step curve whose area is the AP)
/// with the operating point at the label's `on` threshold marked.
fn pr_svg(report: &EvalReport, panels: &[usize]) -> DrawResult<String> {
    let cols = (panels.len() as f64).sqrt().ceil().max(1.0) as usize;
    let rows = panels.len().div_ceil(cols).max(1);
    let (pw, ph) = (320u32, 280u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (pw * cols as u32, ph * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        if panels.is_empty() {
            root.draw(&Text::new("no label has positives: no curve to draw", (20, 40), ("sans-serif", 16)))
                .map_err(draw_err)?;
        }
        for (area, &j) in root.split_evenly((rows, cols)).iter().zip(panels) {
            let l = &report.metrics.labels[j];
            let truth = report.table.truth_column(j);
            let scores = report.table.score_column(j);
            let curve = metrics::pr_curve(&truth, &scores);
            let mut steps = Vec::with_capacity(curve.len() * 2 + 1);
            let mut last_recall = 0.0;
            for p in &curve {
                steps.push((last_recall, p.precision));
                steps.push((p.recall, p.precision));
                last_recall = p.recall;
            }
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{} (AP {})", truncate(&l.label, 28), opt(l.ap)), ("sans-serif", 15))
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(40)
                .build_cartesian_2d(0f64..1f64, 0f64..1.05f64)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("recall")
                .y_desc("precision")
                .x_labels(6)
                .y_labels(6)
                .max_light_lines(0)
                .draw()
                .map_err(draw_err)?;
            chart.draw_series(LineSeries::new(steps, BLUE.stroke_width(2))).map_err(draw_err)?;
            let op = (l.recall, l.precision);
            chart.draw_series(std::iter::once(Circle::new(op, 4, RED.filled()))).map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// A k×k heat map of the co-occurrence counts, each cell shaded by its count
/// relative to the largest and labelled with it.
fn heatmap_svg(report: &EvalReport, labels: &[usize]) -> DrawResult<String> {
    let k = labels.len().max(1);
    let cell = if k <= 12 { 44 } else { 22 };
    let margin_left =
        12 + 7 * labels.iter().map(|&j| report.labels[j].chars().count().min(28)).max().unwrap_or(4) as i32;
    let margin_top = 52;
    let size = (margin_left as u32 + cell * k as u32 + 20, margin_top as u32 + cell * k as u32 + 20);
    let max = labels.iter().flat_map(|&a| labels.iter().map(move |&b| report.cooccurrence[a][b])).max().unwrap_or(0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        root.draw(&Text::new(
            "label co-occurrence (images with both; diagonal = support)",
            (10, 14),
            ("sans-serif", 14),
        ))
        .map_err(draw_err)?;
        let cell = cell as i32;
        for (r, &a) in labels.iter().enumerate() {
            let y = margin_top + r as i32 * cell;
            root.draw(&Text::new(
                format!("[{r}] {}", truncate(&report.labels[a], 28)),
                (6, y + cell / 2 - 6),
                ("sans-serif", 12),
            ))
            .map_err(draw_err)?;
            for (c, &b) in labels.iter().enumerate() {
                let x = margin_left + c as i32 * cell;
                let n = report.cooccurrence[a][b];
                let shade = if max == 0 { 0.0 } else { n as f64 / max as f64 };
                // White (0) to deep blue (max), so zeros recede and frequent pairs stand out.
                let colour = RGBColor(
                    (255.0 - 205.0 * shade) as u8,
                    (255.0 - 165.0 * shade) as u8,
                    (255.0 - 55.0 * shade) as u8,
                );
                root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], colour.filled()))
                    .map_err(draw_err)?;
                let ink = if shade > 0.55 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    n.to_string(),
                    (x + cell / 2 - 6, y + cell / 2 - 6),
                    ("sans-serif", 12).into_font().color(&ink),
                ))
                .map_err(draw_err)?;
            }
        }
        for c in 0..labels.len() {
            let x = margin_left + c as i32 * cell;
            root.draw(&Text::new(format!("[{c}]"), (x + 4, margin_top - 16), ("sans-serif", 12))).map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The per-label table's columns, shared by the Markdown and HTML reports.
const LABEL_COLUMNS: [&str; 11] =
    ["label", "support", "frequency", "AP", "on", "precision", "recall", "F1", "tp", "fp", "fn"];

/// One label's row of the per-label table, in [`LABEL_COLUMNS`] order, unescaped.
fn label_cells(l: &metrics::LabelMetrics) -> [String; 11] {
    [
        l.label.clone(),
        l.support.to_string(),
        format!("{:.3}", l.frequency),
        opt(l.ap),
        l.on.to_string(),
        format!("{:.3}", l.precision),
        format!("{:.3}", l.recall),
        format!("{:.3}", l.f1),
        l.counts.tp.to_string(),
        l.counts.fp.to_string(),
        l.counts.fn_.to_string(),
    ]
}

fn markdown(r: &EvalReport, panels: usize, heat: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# vigil eval: {}\n", r.model.display());
    let _ = writeln!(s, "- model: `{}` ({})", r.model.display(), r.variant);
    let _ = writeln!(
        s,
        "- set: `{}` ({:?}), {} images, {} labels evaluated",
        r.data.display(),
        r.format,
        r.timing.images,
        r.labels.len()
    );
    let from: Vec<String> = r.thresholds_from.iter().map(|p| format!("`{}`", p.display())).collect();
    let _ = writeln!(s, "- thresholds from: {}", from.join(" then "));
    let _ = writeln!(
        s,
        "- scored in {:.2} s on {} workers ({:.1} ms per image, wall)\n",
        r.timing.elapsed_s, r.timing.workers, r.timing.ms_per_image
    );
    let _ = writeln!(s, "## Summary\n\n| metric | value |\n|---|---|");
    for (name, value) in summary_rows(&r.metrics) {
        let _ = writeln!(s, "| {name} | {value} |");
    }
    let _ = writeln!(s, "\n## Per label\n\n| {} |\n|{}", LABEL_COLUMNS.join(" | "), "---|".repeat(LABEL_COLUMNS.len()));
    for l in &r.metrics.labels {
        let mut cells = label_cells(l);
        cells[0] = cells[0].replace('|', "\\|");
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(
        s,
        "\n## Precision-recall curves\n\n{panels} labels with positives (step curves: the area under each is its AP; the red dot is the operating point at `on`).\n\n![PR curves](pr_curves.svg)\n"
    );
    let _ = writeln!(
        s,
        "## Label co-occurrence\n\n{heat} labels (images having both; the diagonal is each label's support).\n\n![co-occurrence](cooccurrence.svg)\n"
    );
    let _ = writeln!(s, "## Notes\n");
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn html(r: &EvalReport, panels: usize, heat: usize) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>vigil eval</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}</style></head><body>\n",
    );
    let _ = writeln!(s, "<h1>vigil eval: {}</h1>", escape(&r.model.display().to_string()));
    let _ = writeln!(
        s,
        "<p>set <code>{}</code>: {} images, {} labels evaluated; scored in {:.2} s on {} workers ({:.1} ms per image, wall).</p>",
        escape(&r.data.display().to_string()),
        r.timing.images,
        r.labels.len(),
        r.timing.elapsed_s,
        r.timing.workers,
        r.timing.ms_per_image
    );
    let _ = writeln!(s, "<h2>Summary</h2>\n<table><tr><th>metric</th><th>value</th></tr>");
    for (name, value) in summary_rows(&r.metrics) {
        let _ = writeln!(s, "<tr><td>{name}</td><td>{}</td></tr>", escape(&value));
    }
    let _ = writeln!(s, "</table>\n<h2>Per label</h2>\n<table><tr><th>{}</th></tr>", LABEL_COLUMNS.join("</th><th>"));
    for l in &r.metrics.labels {
        let cells: Vec<String> = label_cells(l).iter().map(|c| escape(c)).collect();
        let _ = writeln!(s, "<tr><td>{}</td></tr>", cells.join("</td><td>"));
    }
    let _ = writeln!(
        s,
        "</table>\n<h2>Precision-recall curves</h2>\n<p>{panels} labels with positives; the red dot is the operating point at <code>on</code>.</p>\n<img src=\"pr_curves.svg\" alt=\"PR curves\">"
    );
    let _ = writeln!(
        s,
        "<h2>Label co-occurrence</h2>\n<p>{heat} labels.</p>\n<img src=\"cooccurrence.svg\" alt=\"co-occurrence heat map\">\n<h2>Notes</h2>\n<ul>"
    );
    for n in &r.notes {
        let _ = writeln!(s, "<li>{}</li>", escape(n));
    }
    s.push_str("</ul>\n</body></html>\n");
    s
}
