//! Drawing progress and results: indicatif bars on a terminal, plain lines on stderr
//! otherwise, JSON lines on stdout with `--json`. stdout carries data only.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pipeline::release::Outcome;
use pipeline::stages::plan::Plan;
use schema::report::{Event, Reporter, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars when stderr is a terminal, plain lines otherwise.
    Auto,
    Json,
    Quiet,
}

pub struct Progress {
    mode: Mode,
    bars: Option<MultiProgress>,
    stages: Mutex<BTreeMap<Stage, ProgressBar>>,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let bars =
            (mode == Mode::Auto && std::io::stderr().is_terminal()).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { mode, bars, stages: Mutex::new(BTreeMap::new()) }
    }

    pub fn finish(&self) {
        if let Ok(stages) = self.stages.lock() {
            for bar in stages.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}

impl Reporter for Progress {
    fn event(&self, event: Event) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => out(&serde_json::to_string(&event).unwrap_or_default()),
            Mode::Auto => match &self.bars {
                None => plain(&event),
                Some(multi) => {
                    let Ok(mut stages) = self.stages.lock() else {
                        return;
                    };
                    match event {
                        Event::StageStarted { stage, jobs } => {
                            let bar = multi.add(ProgressBar::new(jobs as u64));
                            bar.set_style(
                                ProgressStyle::with_template("{prefix:>8.bold} [{bar:30}] {pos}/{len} {wide_msg}")
                                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                                    .progress_chars("=> "),
                            );
                            bar.set_prefix(stage.as_str());
                            bar.enable_steady_tick(std::time::Duration::from_millis(200));
                            stages.insert(stage, bar);
                        }
                        Event::JobStarted { stage, job } => {
                            if let Some(b) = stages.get(&stage) {
                                b.set_message(job);
                            }
                        }
                        Event::JobFinished { stage, job, .. } => {
                            if let Some(b) = stages.get(&stage) {
                                b.inc(1);
                                b.set_message(format!("{job} done"));
                            }
                        }
                        Event::StageFinished { stage } => {
                            if let Some(b) = stages.get(&stage) {
                                b.finish_with_message("done");
                            }
                        }
                        Event::Note { message } => {
                            let _ = multi.println(message);
                        }
                        Event::Step { job, step, status } => {
                            if let Some(b) = stages.get(&schema::report::Stage::Build) {
                                b.set_message(format!("{job}: {step} {status}"));
                            }
                        }
                        Event::Log { .. } => {}
                    }
                }
            },
        }
    }
}

fn plain(event: &Event) {
    match event {
        Event::StageStarted { stage, jobs } => eprint(&format!("[{}] {} job(s)", stage.as_str(), jobs)),
        // A gate can run for minutes (a test suite): say which one is running.
        Event::JobStarted { stage: schema::report::Stage::Gates, job } => eprint(&format!("[gates] {job}: running")),
        Event::JobStarted { .. } => {}
        // A kit has one job per file: too many lines to print.
        Event::JobFinished { stage: Stage::Kit, .. } => {}
        Event::JobFinished { stage, job, detail } => eprint(&format!("[{}] {job}: {detail}", stage.as_str())),
        Event::StageFinished { stage } => eprint(&format!("[{}] done", stage.as_str())),
        Event::Note { message } => eprint(message),
        // BuildKit steps as they finish; their logs only in `--json` (a failure shows the tail).
        Event::Step { job, step, status } if status != "started" => eprint(&format!("[build] {job}: {step} {status}")),
        Event::Step { .. } | Event::Log { .. } => {}
    }
}

/// A line of data on stdout.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
}

/// A message on stderr.
pub fn eprint(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
}

pub fn render_plan(plan: &Plan) -> String {
    let mut s = String::new();
    s += &format!("release   {} on {}\n", plan.version, plan.channel);
    s += &format!(
        "source    {}{} (SOURCE_DATE_EPOCH {} = {})\n",
        &plan.source.commit[..12],
        plan.source.tag.as_deref().map(|t| format!(" tag {t}")).unwrap_or_else(|| " (untagged)".into()),
        plan.source_date_epoch,
        plan.created
    );
    s += &format!(
        "          {} ({})\n",
        plan.source.url.url,
        match plan.source.url.from {
            pipeline::stages::plan::source::UrlFrom::Configured => "`[release] source`",
            pipeline::stages::plan::source::UrlFrom::Origin => "the `origin` remote",
        }
    );
    if !plan.source.dirty.is_empty() {
        s += &format!("warning   {} uncommitted change(s): `release` will refuse; HEAD is what gets built\n", plan.source.dirty.len());
    }
    s += &format!("builder   {} ({})\n", plan.backend, plan.compressor);
    s += &format!("output    {}\n", plan.output.display());
    s += "components\n";
    for c in &plan.components {
        s +=
            &format!("  {:<16} {:<8} {}{}\n", c.name, c.version, c.repository, if c.in_kit { "" } else { "  (not in this channel's kit)" });
        for i in &c.images {
            s += &format!("    {:<12} base {} {}\n", i.platform.as_str(), i.base, i.base_digest);
        }
    }
    s.trim_end().to_owned()
}

pub fn render_outcome(o: &Outcome) -> String {
    let mut s = format!("release {} ({}) written to {}\n", o.version, o.channel, o.output.display());
    for (name, c) in &o.images.components {
        s += &format!("  {:<16} {}@{}\n", name, c.repository, c.index.digest);
    }
    s += &format!("  offline kit      {} ({} bytes)\n", o.kit.path.display(), o.kit.size);
    if !o.cache.is_empty() {
        let cached = o.cache.iter().filter(|c| c.status == "cached").count();
        s += &format!("  build cache      {cached} of {} images reused", o.cache.len());
        if let Some(p) = &o.cache_pruned {
            let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
            if p.entries > 0 {
                s += &format!("; {} least recently used entries removed ({:.0} MiB)", p.entries, mib(p.bytes));
            }
            s += &format!("; {:.0} MiB kept of {:.0} MiB allowed", mib(p.kept_bytes), mib(p.max_bytes));
            if p.leftovers > 0 {
                s += &format!("; {} leftovers of killed runs removed", p.leftovers);
            }
        }
        s += "\n";
    }
    for note in o.cache.iter().filter_map(|c| c.note.as_deref()).chain(o.cache_notes.iter().map(String::as_str)) {
        s += &format!("  note: {note}\n");
    }
    s.trim_end().to_owned()
}
