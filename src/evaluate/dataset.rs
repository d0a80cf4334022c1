//! Labelled image sets for `vigil eval` and `vigil calibrate`.
//!
//! Three layouts (the format is picked from the path and, for a CSV, its header):
//!
//! - **label-list CSV**: `path,labels` with the labels `;`-separated
//!   (`cat.jpg,cat;sofa`); an empty second field means "none of the labels".
//!   The header `path,labels` is optional. The labels the set *declares* are
//!   those named anywhere in the file.
//! - **0/1-column CSV**: a header `path,LABEL,LABEL,...` then `1`/`0` per
//!   label. The declared labels are the columns (a column of zeros is a
//!   label with no positives, and is evaluated).
//! - **directory**: one subdirectory per label, named exactly as the label; an
//!   image in `cat/` has the label `cat`. The same file name under several
//!   label directories is one image with all of those labels (the first copy,
//!   in directory order, is the one scored). `_none/` holds images with none of
//!   the labels. Only `.jpg`, `.jpeg` and `.png` files are taken; anything else
//!   is refused rather than silently skipped. Hidden entries are ignored.
//!
//! Paths in a CSV are relative to the CSV file. Lines that are blank or start
//! with `#` are skipped. Every problem (unknown label, missing file, bad value,
//! duplicate image) is collected with its line, and the set is refused with
//! all of them at once.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::util::file::{MAX_CSV_BYTES, read_regular_vec};

/// Directory-layout folder for images that have none of the labels.
pub const NONE_DIR: &str = "_none";

/// Image file extensions a set may hold (the decoders vigil is built with).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// How many problems a refusal lists before summarising the rest.
const MAX_LISTED: usize = 20;

/// Which layout a set was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetFormat {
    /// `path,label1;label2`.
    LabelList,
    /// `path` plus one 0/1 column per label.
    Columns,
    /// One subdirectory per label.
    Directory,
}

/// One labelled image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImage {
    /// The image file (resolved against the CSV's folder).
    pub path: PathBuf,
    /// Its labels, as indices into the model's label list, ascending.
    pub labels: Vec<usize>,
    /// Where it was declared, for messages: `set.csv:12` or the file's path.
    pub origin: String,
}

/// A loaded, checked labelled set.
#[derive(Debug, Clone)]
pub struct LabelledSet {
    /// The CSV file or directory it came from.
    pub source: PathBuf,
    /// Its layout.
    pub format: SetFormat,
    /// The images, in file order.
    pub images: Vec<LabelledImage>,
    /// The labels the set declares (model indices, in order of first mention).
    pub declared: Vec<usize>,
}

/// One thing wrong with a set: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `set.csv:12`, `set.csv:12: column `cat`` or a path inside a directory set.
    pub at: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// A refused labelled set, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SetError {
    /// The set's CSV file or directory (not called `source`: thiserror would take it for the cause).
    pub set: PathBuf,
    /// What is wrong, where.
    pub problems: Vec<Problem>,
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [p] = self.problems.as_slice() {
            return write!(f, "labelled set {}: {}: {}", self.set.display(), p.at, p.message);
        }
        write!(f, "labelled set {} refused, {} problems:", self.set.display(), self.problems.len())?;
        for p in self.problems.iter().take(MAX_LISTED) {
            write!(f, "\n  {}: {}", p.at, p.message)?;
        }
        if self.problems.len() > MAX_LISTED {
            write!(f, "\n  … and {} more", self.problems.len() - MAX_LISTED)?;
        }
        Ok(())
    }
}

impl SetError {
    fn one(source: &Path, at: impl Into<String>, message: impl Into<String>) -> SetError {
        SetError { set: source.to_path_buf(), problems: vec![Problem { at: at.into(), message: message.into() }] }
    }
}

/// Looks label names up in the model's list and words the refusal for unknown ones.
pub(crate) struct LabelIndex<'a> {
    labels: &'a [String],
    by_name: HashMap<&'a str, usize>,
}

impl<'a> LabelIndex<'a> {
    pub(crate) fn new(labels: &'a [String]) -> Self {
        LabelIndex { labels, by_name: labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect() }
    }

    fn find(&self, name: &str) -> Result<usize, String> {
        self.by_name.get(name).copied().ok_or_else(|| unknown_label(name, self.labels))
    }
}

