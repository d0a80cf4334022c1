//! The console: commands a technician types on a serial line (picocom,
//! minicom) or a script sends, executed against the running decide stage, and
//! the replies. See `docs/serial-protocol.md`.
//!
//! ```text
//! transport thread (serial I/O, MQTT)          decide thread
//!   bytes ─▶ LineReader ─▶ parse ─▶ Request ──▶ Console::handle(decider) ─▶ reply ─▶ ReplyTo
//!                           └─ bad line: error reply straight back on the transport
//! ```
//! A transport parses lines into [`Command`]s on its own thread and sends each
//! as a [`Request`], carrying the way back ([`ReplyTo`]), into the channel made
//! by [`Console::new`]. The decide loop runs requests between two frames
//! ([`crate::pipeline::Control`]), so a threshold change takes effect on the
//! next frame decided and never races a decision. Any number of transports can
//! feed one console; none of them is known to the pipeline.

pub mod command;
pub mod line;
pub mod reply;

pub use command::{Command, HELP, MAX_LINE, MAX_SCORES_SHOWN, MAX_THRESHOLDS_SHOWN, parse};
pub use line::LineReader;
pub use reply::{Reply, send_error};

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::decide::{Decider, LabelRule};
use crate::pipeline::{Control, RunView};
use crate::protocol::LineFormat;
use crate::thresholds::{self, RuleUpdate};

/// What `get thresholds` lists: every label's rule, or with more than
/// [`MAX_THRESHOLDS_SHOWN`] labels, the most common rule once (`common`) and the labels whose
/// rule differs from it (`shown`, at most [`MAX_THRESHOLDS_SHOWN`]; `not_shown` more differ).
#[derive(Debug, PartialEq)]
pub struct ThresholdListing {
    /// Labels listed with their own rule, by index.
    pub shown: Vec<usize>,
    /// Labels whose rule differs from `common` but that did not fit.
    pub not_shown: usize,
    /// The rule of every label not listed (and not counted in `not_shown`).
    pub common: Option<LabelRule>,
}

impl ThresholdListing {
    /// The listing of `rules`.
    pub fn of(rules: &[LabelRule]) -> ThresholdListing {
        if rules.len() <= MAX_THRESHOLDS_SHOWN {
            return ThresholdListing { shown: (0..rules.len()).collect(), not_shown: 0, common: None };
        }
        // The most common rule, not the first label's: a technician who changed the first
        // label's thresholds would otherwise see every other label listed as different.
        let mut counts: Vec<(LabelRule, usize)> = Vec::new();
        for rule in rules {
            match counts.iter_mut().find(|(r, _)| r == rule) {
                Some((_, n)) => *n += 1,
                None => counts.push((*rule, 1)),
            }
        }
        // The first of the most frequent, so that a tie lists the same way every time.
        let common = counts.iter().fold(counts[0], |best, c| if c.1 > best.1 { *c } else { best }).0;
        let differ: Vec<usize> = (0..rules.len()).filter(|&i| rules[i] != common).collect();
        let not_shown = differ.len().saturating_sub(MAX_THRESHOLDS_SHOWN);
        ThresholdListing {
            shown: differ.into_iter().take(MAX_THRESHOLDS_SHOWN).collect(),
            not_shown,
            common: Some(common),
        }
    }
}

/// Where a command's replies go: the serial line it came from, an MQTT reply topic.
pub trait ReplyTo: Send + Sync {
    /// The line format replies use there.
    fn format(&self) -> LineFormat;
    /// Queue one finished line; `droppable` lines (streamed scores) may be
    /// dropped first when the transport cannot keep up. Must not block.
    fn send(&self, line: Vec<u8>, droppable: bool);
}

/// A parsed command and the way back to whoever sent it.
pub struct Request {
    /// The command.
    pub command: Command,
    /// Where its replies go.
    pub reply_to: Arc<dyn ReplyTo>,
}

/// Requests a console holds before the decide thread takes them; a transport
/// that outruns it waits (commands are typed by people, or sent by scripts that wait for replies).
pub const QUEUE: usize = 16;

/// The console's state on the decide thread: who watches scores, which labels'
/// thresholds were changed (what `save` writes), and where `save` writes.
pub struct Console {
    requests: Receiver<Request>,
    /// Transports that asked for `watch on`.
    watchers: Vec<Arc<dyn ReplyTo>>,
    /// Labels whose thresholds were changed here.
    changed: Vec<bool>,
    /// The config's `[model] thresholds` file, if it names one.
    thresholds_file: Option<PathBuf>,
    /// Scratch for `scores` and `watch`.
    shown: Vec<(usize, f32)>,
}

