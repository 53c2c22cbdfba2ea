//! Dockerfiles of BuildKit components: every `FROM` checked against `base-images.lock` before
//! anything is built.
//!
//! In: the Dockerfile's text, the platform being built, the component's base and the lock.
//! Out: the stages, each resolved to a pinned base, `scratch` or an earlier stage; or every
//! refusal, each naming the Dockerfile and the line.
//!
//! A `FROM` may name:
//! - `scratch`;
//! - an earlier stage (`FROM builder`, after `FROM ... AS builder`);
//! - `${STELLAOPS_BASE}` (or `$STELLAOPS_BASE`): the pipeline passes the component's pinned
//!   base for the platform being built, by digest, as this build argument;
//! - `${STELLAOPS_BASE_<NAME>}` for a base the recipe lists in `build-bases` (NAME upper-cased,
//!   `-` and `.` as `_`): that base, pinned for the platform, for build stages; like
//!   `STELLAOPS_BASE` it must be declared by an `ARG` before the first `FROM`;
//! - `host/name@sha256:<hex>` where the digest is pinned in the lock for this platform.
//!
//! Refused: a tag or a bare name, a digest the lock does not pin, a digest the lock pins for
//! another platform, any other variable (a build argument could point anywhere),
//! `--platform` (the pipeline builds each platform on its own), a `# syntax=` directive (it
//! pulls a frontend image that nothing pins), and a last stage that does not stand on the
//! component's own base (the image is rebuilt as that base's layers plus the difference).
//!
//! The config instructions (`USER`, `WORKDIR`, `ENV`, `EXPOSE`, `ENTRYPOINT`, `CMD`, `LABEL`,
//! `STOPSIGNAL`, `HEALTHCHECK`, `VOLUME`, `SHELL`) are carried: the BuildKit backend reads the
//! config the engine gives the Dockerfile. `ONBUILD` and `MAINTAINER` are refused (line, hint).

use std::fmt;

use schema::config::LOCK_FILE;
use schema::files::BaseLock;
use schema::model::{Digest, Platform};

/// The build argument carrying the component's pinned base reference.
pub const BASE_ARG: &str = "STELLAOPS_BASE";

/// The build argument carrying the build base `name` (`recipe.build-bases`):
/// `STELLAOPS_BASE_<NAME>`, upper case, `-` and `.` as `_`.
pub fn build_base_arg(name: &str) -> String {
    let suffix: String = name.chars().map(|c| if c == '-' || c == '.' { '_' } else { c.to_ascii_uppercase() }).collect();
    format!("{BASE_ARG}_{suffix}")
}

/// Instructions whose effect the image cannot carry, with what to write instead. The image
/// config is the one the engine gives the Dockerfile (`USER`, `WORKDIR`, `ENV`, `EXPOSE`,
/// `ENTRYPOINT`, `CMD`, `LABEL`, `STOPSIGNAL`, `HEALTHCHECK`, `VOLUME`, `SHELL`, read back
/// after the build) merged with the recipe; these two set something else, so they are
/// refused rather than dropped.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "ONBUILD",
        "registers a trigger for images built FROM this one; the pipeline's images are not bases",
        "run the step in this Dockerfile, or drop it",
    ),
    (
        "MAINTAINER",
        "is deprecated and sets the config's `Author`, which the image does not carry",
        "write `LABEL org.opencontainers.image.authors=\"...\"` instead",
    ),
];

/// One refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The Dockerfile, as the bundle names it (`components/x/Dockerfile`).
    pub file: String,
    /// 1-based line of the instruction.
    pub line: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` line {}: {}", self.file, self.line, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// What a stage stands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// `${STELLAOPS_BASE}`: the component's base.
    ComponentBase,
    /// `${STELLAOPS_BASE_<NAME>}`: a base of `recipe.build-bases`, by name.
    BuildBase(String),
    /// A literal reference whose digest the lock pins for this platform (base `base`).
    Pinned {
        base: String,
        digest: Digest,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    pub name: Option<String>,
    pub from: Origin,
}

/// An instruction (continuations joined) and the line it starts on.
type Instruction = (usize, String);
/// A parser directive (`# key=value` at the top): line, key, value.
type Directive = (usize, String, String);