/// "unknown label `x`: expected one of the model's N labels (did you mean `y`?)".
pub fn unknown_label(name: &str, labels: &[String]) -> String {
    let hint = closest(name, labels).map(|l| format!("; did you mean `{l}`?")).unwrap_or_default();
    format!("unknown label `{name}`: expected one of the model's {} labels (exact, case-sensitive){hint}", labels.len())
}

/// The model label nearest to `name` by edit distance, if it is plausibly a typo.
fn closest<'a>(name: &str, labels: &'a [String]) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let (best, distance) =
        labels.iter().map(|l| (l.as_str(), edit_distance(&lower, &l.to_lowercase()))).min_by_key(|&(_, d)| d)?;
    (distance <= 2.max(name.chars().count() / 4)).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

impl LabelledSet {
    /// Read the set at `path` (a `.csv` file or a directory), checking its
    /// labels against `model_labels` and that every image file exists.
    pub fn load(path: &Path, model_labels: &[String]) -> Result<LabelledSet, SetError> {
        let index = LabelIndex::new(model_labels);
        let set = if path.is_dir() {
            load_directory(path, &index)?
        } else {
            // Read whole and bounded: a FIFO or a device named as the set is refused, not waited on.
            match read_regular_vec(path, MAX_CSV_BYTES, "the limit for a labelled-set CSV") {
                Ok(bytes) => load_csv(path, &bytes, &index)?,
                Err(e) => {
                    return Err(SetError::one(
                        path,
                        path.display().to_string(),
                        format!(
                            "{e}: expected a CSV file (`path,labels` or `path` + 0/1 label columns) or a directory with one subdirectory per label"
                        ),
                    ));
                }
            }
        };
        if set.images.is_empty() {
            return Err(SetError::one(
                path,
                path.display().to_string(),
                "the set is empty: expected at least one labelled image",
            ));
        }
        Ok(set)
    }
}

/// Where a CSV record lives, for messages.
fn at_line(file: &Path, record: &csv::StringRecord) -> String {
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    match record.position() {
        Some(p) => format!("{name}:{}", p.line()),
        None => name,
    }
}

pub(crate) fn load_csv(file: &Path, bytes: &[u8], index: &LabelIndex<'_>) -> Result<LabelledSet, SetError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(bytes);
    let base = file.parent().unwrap_or(Path::new("."));
    let mut records = Vec::new();
    for r in reader.records() {
        match r {
            Ok(r) if r.iter().all(str::is_empty) => {}
            Ok(r) => records.push(r),
            Err(e) => {
                let at = e.position().map_or_else(|| file.display().to_string(), |p| format!("line {}", p.line()));
                return Err(SetError::one(file, at, format!("not valid CSV: {e}")));
            }
        }
    }
    let header = records.first().filter(|r| r.get(0).is_some_and(|f| f.eq_ignore_ascii_case("path"))).cloned();
    let list_header = header
        .as_ref()
        .is_some_and(|h| h.len() == 2 && ["labels", "label"].iter().any(|n| h[1].eq_ignore_ascii_case(n)));
    let body = if header.is_some() { &records[1..] } else { &records[..] };
    let mut problems = Vec::new();
    let mut set =
        LabelledSet { source: file.to_path_buf(), format: SetFormat::LabelList, images: vec![], declared: vec![] };
    match header {
        Some(h) if !list_header => {
            set.format = SetFormat::Columns;
            let at = at_line(file, &h);
            let mut columns = Vec::new();
            if h.len() < 2 {
                problems.push(Problem {
                    at: at.clone(),
                    message: "header `path` has no label columns: expected `path,LABEL,...` or `path,labels`".into(),
                });
            }
            for name in h.iter().skip(1) {
                match index.find(name) {
                    Ok(i) if columns.contains(&Some(i)) => {
                        problems.push(Problem { at: at.clone(), message: format!("column `{name}` appears twice") });
                        columns.push(None);
                    }
                    Ok(i) => {
                        columns.push(Some(i));
                        set.declared.push(i);
                    }
                    Err(message) => {
                        problems.push(Problem { at: at.clone(), message: format!("header: {message}") });
                        columns.push(None);
                    }
                }
            }
            for r in body {
                let at = at_line(file, r);
                if r.len() != h.len() {
                    problems.push(Problem {
                        at,
                        message: format!(
                            "{} fields: expected {} (`path` and one 0/1 per label column)",
                            r.len(),
                            h.len()
                        ),
                    });
                    continue;
                }
                let mut labels = Vec::new();
                for (value, (name, column)) in r.iter().skip(1).zip(h.iter().skip(1).zip(&columns)) {
                    match value {
                        "1" => labels.extend(column),
                        "0" => {}
                        _ => problems.push(Problem {
                            at: at.clone(),
                            message: format!("column `{name}`: `{value}`: expected 1 (has the label) or 0"),
                        }),
                    }
                }
                push_image(&mut set, &mut problems, base, &r[0], labels, at);
            }
        }
        _ => {
            for r in body {
                let at = at_line(file, r);
                if r.len() > 2 {
                    problems.push(Problem {
                        at,
                        message: format!(
                            "{} fields: expected `path,label1;label2` (separate labels with `;`; quote a field that holds a comma)",
                            r.len()
                        ),
                    });
                    continue;
                }
                let mut labels = Vec::new();
                for name in r.get(1).unwrap_or("").split(';').map(str::trim).filter(|n| !n.is_empty()) {
                    match index.find(name) {
                        Ok(i) => {
                            labels.push(i);
                            if !set.declared.contains(&i) {
                                set.declared.push(i);
                            }
                        }
                        Err(message) => problems.push(Problem { at: at.clone(), message }),
                    }
                }
                push_image(&mut set, &mut problems, base, &r[0], labels, at);
            }
        }
    }
    if problems.is_empty() { Ok(set) } else { Err(SetError { set: file.to_path_buf(), problems }) }
}

