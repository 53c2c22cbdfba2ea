//! Progress: the library never prints. Stages send [`Event`]s to a [`Reporter`]; the CLI draws
//! them as progress bars on a terminal, plain lines otherwise, or JSON lines for CI.

use serde::Serialize;

/// The stages of a release, in order. Later issues add evidence, sign, publish, manifest, kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Plan,
    Bases,
    Build,
    Index,
    Gates,
    Evidence,
    Templates,
    Sign,
    Manifest,
    Kit,
    Write,
    Publish,
    Compare,
    /// The customer tool built with the release (`pipeline::stages::tool`).
    Tool,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Plan => "plan",
            Stage::Bases => "bases",
            Stage::Build => "build",
            Stage::Index => "index",
            Stage::Gates => "gates",
            Stage::Evidence => "evidence",
            Stage::Templates => "templates",
            Stage::Sign => "sign",
            Stage::Manifest => "manifest",
            Stage::Kit => "kit",
            Stage::Write => "write",
            Stage::Publish => "publish",
            Stage::Compare => "compare",
            Stage::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// A stage begins with `jobs` units of work.
    StageStarted {
        stage: Stage,
        jobs: usize,
    },
    JobStarted {
        stage: Stage,
        job: String,
    },
    /// A unit of work is done; `detail` is what it made (usually a digest).
    JobFinished {
        stage: Stage,
        job: String,
        detail: String,
    },
    StageFinished {
        stage: Stage,
    },
    /// Something a user should read, that is not an error.
    Note {
        message: String,
    },
    /// A step of a BuildKit build (a vertex: `[2/3] RUN make`) changed state: `started`,
    /// `cached`, `done` or `failed`.
    Step {
        job: String,
        step: String,
        status: String,
    },
    /// A line a BuildKit step wrote.
    Log {
        job: String,
        step: String,
        line: String,
    },
}

/// Receives progress. Implementations must be cheap: stages call them from worker threads.
pub trait Reporter: Sync {
    fn event(&self, event: Event);
}

/// Drops every event (library callers that want no progress, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl Reporter for Silent {
    fn event(&self, _: Event) {}
}