impl Console {
    /// A console for a model with `labels` labels; `save` writes into
    /// `thresholds_file`. The sender is for transports (clone it for each).
    pub fn new(labels: usize, thresholds_file: Option<PathBuf>) -> (Console, Sender<Request>) {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let console = Console {
            requests: rx,
            watchers: Vec::new(),
            changed: vec![false; labels],
            thresholds_file,
            shown: Vec::with_capacity(labels.min(MAX_SCORES_SHOWN + 1)),
        };
        (console, tx)
    }

    /// `label`'s thresholds were set from the console before a reload and carried over:
    /// they count as changed here, so `save` writes them.
    pub fn carried_over(&mut self, label: usize) {
        self.changed[label] = true;
    }

    fn reply(
        &mut self,
        request: &Request,
        decider: &mut Decider,
        run: &RunView<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let mut ok = |fields: &mut dyn FnMut(&mut Reply<'_>)| {
            let mut r = Reply::new(out, request.reply_to.format(), request.command.name(), true);
            fields(&mut r);
            r.finish();
        };
        match &request.command {
            Command::Help => ok(&mut |r| {
                for c in HELP.split(';') {
                    r.field(format_args!("{c}"));
                }
            }),
            Command::Version => ok(&mut |r| {
                r.field(format_args!("vigil {}", env!("CARGO_PKG_VERSION")));
            }),
            Command::Status => {
                let s = run.status;
                let on = s.labels_on.join(";");
                ok(&mut |r| {
                    r.field(format_args!("uptime_s={:.0}", s.uptime_s))
                        .field(format_args!("frames={}", s.frames))
                        .field(format_args!("fps={:.1}", s.fps))
                        .field(format_args!("infer_ms_p50={:.1}", s.infer_ms_p50))
                        .field(format_args!("infer_ms_p99={:.1}", s.infer_ms_p99))
                        .field(format_args!("dropped={}", s.dropped))
                        .field(format_args!("source={}", s.source))
                        .field(format_args!("outages={}", s.outages))
                        .field(format_args!("labels_on={on}"));
                    // Only what the board reports.
                    if let Some(t) = s.soc_temp_c {
                        r.field(format_args!("soc_temp_c={t:.1}"));
                    }
                    if let Some(f) = s.throttled {
                        r.field(format_args!("throttled=0x{f:x}"));
                    }
                })
            }
            Command::Scores => {
                shown_labels(decider.states().iter().map(|s| s.last_score), &mut self.shown);
                let (shown, labels, seq) = (&self.shown, decider.labels(), run.next_seq);
                ok(&mut |r| {
                    r.field(format_args!("seq={}", seq.saturating_sub(1)));
                    for &(i, score) in shown {
                        r.field(format_args!("{}={score:.4}", labels[i]));
                    }
                })
            }
            Command::Watch(on) => {
                self.watchers.retain(|w| !Arc::ptr_eq(w, &request.reply_to));
                if *on {
                    self.watchers.push(Arc::clone(&request.reply_to));
                }
                ok(&mut |r| {
                    r.field(format_args!("{}", if *on { "on" } else { "off" }));
                })
            }
            Command::GetThresholds => {
                // Many labels (ImageNet's 1000) would take seconds at 9600 baud: list those whose
                // rule differs from the most common one, then the common rule once.
                let (rules, labels) = (decider.rules(), decider.labels());
                let listing = ThresholdListing::of(rules);
                ok(&mut |r| {
                    for &i in &listing.shown {
                        r.field(format_args!("{}:on={}:off={}", labels[i], rules[i].on, rules[i].off));
                    }
                    if listing.not_shown > 0 {
                        r.field(format_args!("not_shown={}", listing.not_shown));
                    }
                    if let Some(c) = listing.common {
                        r.field(format_args!("others:on={}:off={}", c.on, c.off));
                    }
                })
            }
            Command::SetThreshold { label, on, off } => {
                let (index, rule) = set_threshold(decider, label, *on, *off)?;
                self.changed[index] = true;
                let name = &decider.labels()[index];
                let seq = run.next_seq;
                log::info!("console: {name} thresholds set to on={} off={} from frame {seq}", rule.on, rule.off);
                ok(&mut |r| {
                    r.field(format_args!("{name}"))
                        .field(format_args!("on={}", rule.on))
                        .field(format_args!("off={}", rule.off))
                        .field(format_args!("from_seq={seq}"));
                })
            }
            Command::Save => {
                let (path, n) = self.save(decider)?;
                ok(&mut |r| {
                    r.field(format_args!("{}", path.display())).field(format_args!("labels={n}"));
                })
            }
        }
        Ok(())
    }