/// Check and add one CSV row's image.
fn push_image(
    set: &mut LabelledSet,
    problems: &mut Vec<Problem>,
    base: &Path,
    written: &str,
    mut labels: Vec<usize>,
    at: String,
) {
    if written.is_empty() {
        problems.push(Problem { at, message: "empty path: expected an image file, relative to the CSV".into() });
        return;
    }
    let path = base.join(written);
    if !path.is_file() {
        problems.push(Problem {
            at,
            message: format!(
                "image `{written}` not found (looked for {}): paths are relative to the CSV file",
                path.display()
            ),
        });
        return;
    }
    if let Some(first) = set.images.iter().find(|i| i.path == path) {
        problems.push(Problem {
            at,
            message: format!(
                "image `{written}` is listed twice (first at {}): expected one line per image with all its labels",
                first.origin
            ),
        });
        return;
    }
    labels.sort_unstable();
    labels.dedup();
    set.images.push(LabelledImage { path, labels, origin: at });
}

fn load_directory(dir: &Path, index: &LabelIndex<'_>) -> Result<LabelledSet, SetError> {
    let read = |d: &Path| -> Result<Vec<PathBuf>, SetError> {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(d)
                .and_then(|it| it.map(|e| e.map(|e| e.path())).collect())
                .map_err(|e| SetError::one(dir, d.display().to_string(), format!("cannot read directory: {e}")))?;
        entries.retain(|p| !p.file_name().is_some_and(is_hidden));
        entries.sort();
        Ok(entries)
    };
    let mut set =
        LabelledSet { source: dir.to_path_buf(), format: SetFormat::Directory, images: vec![], declared: vec![] };
    let mut problems = Vec::new();
    // File name -> position in `set.images`, and whether it came from `_none/`.
    let mut by_name: HashMap<std::ffi::OsString, (usize, bool)> = HashMap::new();
    for sub in read(dir)? {
        let at = sub.display().to_string();
        if !sub.is_dir() {
            problems.push(Problem {
                at,
                message: "a file at the top of a directory set: expected one subdirectory per label (or `_none/`)"
                    .into(),
            });
            continue;
        }
        let name = sub.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let label = if name == NONE_DIR {
            None
        } else {
            match index.find(&name) {
                Ok(i) => {
                    set.declared.push(i);
                    Some(i)
                }
                Err(message) => {
                    problems.push(Problem { at, message: format!("directory name: {message}") });
                    continue;
                }
            }
        };
        for file in read(&sub)? {
            let at = file.display().to_string();
            if !file.is_file() || !is_image(&file) {
                problems.push(Problem {
                    at,
                    message: format!("not an image file: expected .{} files only", IMAGE_EXTENSIONS.join(", .")),
                });
                continue;
            }
            let key = file.file_name().unwrap_or_default().to_os_string();
            match by_name.get(&key).copied() {
                None => {
                    by_name.insert(key, (set.images.len(), label.is_none()));
                    set.images.push(LabelledImage { path: file, labels: label.into_iter().collect(), origin: at });
                }
                Some((i, was_none)) if was_none || label.is_none() => problems.push(Problem {
                    at,
                    message: format!(
                        "also under `{NONE_DIR}/` or a label directory ({}): an image in `{NONE_DIR}/` has no labels, expected it in one place only",
                        set.images[i].origin
                    ),
                }),
                Some((i, _)) => {
                    let labels = &mut set.images[i].labels;
                    labels.extend(label);
                    labels.sort_unstable();
                    labels.dedup();
                }
            }
        }
    }
    if problems.is_empty() { Ok(set) } else { Err(SetError { set: dir.to_path_buf(), problems }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["cat", "dog", "tabby cat"].iter().map(|s| s.to_string()).collect()
    }

    fn setup(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        d
    }

    #[test]
    fn label_list_with_and_without_header() {
        let d = setup(&["a.jpg", "b.png", "c.jpg"]);
        let csv = d.path().join("set.csv");
        std::fs::write(&csv, "path,labels\na.jpg,cat;tabby cat\n# a comment\nb.png,\nc.jpg, dog \n").unwrap();
        let set = LabelledSet::load(&csv, &labels()).unwrap();
        assert_eq!(set.format, SetFormat::LabelList);
        assert_eq!(set.declared, vec![0, 2, 1]);
        let got: Vec<&[usize]> = set.images.iter().map(|i| i.labels.as_slice()).collect();
        assert_eq!(got, vec![&[0, 2][..], &[][..], &[1][..]]);
        assert_eq!(set.images[2].origin, "set.csv:5");
        std::fs::write(&csv, "a.jpg,cat\n").unwrap();
        assert_eq!(LabelledSet::load(&csv, &labels()).unwrap().images.len(), 1);
    }

    #[test]
    fn columns_format() {
        let d = setup(&["a.jpg", "b.jpg"]);
        let csv = d.path().join("set.csv");
        std::fs::write(&csv, "path,dog,cat\na.jpg,1,1\nb.jpg,0,0\n").unwrap();
        let set = LabelledSet::load(&csv, &labels()).unwrap();
        assert_eq!(set.format, SetFormat::Columns);
        assert_eq!(set.declared, vec![1, 0]);
        assert_eq!(set.images[0].labels, vec![0, 1]);
        std::fs::write(&csv, "path,dog,cat\na.jpg,1,yes\n").unwrap();
        let e = LabelledSet::load(&csv, &labels()).unwrap_err().to_string();
        assert!(e.contains("set.csv:2") && e.contains("column `cat`") && e.contains("expected 1"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let d = setup(&["a.jpg"]);
        let csv = d.path().join("set.csv");
        std::fs::write(&csv, "a.jpg,cta\nmissing.jpg,dog\na.jpg,cat\n").unwrap();
        let e = LabelledSet::load(&csv, &labels()).unwrap_err();
        let text = e.to_string();
        assert_eq!(e.problems.len(), 3, "{text}");
        assert!(text.contains("set.csv:1: unknown label `cta`") && text.contains("did you mean `cat`"), "{text}");
        assert!(text.contains("set.csv:2: image `missing.jpg` not found"), "{text}");
        assert!(text.contains("set.csv:3: image `a.jpg` is listed twice"), "{text}");
    }

    #[test]
    fn empty_set_is_refused() {
        let d = setup(&[]);
        let csv = d.path().join("set.csv");
        std::fs::write(&csv, "path,labels\n").unwrap();
        let e = LabelledSet::load(&csv, &labels()).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn directory_layout_joins_labels_by_file_name() {
        let d = setup(&["cat/1.jpg", "tabby cat/1.jpg", "dog/2.png", "_none/3.jpg"]);
        let set = LabelledSet::load(d.path(), &labels()).unwrap();
        assert_eq!(set.format, SetFormat::Directory);
        assert_eq!(set.images.len(), 3);
        let one = set.images.iter().find(|i| i.path.ends_with("cat/1.jpg")).unwrap();
        assert_eq!(one.labels, vec![0, 2]);
        assert!(set.images.iter().any(|i| i.path.ends_with("_none/3.jpg") && i.labels.is_empty()));
        let bad = setup(&["cow/1.jpg", "cat/notes.txt"]);
        let e = LabelledSet::load(bad.path(), &labels()).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
    }
}
