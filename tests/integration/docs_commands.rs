//! The docs' command lines run against the binary: a doc that drifts from it fails the suite.
//!
//! - Every command line in a code block of README.md and docs/*.md (`vigil …`, or
//!   `cargo run --release -- …`) runs in a scratch folder that looks like the repository, with
//!   the docs' placeholder names made real: `models/my-bundle` (a copy of the road-scene bundle,
//!   since `calibrate` edits it), `models/my-camera`, `val.csv`, `test.csv`, `my-labelled.csv` and
//!   `val/` (the road-scene eval set in each layout). Each must exit 0.
//! - Every inline `vigil SUBCOMMAND … --flag` mention (syntax lines, flag names in prose) names
//!   a subcommand and flags that `vigil SUBCOMMAND --help` lists.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::root;

/// The Markdown files whose commands are checked, as `(name relative to the root, text)`.
fn doc_files() -> Vec<(String, String)> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|f| (f.strip_prefix(root()).unwrap().display().to_string(), std::fs::read_to_string(&f).unwrap()))
        .collect()
}

/// Command lines in code blocks (fenced or indented): `(file:line, command)`.
fn code_block_commands() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, text) in doc_files() {
        let mut fenced = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if !fenced && !line.starts_with("    ") {
                continue;
            }
            let line = line.trim().trim_start_matches("$ ");
            let command = if let Some((_, rest)) = line.split_once("cargo run --release -- ") {
                format!("vigil {rest}")
            } else if line.starts_with("vigil ") {
                line.to_string()
            } else {
                continue;
            };
            found.push((format!("{name}:{}", i + 1), command));
        }
    }
    found
}

/// Inline `vigil …` code spans: `(file:line, span)`.
fn inline_mentions() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (name, text) in doc_files() {
        for (i, line) in text.lines().enumerate() {
            for (j, span) in line.split('`').enumerate() {
                if j % 2 == 1 && span.starts_with("vigil ") {
                    found.push((format!("{name}:{}", i + 1), span.to_string()));
                }
            }
        }
    }
    found
}

/// A folder holding links to the repository's models, boards and tests, plus the docs'
/// placeholder bundle and labelled sets, made from the road-scene bundle and its eval set.
fn scratch_repository(dir: &Path) {
    for entry in ["boards", "tests"] {
        std::os::unix::fs::symlink(root().join(entry), dir.join(entry)).unwrap();
    }
    let models = dir.join("models");
    std::fs::create_dir(&models).unwrap();
    for entry in std::fs::read_dir(root().join("models")).unwrap() {
        let entry = entry.unwrap();
        std::os::unix::fs::symlink(entry.path(), models.join(entry.file_name())).unwrap();
    }
    let road = root().join("models/road-scene");
    std::os::unix::fs::symlink(&road, models.join("my-camera")).unwrap();
    let copy = models.join("my-bundle");
    std::fs::create_dir(&copy).unwrap();
    for entry in std::fs::read_dir(&road).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
    }
    // The eval set with absolute image paths, as each CSV name the docs use, and as a directory.
    let eval = road.join("eval");
    let csv = std::fs::read_to_string(eval.join("labels.csv")).unwrap();
    let mut absolute = String::new();
    let val = dir.join("val");
    for line in csv.lines() {
        let Some((path, labels)) = line.split_once(',').filter(|(p, _)| !p.starts_with('#') && *p != "path") else {
            absolute.push_str(line);
            absolute.push('\n');
            continue;
        };
        let image = eval.join(path);
        absolute.push_str(&format!("{},{labels}\n", image.display()));
        let file_name = image.file_name().unwrap();
        let labels: Vec<&str> = labels.split(';').filter(|l| !l.is_empty()).collect();
        for label in if labels.is_empty() { vec!["_none"] } else { labels } {
            std::fs::create_dir_all(val.join(label)).unwrap();
            std::os::unix::fs::symlink(&image, val.join(label).join(file_name)).unwrap();
        }
    }
    for name in ["val.csv", "test.csv", "my-labelled.csv"] {
        std::fs::write(dir.join(name), &absolute).unwrap();
    }
    // `vigil` on PATH, as an installed binary is.
    let bin = dir.join(".bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vigil"), bin.join("vigil")).unwrap();
}

/// Run `command` with `sh` in `dir`; `Err` with its output unless it exits 0 within `limit`.
fn run_shell(dir: &Path, command: &str, limit: Duration) -> Result<(), String> {
    let path = format!("{}:{}", dir.join(".bin").display(), std::env::var("PATH").unwrap_or_default());
    let out_file = dir.join(".output");
    let out = std::fs::File::create(&out_file).unwrap();
    let mut child = Command::new("sh")
        .args(["-c", command])
        .current_dir(dir)
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_file).unwrap_or_default();
    let tail: String =
        output.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!("exited with {s}:\n{tail}")),
        None => Err(format!("still running after {} s:\n{tail}", limit.as_secs())),
    }
}

#[test]
fn every_command_line_in_the_docs_runs_as_written() {
    let commands = code_block_commands();
    assert!(commands.len() >= 8, "expected the docs' command lines, found {commands:?}");
    let dir = tempfile::tempdir().unwrap();
    scratch_repository(dir.path());
    let mut failed = Vec::new();
    for (at, command) in &commands {
        let t0 = Instant::now();
        let result = run_shell(dir.path(), command, Duration::from_secs(180));
        eprintln!("docs: {at}: {command} ({:.1} s)", t0.elapsed().as_secs_f64());
        if let Err(why) = result {
            failed.push(format!("{at}: `{command}` {why}"));
        }
    }
    assert!(failed.is_empty(), "doc command lines that do not run as written:\n{}", failed.join("\n\n"));
}

/// The subcommands `vigil --help` lists.
fn subcommands() -> Vec<String> {
    let out = crate::common::vigil().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let listed = text.split_once("Commands:").expect("a Commands: section").1;
    let list = listed.split("\n\n").next().unwrap();
    let names: Vec<String> = list.lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    assert!(names.iter().any(|n| n == "run") && names.iter().any(|n| n == "eval"), "{text}");
    names
}

#[test]
fn every_inline_vigil_mention_names_a_real_subcommand_and_flags() {
    let mentions = inline_mentions();
    let mut help = std::collections::HashMap::new();
    let mut failed = Vec::new();
    let subcommands = subcommands();
    for (at, span) in &mentions {
        let words: Vec<&str> = span.split_whitespace().collect();
        let sub = words[1];
        if !subcommands.iter().any(|s| s == sub) {
            // Prose that starts with the name ("vigil writes one line…") is not a command; a
            // short span naming a lower-case word is meant as one.
            if words.len() <= 3 && sub.chars().all(|c| c.is_ascii_lowercase()) {
                failed.push(format!("{at}: `{span}`: `{sub}` is not a vigil subcommand"));
            }
            continue;
        }
        let text = help.entry(sub.to_string()).or_insert_with(|| {
            let out = crate::common::vigil().args([sub, "--help"]).output().unwrap();
            out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        });
        let text = text.as_ref().expect("help of a listed subcommand");
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            if !text
                .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
                .any(|w| w == flag)
            {
                failed.push(format!("{at}: `{span}`: `vigil {sub}` has no `{flag}`"));
            }
        }
    }
    assert!(mentions.len() >= 10, "expected inline mentions, found {mentions:?}");
    assert!(failed.is_empty(), "inline mentions that drifted from the binary:\n{}", failed.join("\n"));
}