    /// `save`: write the labels changed here into the thresholds file; returns it and how many.
    fn save(&self, decider: &Decider) -> Result<(&PathBuf, usize), String> {
        let Some(path) = &self.thresholds_file else {
            return Err("no thresholds file: set `thresholds` in the config's [model]".into());
        };
        let updates: Vec<RuleUpdate> = (0..self.changed.len())
            .filter(|&i| self.changed[i])
            .map(|i| {
                let rule = decider.rules()[i];
                RuleUpdate { label: decider.labels()[i].clone(), on: rule.on, off: rule.off }
            })
            .collect();
        let comment = "Per-label thresholds saved from vigil's console (`save`).\n\
                       A run config uses it with `[model] thresholds = \"FILE\"`.";
        thresholds::file::save(path, &updates, comment).map_err(|e| e.to_string())?;
        log::info!("console: saved {} threshold change(s) to {}", updates.len(), path.display());
        Ok((path, updates.len()))
    }
}

impl Control for Console {
    fn requests(&self) -> &Receiver<Request> {
        &self.requests
    }

    fn handle(&mut self, request: Request, decider: &mut Decider, run: &RunView<'_>) {
        let mut out = Vec::with_capacity(256);
        match self.reply(&request, decider, run, &mut out) {
            Ok(()) => request.reply_to.send(out, false),
            Err(why) => send_error(&*request.reply_to, request.command.name(), &why),
        }
    }

    /// One `$VGSCR` line per watcher (droppable: a slow line keeps up by skipping).
    fn decided(&mut self, seq: u64, decider: &Decider) {
        if self.watchers.is_empty() {
            return;
        }
        shown_labels(decider.states().iter().map(|s| s.last_score), &mut self.shown);
        for w in &self.watchers {
            let mut out = Vec::with_capacity(32 + 24 * self.shown.len());
            let mut r = Reply::scores(&mut out, w.format(), seq);
            for &(i, score) in &self.shown {
                r.field(format_args!("{}={score:.4}", decider.labels()[i]));
            }
            r.finish();
            w.send(out, true);
        }
    }
}

/// Apply `set threshold` to `decider`; returns the label's index and new rule.
pub fn set_threshold(
    decider: &mut Decider,
    label: &str,
    on: Option<f32>,
    off: Option<f32>,
) -> Result<(usize, LabelRule), String> {
    let index = decider
        .labels()
        .iter()
        .position(|l| l.eq_ignore_ascii_case(label))
        .ok_or_else(|| format!("unknown label `{label}`"))?;
    let mut rule = decider.rules()[index];
    rule.on = on.unwrap_or(rule.on);
    rule.off = off.unwrap_or(rule.off);
    if rule.off > rule.on {
        return Err(format!("off {} above on {}: expected off <= on", rule.off, rule.on));
    }
    decider.set_rule(index, rule);
    Ok((index, rule))
}

/// Indices of the labels `scores`/`watch` show: all when few, else the best [`MAX_SCORES_SHOWN`].
pub fn shown_labels(scores: impl Iterator<Item = f32>, into: &mut Vec<(usize, f32)>) {
    into.clear();
    into.extend(scores.enumerate());
    if into.len() > MAX_SCORES_SHOWN {
        into.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        into.truncate(MAX_SCORES_SHOWN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thresholds::BUILTIN;

    fn rule(on: f32) -> LabelRule {
        LabelRule { on, off: on - 0.1, ..BUILTIN }
    }

    #[test]
    fn the_listing_names_the_most_common_rule_not_the_first_labels() {
        // 1000 labels; the technician changed label 0 and three others.
        let mut rules = vec![rule(0.5); 1000];
        for i in [0, 10, 20, 30] {
            rules[i] = rule(0.9);
        }
        let listing = ThresholdListing::of(&rules);
        assert_eq!(listing, ThresholdListing { shown: vec![0, 10, 20, 30], not_shown: 0, common: Some(rule(0.5)) });

        // More differing labels than fit: the rest are counted, not claimed to have the common rule.
        let mut rules = vec![rule(0.5); 1000];
        for r in rules.iter_mut().take(100) {
            *r = rule(0.7);
        }
        let listing = ThresholdListing::of(&rules);
        assert_eq!(
            (listing.shown.len(), listing.not_shown, listing.common),
            (MAX_THRESHOLDS_SHOWN, 100 - MAX_THRESHOLDS_SHOWN, Some(rule(0.5)))
        );

        // Few labels: every one listed, no common rule.
        let listing = ThresholdListing::of(&rules[..3]);
        assert_eq!(listing, ThresholdListing { shown: vec![0, 1, 2], not_shown: 0, common: None });
    }
}