/// Instructions with the line each starts on (comments dropped), and the parser directives.
fn instructions(text: &str) -> (Vec<Instruction>, Vec<Directive>) {
    let mut out = Vec::new();
    let mut directives = Vec::new();
    let mut in_directives = true;
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if current.is_none() && line.starts_with('#') {
            if in_directives {
                if let Some((k, v)) = line[1..].split_once('=') {
                    let k = k.trim().to_ascii_lowercase();
                    if !k.is_empty() && !k.contains(' ') {
                        directives.push((i + 1, k, v.trim().to_owned()));
                        continue;
                    }
                }
            }
            in_directives = false;
            continue;
        }
        if line.is_empty() {
            in_directives = false;
            if current.is_none() {
                continue;
            }
        }
        in_directives = false;
        if line.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        let (start, mut acc) = current.take().unwrap_or((i + 1, String::new()));
        match line.strip_suffix('\\') {
            Some(body) => {
                acc.push_str(body);
                acc.push(' ');
                current = Some((start, acc));
            }
            None => {
                acc.push_str(line);
                out.push((start, acc));
            }
        }
    }
    if let Some(c) = current {
        out.push(c);
    }
    (out, directives)
}

/// Checks every `FROM` of `text` (the Dockerfile `file`) for `platform`; `base` is the
/// component's base in the lock, `build_bases` the recipe's `build-bases`.
pub fn check(
    file: &str,
    text: &str,
    platform: Platform,
    base: &str,
    build_bases: &[String],
    lock: &BaseLock,
) -> Result<Vec<Stage>, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem =
        |line: usize, message: String, hint: Option<&str>| Problem { file: file.to_owned(), line, message, hint: hint.map(str::to_owned) };
    let (instructions, directives) = instructions(text);
    for (line, key, value) in directives {
        if key == "syntax" {
            problems.push(problem(
                line,
                format!("the `# syntax={value}` directive pulls a frontend image that nothing pins"),
                Some("remove it: the builder's own Dockerfile frontend is used"),
            ));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    // `${STELLAOPS_BASE}` (and `${STELLAOPS_BASE_<NAME>}`) in a FROM expands only if an ARG
    // before the first FROM declares it.
    let mut declared: Vec<String> = Vec::new();
    for (line, ins) in &instructions {
        let mut words = ins.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        if keyword.eq_ignore_ascii_case("ARG") && stages.is_empty() {
            declared.extend(words.filter_map(|a| a.split('=').next()).map(str::to_owned));
            continue;
        }
        if let Some((k, why, hint)) = REFUSED.iter().find(|(k, _, _)| keyword.eq_ignore_ascii_case(k)) {
            problems.push(problem(*line, format!("`{k}` {why}"), Some(hint)));
            continue;
        }
        if !keyword.eq_ignore_ascii_case("FROM") {
            continue;
        }
        let args: Vec<&str> = words.collect();
        let (flags, rest): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| a.starts_with("--"));
        if let Some(flag) = flags.first() {
            problems.push(problem(
                *line,
                format!("`FROM {flag}` is not allowed"),
                Some("the pipeline builds each platform on its own and passes the pinned base for it; drop the flag"),
            ));
        }
        let (image, name) = match rest.as_slice() {
            [image] => (*image, None),
            [image, as_, name] if as_.eq_ignore_ascii_case("AS") => (*image, Some(*name)),
            _ => {
                problems.push(problem(*line, format!("cannot read `{ins}`"), Some("write `FROM <image> [AS <name>]`")));
                continue;
            }
        };
        let from = if image == "scratch" {
            Some(Origin::Scratch)
        } else if let Some(i) = stages.iter().position(|s| s.name.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(image))) {
            Some(Origin::Stage(i))
        } else if image.contains('$') {
            let var = image.strip_prefix("${").and_then(|v| v.strip_suffix('}')).or_else(|| image.strip_prefix('$'));
            let listed = var.and_then(|v| build_bases.iter().find(|b| build_base_arg(b) == v));
            let pipeline_var = var == Some(BASE_ARG) || listed.is_some();
            if pipeline_var && !declared.iter().any(|d| Some(d.as_str()) == var) {
                let v = var.unwrap_or(BASE_ARG);
                problems.push(problem(
                    *line,
                    format!("`FROM {image}`: `{v}` is not declared before the first `FROM`, so it would expand to nothing"),
                    Some(&format!("add `ARG {v}` before the first `FROM`")),
                ));
                None
            } else if var == Some(BASE_ARG) {
                Some(Origin::ComponentBase)
            } else if let Some(b) = listed {
                Some(Origin::BuildBase(b.clone()))
            } else if let Some(v) = var.filter(|v| v.starts_with(&format!("{BASE_ARG}_"))) {
                let known = lock.bases.iter().find(|b| build_base_arg(&b.name) == v);
                let hint = match known {
                    Some(b) => format!("add `\"{}\"` to the component's `recipe.build-bases` (base `{}` of `{LOCK_FILE}`)", b.name, b.name),
                    None => format!(
                        "no base of `{LOCK_FILE}` is called that: add one there (and run `cargo xtask lock`), then list it in `recipe.build-bases`"
                    ),
                };
                problems.push(problem(
                    *line,
                    format!("`FROM {image}`: `{v}` names no base of the component's `recipe.build-bases`, so the pipeline does not set it"),
                    Some(&hint),
                ));
                None
            } else {
                problems.push(problem(
                    *line,
                    format!("`FROM {image}`: only `${{{BASE_ARG}}}` is set by the pipeline; another build argument could name any image"),
                    Some(&format!("write `FROM ${{{BASE_ARG}}}` (the component's base `{base}`, pinned for {platform}) or a reference by a digest that `{LOCK_FILE}` pins")),
                ));
                None
            }
        } else if let Some((_, digest)) = image.split_once('@') {
            match digest.parse::<Digest>() {
                Err(_) => {
                    problems.push(problem(*line, format!("`{image}`: `{digest}` is not a sha256 digest"), None));
                    None
                }
                Ok(d) => {
                    let here = lock.bases.iter().find(|b| b.platforms.get(&platform).is_some_and(|p| p.digest == d));
                    let elsewhere = lock
                        .bases
                        .iter()
                        .find_map(|b| b.platforms.iter().find(|(_, p)| p.digest == d).map(|(pl, _)| (b.name.clone(), *pl)));
                    match (here, elsewhere) {
                        (Some(b), _) => Some(Origin::Pinned { base: b.name.clone(), digest: d }),
                        (None, Some((b, other))) => {
                            problems.push(problem(
                                *line,
                                format!("`{image}` is pinned in `{LOCK_FILE}` as base `{b}` for {other}, not for {platform}, the platform being built"),
                                Some(&format!("use `FROM ${{{BASE_ARG}}}`, which the pipeline sets to the base pinned for each platform")),
                            ));
                            None
                        }
                        (None, None) => {
                            problems.push(problem(
                                *line,
                                format!("`{image}`: digest `{d}` is not pinned in `{LOCK_FILE}`"),
                                Some(&format!("add the base to `{LOCK_FILE}` (and run `cargo xtask lock`), or use `FROM ${{{BASE_ARG}}}`")),
                            ));
                            None
                        }
                    }
                }
            }
        } else {
            problems.push(problem(
                *line,
                format!("`FROM {image}` is not pinned by digest: a tag or a name can move"),
                Some(&format!("use `FROM ${{{BASE_ARG}}}` (the component's base `{base}` from `{LOCK_FILE}`) or `name@sha256:...` with a digest the lock pins")),
            ));
            None
        };
        stages.push(Stage {
            line: *line,
            name: name.map(str::to_owned),
            // A refused line still counts as a stage so that later names resolve.
            from: from.unwrap_or(Origin::Scratch),
        });
    }
    match stages.last() {
        None => problems.push(problem(1, "has no `FROM` instruction".to_owned(), None)),
        Some(last) if problems.is_empty() => {
            // The image is the component's base plus what the stages add: the last stage must
            // stand on that base, directly or through earlier stages.
            let mut at = last;
            let root = loop {
                match &at.from {
                    Origin::Stage(i) => at = &stages[*i],
                    other => break other,
                }
            };
            let ok = match root {
                Origin::ComponentBase => true,
                Origin::Pinned { base: b, .. } => b == base,
                Origin::BuildBase(_) => false,
                _ => false,
            };
            if !ok {
                problems.push(problem(
                    last.line,
                    format!("the last stage must stand on the component's base `{base}`"),
                    Some(&format!(
                        "write `FROM ${{{BASE_ARG}}}` for the last stage; earlier stages may use other pinned bases, `recipe.build-bases` or `scratch`"
                    )),
                ));
            }
        }
        Some(_) => {}
    }
    if problems.is_empty() {
        Ok(stages)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> BaseLock {
        toml::from_str(&format!(
            "lock-version = 1\n[[base]]\nname = \"busybox\"\nsource = \"registry\"\n[base.platform.\"linux/amd64\"]\ndigest = \"sha256:{a}\"\nreference = \"127.0.0.1:5000/b@sha256:{a}\"\n[base.platform.\"linux/arm64\"]\ndigest = \"sha256:{b}\"\nreference = \"127.0.0.1:5000/b@sha256:{b}\"\n",
            a = "a".repeat(64),
            b = "b".repeat(64)
        ))
        .unwrap()
    }

    fn run(text: &str) -> Result<Vec<Stage>, Vec<Problem>> {
        check("c/Dockerfile", text, Platform::LinuxAmd64, "busybox", &[], &lock())
    }

    /// The lock with a second base, `build-tools.v2`, pinned for both platforms.
    fn lock2() -> BaseLock {
        let mut l = lock();
        let mut b = l.bases[0].clone();
        b.name = "build-tools.v2".to_owned();
        for (i, p) in b.platforms.values_mut().enumerate() {
            p.digest = format!("sha256:{}", ["c", "d"][i].repeat(64)).parse().unwrap();
        }
        l.bases.push(b);
        l
    }

    fn run2(text: &str, build_bases: &[&str]) -> Result<Vec<Stage>, Vec<Problem>> {
        let listed: Vec<String> = build_bases.iter().map(|s| (*s).to_owned()).collect();
        check("c/Dockerfile", text, Platform::LinuxAmd64, "busybox", &listed, &lock2())
    }

    #[test]
    fn build_base_args_are_upper_case_with_underscores() {
        assert_eq!(build_base_arg("build-tools.v2"), "STELLAOPS_BASE_BUILD_TOOLS_V2");
        assert_eq!(build_base_arg("builder"), "STELLAOPS_BASE_BUILDER");
    }

    #[test]
    fn a_listed_build_base_is_accepted_for_build_stages() {
        let text =
            "ARG STELLAOPS_BASE_BUILD_TOOLS_V2\nARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE_BUILD_TOOLS_V2} AS build\nRUN echo hi > /x\n\
                    FROM $STELLAOPS_BASE_BUILD_TOOLS_V2 AS two\nFROM ${STELLAOPS_BASE}\nCOPY --from=build /x /x\n";
        let stages = run2(text, &["build-tools.v2"]).unwrap();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0].from, Origin::BuildBase("build-tools.v2".to_owned()));
        assert_eq!(stages[1].from, Origin::BuildBase("build-tools.v2".to_owned()));
        assert_eq!(stages[2].from, Origin::ComponentBase);
    }

    #[test]
    fn an_unlisted_build_base_is_refused_naming_the_recipe_key() {
        let text = "ARG STELLAOPS_BASE\nARG STELLAOPS_BASE_BUILD_TOOLS_V2\nARG STELLAOPS_BASE_OTHER\n\
                    FROM ${STELLAOPS_BASE_BUILD_TOOLS_V2} AS a\nFROM ${STELLAOPS_BASE_OTHER} AS b\nFROM ${STELLAOPS_BASE}\n";
        let p = run2(text, &[]).unwrap_err();
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!((p[0].line, p[1].line), (4, 5));
        assert!(p[0].message.contains("`STELLAOPS_BASE_BUILD_TOOLS_V2` names no base of the component's `recipe.build-bases`"), "{p:?}");
        assert!(p[0].hint.as_deref().unwrap().contains("add `\"build-tools.v2\"` to the component's `recipe.build-bases`"), "{p:?}");
        assert!(p[1].message.contains("`recipe.build-bases`"), "{p:?}");
        assert!(p[1].hint.as_deref().unwrap().contains("no base of `base-images.lock` is called that"), "{p:?}");
        // Listed, but not declared with ARG before the first FROM.
        let p = run2("ARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE_BUILD_TOOLS_V2} AS a\nFROM ${STELLAOPS_BASE}\n", &["build-tools.v2"])
            .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("`STELLAOPS_BASE_BUILD_TOOLS_V2` is not declared"), "{p:?}");
        assert_eq!(p[0].hint.as_deref(), Some("add `ARG STELLAOPS_BASE_BUILD_TOOLS_V2` before the first `FROM`"));
    }

    #[test]
    fn the_last_stage_may_not_stand_on_a_build_base() {
        let text = "ARG STELLAOPS_BASE_BUILD_TOOLS_V2\nFROM ${STELLAOPS_BASE_BUILD_TOOLS_V2} AS b\nFROM b\n";
        let p = run2(text, &["build-tools.v2"]).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, 3);
        assert!(p[0].message.contains("the last stage must stand on the component's base `busybox`"), "{p:?}");
    }

    #[test]
    fn pinned_forms_are_accepted_with_stages() {
        let a = "a".repeat(64);
        let stages = run(&format!(
            "# a comment\nARG STELLAOPS_BASE\nFROM scratch AS files\nCOPY x /x\nfrom 127.0.0.1:5000/b@sha256:{a} as build\nRUN echo \\\n  hi\nFROM ${{STELLAOPS_BASE}}\nCOPY --from=files /x /x\n"
        ))
        .unwrap();
        assert_eq!(stages.len(), 3);
        assert_eq!(stages[0].from, Origin::Scratch);
        assert_eq!(stages[1].line, 5);
        assert_eq!(stages[2].line, 8);
        assert_eq!(stages[2].from, Origin::ComponentBase);
        let s = run("ARG STELLAOPS_BASE=x\nFROM $STELLAOPS_BASE AS one\nFROM one\n").unwrap();
        assert_eq!(s[1].from, Origin::Stage(0));
    }

    #[test]
    fn every_unpinned_from_is_refused_with_its_line() {
        let b = "b".repeat(64);
        let e = "e".repeat(64);
        let problems = run(&format!(
            "# syntax=docker/dockerfile:1\nARG STELLAOPS_BASE\nFROM busybox:1.36 AS a\nFROM x@sha256:{e} AS b\nFROM \\\n  x@sha256:{b} AS c\nFROM ${{OTHER}}\nFROM --platform=linux/arm64 ${{STELLAOPS_BASE}}\n"
        ))
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 6, "{text:#?}");
        assert!(text[0].contains("line 1") && text[0].contains("syntax"));
        assert!(text[1].contains("line 3") && text[1].contains("not pinned by digest"));
        assert!(text[2].contains("line 4") && text[2].contains("is not pinned in"));
        assert!(text[3].contains("line 5") && text[3].contains("for linux/arm64, not for linux/amd64"));
        assert!(text[4].contains("line 7") && text[4].contains("only `${STELLAOPS_BASE}`"));
        assert!(text[5].contains("line 8") && text[5].contains("--platform"));
        assert!(text.iter().all(|t| t.starts_with("`c/Dockerfile` line ")));
    }

    #[test]
    fn config_instructions_are_accepted_onbuild_and_maintainer_refused_with_line_and_hint() {
        let every = "ARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE}\nUSER 1000:1000\nWORKDIR /srv\nENV A=1 B=2\nEXPOSE 8080/tcp\n\
                     entrypoint [\"/x\"]\nCMD [\"serve\"]\nLABEL a=b\nSTOPSIGNAL SIGTERM\n\
                     HEALTHCHECK --interval=5s CMD [\"/x\", \"health\"]\nVOLUME /data\nSHELL [\"/bin/sh\", \"-c\"]\n";
        assert_eq!(run(every).unwrap().len(), 1);
        let p = run("ARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE}\nEXPOSE 80\nonbuild RUN x\nMAINTAINER me <me@x>\n").unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!((p[0].line, p[1].line), (4, 5));
        assert!(p[0].message.starts_with("`ONBUILD` registers a trigger"), "{p:?}");
        assert!(p[1].message.starts_with("`MAINTAINER` is deprecated and sets the config's `Author`"), "{p:?}");
        assert!(p[1].hint.as_deref().unwrap().contains("LABEL org.opencontainers.image.authors"));
        assert!(p[1].to_string().starts_with("`c/Dockerfile` line 5: "));
    }

    #[test]
    fn the_last_stage_must_stand_on_the_component_base() {
        let p = run("ARG STELLAOPS_BASE\nFROM ${STELLAOPS_BASE} AS b\nFROM scratch\nCOPY --from=b / /\n").unwrap_err();
        assert_eq!(p[0].line, 3, "{p:?}");
        assert!(p[0].message.contains("component's base `busybox`"));
        assert!(run("").unwrap_err()[0].message.contains("no `FROM`"));
        let p = run("FROM ${STELLAOPS_BASE}\n").unwrap_err();
        assert!(p[0].message.contains("not declared"), "{p:?}");
    }
}
