//! Scenario files: a topology, a seed, a duration, a timeline of actions and
//! named assertions (docs/scenarios.md). [`load`] checks a file completely —
//! the topology it names, attack kinds, parameters and filters, nodes, links,
//! option overrides, assertions — so a run never starts from a bad file. Every
//! error names `FILE:LINE:COL`.
//!
//! [`run`] plays a checked scenario on a lab and returns its report.

mod assertions;
mod prom;
mod run;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use assertions::Assertion;
pub use run::{RunOptions, run};

use crate::attack::{AttackSpec, Directory};
use crate::lab::links::{Change, Dir};
use crate::topology::{self, Issue, Source, Topology, TopologyError};

/// Largest scenario file read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most timeline entries (after `every` is expanded) and assertions.
pub const MAX_ENTRIES: usize = 10_000;
/// Longest scenario.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read scenario file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{col}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    /// The topology the scenario names is invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

impl ScenarioError {
    fn from_issue(src: &Source, issue: Issue) -> ScenarioError {
        match src.error(issue) {
            TopologyError::Invalid {
                path,
                line,
                col,
                message,
            } => ScenarioError::Invalid {
                path,
                line,
                col,
                message,
            },
            other => ScenarioError::Topology(other),
        }
    }
}

type Str = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    scenario: Spanned<RawScenario>,
    #[serde(default)]
    options: BTreeMap<Str, Spanned<toml::Table>>,
    #[serde(default)]
    timeline: Vec<Spanned<RawEntry>>,
    #[serde(default, rename = "assert")]
    asserts: Vec<Spanned<assertions::RawAssert>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Str,
    #[serde(default)]
    description: Option<String>,
    /// Another scenario this one repeats with other options (a negative
    /// control): its topology, seed, duration, timeline and assertions.
    extends: Option<Str>,
    topology: Option<Str>,
    seed: Option<Spanned<u64>>,
    duration: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    at: Option<Str>,
    after: Option<Str>,
    every: Option<Str>,
    until: Option<Str>,
    action: Str,
    // attack-start
    name: Option<Str>,
    kind: Option<Str>,
    on: Option<Str>,
    #[serde(rename = "match")]
    filter: Option<Str>,
    count: Option<Spanned<u64>>,
    #[serde(rename = "for")]
    run_for: Option<Str>,
    params: Option<Spanned<toml::Table>>,
    capture: Option<bool>,
    // attack-stop
    attack: Option<Str>,
    // link-*
    a: Option<Str>,
    b: Option<Str>,
    dir: Option<Str>,
    delay: Option<Str>,
    jitter: Option<Str>,
    loss: Option<Str>,
    rate: Option<Str>,
    duplicate: Option<Str>,
    corrupt: Option<Str>,
    reorder: Option<Str>,
    // kill / restart / defence
    node: Option<Str>,
    option: Option<Str>,
    value: Option<Spanned<toml::Value>>,
}

/// What the timeline does at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start an attack; `name` is how `attack-stop` and assertions refer to it.
    AttackStart {
        name: String,
        spec: AttackSpec,
        capture: bool,
    },
    AttackStop {
        name: String,
    },
    LinkSet {
        a: String,
        b: String,
        dir: Dir,
        change: Change,
    },
    LinkDown {
        a: String,
        b: String,
    },
    LinkUp {
        a: String,
        b: String,
    },
    /// SIGKILL the node's agent (its supervisor restarts it).
    Kill {
        node: String,
    },
    /// SIGTERM the node's agent (its supervisor restarts it).
    Restart {
        node: String,
    },
    /// Set one of the node's role options and restart its agent with it.
    Defence {
        node: String,
        option: String,
        value: serde_json::Value,
    },
}

impl Action {
    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            Action::AttackStart { name, spec, .. } => format!(
                "attack {name}: {} on {}{}{}",
                spec.kind,
                spec.on,
                if spec.filter.is_empty() {
                    String::new()
                } else {
                    format!(" matching `{}`", spec.filter)
                },
                spec.count.map_or(String::new(), |c| format!(", count {c}"))
            ),
            Action::AttackStop { name } => format!("stop attack {name}"),
            Action::LinkSet { a, b, change, .. } => format!("link {a} {b} set {change:?}"),
            Action::LinkDown { a, b } => format!("link {a} {b} down"),
            Action::LinkUp { a, b } => format!("link {a} {b} up"),
            Action::Kill { node } => format!("kill agent {node}"),
            Action::Restart { node } => format!("restart agent {node}"),
            Action::Defence {
                node,
                option,
                value,
            } => format!("set {node} option {option} = {value}, restart its agent"),
        }
    }
}

/// One timeline entry: an action at a time from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub at: Duration,
    pub action: Action,
}

/// A checked scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub file: PathBuf,
    pub topology_file: PathBuf,
    /// The topology with the scenario's seed and option overrides applied.
    pub topology: Topology,
    pub seed: u64,
    pub duration: Duration,
    /// In time order (stable: entries at the same time keep file order).
    pub timeline: Vec<Entry>,
    pub assertions: Vec<Assertion>,
}

impl Scenario {
    /// Runs the scenario's lab under another name (so that two runs, or a
    /// run and a lab of the same topology, can coexist).
    pub fn rename_lab(&mut self, name: &str) -> Result<(), String> {
        crate::topology::check_lab_name(name)?;
        self.topology.lab.name = name.to_string();
        Ok(())
    }
}

/// Reads and checks a scenario file; `seed` overrides the file's.
pub fn load(path: &Path, seed: Option<u64>) -> Result<Scenario, ScenarioError> {
    load_nested(path, seed, 0)
}

/// [`load`] for a file `depth` `extends` deep.
fn load_nested(path: &Path, seed: Option<u64>, depth: usize) -> Result<Scenario, ScenarioError> {
    let io = |source| ScenarioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(io(std::io::Error::other(format!(
            "file is {len} bytes; a scenario file may be at most {MAX_FILE_BYTES} bytes"
        ))));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let src = Source { text: &text, path };
    let raw: RawFile = toml::from_str(&text).map_err(|e| {
        ScenarioError::from_issue(
            &src,
            Issue::new(e.span().unwrap_or(0..0), e.message().trim()),
        )
    })?;
    build(&src, raw, seed, depth)
}

fn build(
    src: &Source,
    raw: RawFile,
    seed: Option<u64>,
    depth: usize,
) -> Result<Scenario, ScenarioError> {
    let issue = |span: Range<usize>, m: String| ScenarioError::from_issue(src, Issue::new(span, m));
    let s = raw.scenario.get_ref();
    let dir = src.path.parent().unwrap_or(Path::new("."));
    if let Some(base) = &s.extends {
        return extend(src, &raw, (dir.join(base.get_ref()), base), seed, depth);
    }
    let (Some(topology), Some(duration_text)) = (&s.topology, &s.duration) else {
        return Err(issue(
            raw.scenario.span(),
            "[scenario] needs `topology` and `duration` (or `extends`)".into(),
        ));
    };
    let topology_file = dir.join(topology.get_ref());
    if !topology_file.exists() {
        return Err(issue(
            topology.span(),
            format!(
                "topology file {} not found (paths are relative to the scenario file)",
                topology_file.display()
            ),
        ));
    }
    let mut topo = topology::load(&topology_file)?;
    let seed = seed
        .or(s.seed.as_ref().map(|v| *v.get_ref()))
        .unwrap_or(topo.lab.seed);
    topo.lab.seed = seed;
    let duration = duration(duration_text.get_ref()).map_err(|m| issue(duration_text.span(), m))?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(issue(
            duration_text.span(),
            "expected a duration from 1s to 24h".into(),
        ));
    }
    for (node, table) in &raw.options {
        for (key, value) in table.get_ref() {
            set_option(&mut topo, node.get_ref(), key, value.clone())
                .map_err(|m| issue(node.span(), m))?;
        }
    }
    let mut cx = Cx {
        src,
        topo: &topo,
        directory: Directory::from_plan(&crate::plan::build(&topo)),
        attacks: Vec::new(),
        duration,
        seed,
    };
    let mut timeline = Vec::new();
    let mut previous = Duration::ZERO;
    for entry in &raw.timeline {
        cx.entry(entry, &mut previous, &mut timeline)?;
        if timeline.len() > MAX_ENTRIES {
            return Err(issue(
                entry.span(),
                format!("more than {MAX_ENTRIES} timeline entries"),
            ));
        }
    }
    timeline.sort_by_key(|e| e.at);
    let mut assertions: Vec<Assertion> = Vec::new();
    for a in &raw.asserts {
        let checked = assertions::check(a, &cx).map_err(|(span, m)| issue(span, m))?;
        if assertions.iter().any(|x| x.name == checked.name) {
            return Err(issue(
                a.span(),
                format!("a second assertion named `{}`", checked.name),
            ));
        }
        assertions.push(checked);
    }
    if assertions.is_empty() {
        return Err(issue(
            raw.scenario.span(),
            "a scenario needs at least one [[assert]]: a run without assertions cannot fail".into(),
        ));
    }
    Ok(Scenario {
        name: s.name.get_ref().clone(),
        description: s.description.clone().unwrap_or_default(),
        file: src.path.to_path_buf(),
        topology_file,
        topology: topo,
        seed,
        duration,
        timeline,
        assertions,
    })
}

/// Most scenarios one `extends` chain may name.
const MAX_EXTENDS: usize = 8;

/// A scenario that repeats `base` with its own name, description and
/// option overrides (applied after the base's).
fn extend(
    src: &Source,
    raw: &RawFile,
    (base_path, base): (PathBuf, &Str),
    seed: Option<u64>,
    depth: usize,
) -> Result<Scenario, ScenarioError> {
    let issue = |span: Range<usize>, m: String| ScenarioError::from_issue(src, Issue::new(span, m));
    let s = raw.scenario.get_ref();
    if !raw.timeline.is_empty()
        || !raw.asserts.is_empty()
        || s.topology.is_some()
        || s.duration.is_some()
    {
        return Err(issue(
            raw.scenario.span(),
            "a scenario that `extends` another takes only name, description, seed and [options.NODE]; the rest comes from the base".into(),
        ));
    }
    let loaded = if depth >= MAX_EXTENDS {
        Err(issue(
            base.span(),
            format!("more than {MAX_EXTENDS} scenarios extend one another (a loop?)"),
        ))
    } else if !base_path.exists() {
        Err(issue(
            base.span(),
            format!(
                "scenario {} not found (paths are relative to this file)",
                base_path.display()
            ),
        ))
    } else {
        load_nested(
            &base_path,
            seed.or(s.seed.as_ref().map(|v| *v.get_ref())),
            depth + 1,
        )
    };
    let mut scenario = loaded?;
    for (node, table) in &raw.options {
        for (key, value) in table.get_ref() {
            set_option(&mut scenario.topology, node.get_ref(), key, value.clone())
                .map_err(|m| issue(node.span(), m))?;
        }
    }
    scenario.name = s.name.get_ref().clone();
    scenario.description = s.description.clone().unwrap_or_default();
    scenario.file = src.path.to_path_buf();
    Ok(scenario)
}

/// Sets a node's role option and checks the result with the role.
fn set_option(
    topo: &mut Topology,
    node: &str,
    key: &str,
    value: toml::Value,
) -> Result<(), String> {
    let n = topo
        .nodes
        .iter_mut()
        .find(|n| n.name == node)
        .ok_or_else(|| format!("no node `{node}` in the topology"))?;
    let role = n
        .role
        .clone()
        .ok_or_else(|| format!("node `{node}` has no role, so it has no options"))?;
    let value = serde_json::to_value(&value).map_err(|e| e.to_string())?;
    if !n.options.is_object() {
        n.options = serde_json::Value::Object(Default::default());
    }
    n.options[key] = value;
    crate::agent::Role::parse(&role, &n.options).map_err(|e| format!("{node}.{key}: {e}"))?;
    Ok(())
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("expected a duration such as 10s or 500ms, found `{text}`: {e}"))
}

/// What checking an entry or assertion needs.
pub(crate) struct Cx<'a> {
    src: &'a Source<'a>,
    topo: &'a Topology,
    directory: Directory,
    /// Attack names started so far, in file order.
    attacks: Vec<String>,
    duration: Duration,
    seed: u64,
}

type Err = ScenarioError;

impl Cx<'_> {
    fn issue(&self, span: Range<usize>, m: impl Into<String>) -> Err {
        ScenarioError::from_issue(self.src, Issue::new(span, m))
    }

    fn time(&self, s: &Str) -> Result<Duration, Err> {
        let d = duration(s.get_ref()).map_err(|m| self.issue(s.span(), m))?;
        if d > self.duration {
            return Err(self.issue(
                s.span(),
                format!(
                    "{} is after the end of the scenario ({})",
                    s.get_ref(),
                    humantime::format_duration(self.duration)
                ),
            ));
        }
        Ok(d)
    }

    fn node(&self, s: &Option<Str>, entry: &Spanned<RawEntry>, what: &str) -> Result<String, Err> {
        let s = s
            .as_ref()
            .ok_or_else(|| self.issue(entry.span(), format!("{what} needs `node`")))?;
        if self.topo.node_index(s.get_ref()).is_none() {
            return Err(self.issue(
                s.span(),
                format!("no node `{}` in the topology", s.get_ref()),
            ));
        }
        Ok(s.get_ref().clone())
    }

    fn required<'s>(
        &self,
        s: &'s Option<Str>,
        entry: &Spanned<RawEntry>,
        what: &str,
    ) -> Result<&'s Str, Err> {
        s.as_ref().ok_or_else(|| {
            self.issue(
                entry.span(),
                format!("`{what}` is required for this action"),
            )
        })
    }

    fn entry(
        &mut self,
        entry: &Spanned<RawEntry>,
        previous: &mut Duration,
        out: &mut Vec<Entry>,
    ) -> Result<(), Err> {
        let e = entry.get_ref();
        let at = match (&e.at, &e.after) {
            (Some(at), None) => self.time(at)?,
            (None, Some(after)) => {
                let d = duration(after.get_ref()).map_err(|m| self.issue(after.span(), m))?;
                *previous + d
            }
            (None, None) => {
                return Err(self.issue(
                    entry.span(),
                    "an entry needs `at` (from the start) or `after` (the previous entry)",
                ));
            }
            (Some(_), Some(after)) => {
                return Err(self.issue(after.span(), "give `at` or `after`, not both"));
            }
        };
        if at > self.duration {
            return Err(self.issue(
                entry.span(),
                "this entry falls after the end of the scenario",
            ));
        }
        *previous = at;
        let action = self.action(entry)?;
        match &e.every {
            None => out.push(Entry { at, action }),
            Some(every) => {
                if matches!(action, Action::AttackStart { .. }) {
                    return Err(self.issue(every.span(), "`every` cannot repeat attack-start (an attack repeats with its own count and rate)"));
                }
                let step = duration(every.get_ref()).map_err(|m| self.issue(every.span(), m))?;
                if step < Duration::from_millis(100) {
                    return Err(self.issue(every.span(), "`every` must be at least 100ms"));
                }
                let until = e
                    .until
                    .as_ref()
                    .map(|u| self.time(u))
                    .transpose()?
                    .unwrap_or(self.duration);
                let mut t = at;
                while t <= until {
                    out.push(Entry {
                        at: t,
                        action: action.clone(),
                    });
                    if out.len() > MAX_ENTRIES {
                        return Err(self.issue(
                            every.span(),
                            format!("expands to more than {MAX_ENTRIES} entries"),
                        ));
                    }
                    t += step;
                }
            }
        }
        Ok(())
    }

    fn action(&mut self, entry: &Spanned<RawEntry>) -> Result<Action, Err> {
        let e = entry.get_ref();
        let link_ends = |cx: &Cx| -> Result<(String, String), Err> {
            let a = cx.required(&e.a, entry, "a")?;
            let b = cx.required(&e.b, entry, "b")?;
            for s in [a, b] {
                if cx.topo.node_index(s.get_ref()).is_none() {
                    return Err(cx.issue(
                        s.span(),
                        format!("no node `{}` in the topology", s.get_ref()),
                    ));
                }
            }
            Ok((a.get_ref().clone(), b.get_ref().clone()))
        };
        Ok(match e.action.get_ref().as_str() {
            "attack-start" => {
                let name = self.required(&e.name, entry, "name")?;
                if self.attacks.contains(name.get_ref()) {
                    return Err(self.issue(
                        name.span(),
                        format!("a second attack named `{}`", name.get_ref()),
                    ));
                }
                let kind = self.required(&e.kind, entry, "kind")?;
                let on = self.required(&e.on, entry, "on")?;
                let mut params = BTreeMap::new();
                if let Some(p) = &e.params {
                    for (k, v) in p.get_ref() {
                        let text = match v {
                            toml::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        params.insert(k.clone(), text);
                    }
                }
                let spec = AttackSpec {
                    kind: kind.get_ref().clone(),
                    on: on.get_ref().clone(),
                    filter: e
                        .filter
                        .as_ref()
                        .map(|f| f.get_ref().clone())
                        .unwrap_or_default(),
                    after: Duration::ZERO,
                    duration: e
                        .run_for
                        .as_ref()
                        .map(|d| duration(d.get_ref()).map_err(|m| self.issue(d.span(), m)))
                        .transpose()?,
                    count: e.count.as_ref().map(|c| *c.get_ref()),
                    params,
                    seed: self.seed ^ (self.attacks.len() as u64 + 1),
                };
                self.check_attack(&spec, entry)?;
                self.attacks.push(name.get_ref().clone());
                Action::AttackStart {
                    name: name.get_ref().clone(),
                    spec,
                    capture: e.capture.unwrap_or(false),
                }
            }
            "attack-stop" => {
                let name = self.required(&e.attack, entry, "attack")?;
                if !self.attacks.contains(name.get_ref()) {
                    return Err(self.issue(
                        name.span(),
                        format!(
                            "no attack named `{}` is started before this entry",
                            name.get_ref()
                        ),
                    ));
                }
                Action::AttackStop {
                    name: name.get_ref().clone(),
                }
            }
            "link-set" => {
                let (a, b) = link_ends(self)?;
                let dir = match e.dir.as_ref().map(|d| d.get_ref().as_str()) {
                    None | Some("both") => Dir::Both,
                    Some("a-to-b") => Dir::AToB,
                    Some("b-to-a") => Dir::BToA,
                    Some(other) => {
                        return Err(self.issue(
                            e.dir.as_ref().map_or(entry.span(), |d| d.span()),
                            format!("dir `{other}`: expected a-to-b, b-to-a or both"),
                        ));
                    }
                };
                Action::LinkSet {
                    a,
                    b,
                    dir,
                    change: self.change(e)?,
                }
            }
            "link-down" => {
                let (a, b) = link_ends(self)?;
                Action::LinkDown { a, b }
            }
            "link-up" => {
                let (a, b) = link_ends(self)?;
                Action::LinkUp { a, b }
            }
            "kill" => Action::Kill {
                node: self.agent(entry)?,
            },
            "restart" => Action::Restart {
                node: self.agent(entry)?,
            },
            "defence" => {
                let node = self.agent(entry)?;
                let option = self.required(&e.option, entry, "option")?;
                let value = e.value.as_ref().ok_or_else(|| {
                    self.issue(entry.span(), "`value` is required for this action")
                })?;
                let mut topo = self.topo.clone();
                set_option(&mut topo, &node, option.get_ref(), value.get_ref().clone())
                    .map_err(|m| self.issue(value.span(), m))?;
                Action::Defence {
                    node,
                    option: option.get_ref().clone(),
                    value: serde_json::to_value(value.get_ref()).unwrap_or_default(),
                }
            }
            other => {
                return Err(self.issue(
                    e.action.span(),
                    format!("unknown action `{other}`; expected attack-start, attack-stop, link-set, link-down, link-up, kill, restart or defence"),
                ));
            }
        })
    }

    fn agent(&self, entry: &Spanned<RawEntry>) -> Result<String, Err> {
        let node = self.node(&entry.get_ref().node, entry, "this action")?;
        let i = self.topo.node_index(&node).unwrap_or_default();
        if self.topo.nodes[i].role.is_none() {
            let span = entry
                .get_ref()
                .node
                .as_ref()
                .map_or(entry.span(), |n| n.span());
            return Err(self.issue(
                span,
                format!("node `{node}` runs no agent (it has no role)"),
            ));
        }
        Ok(node)
    }

    fn check_attack(&self, spec: &AttackSpec, entry: &Spanned<RawEntry>) -> Result<(), Err> {
        let e = entry.get_ref();
        let net = spec.network();
        let on_span = e.on.as_ref().map_or(entry.span(), |o| o.span());
        let known = self.topo.segments.iter().any(|s| s.name == net)
            || self.topo.links.iter().any(|l| l.name == net);
        if !known {
            return Err(self.issue(on_span, format!("no segment or link named `{net}`")));
        }
        if let Err(err) = spec.arm(&self.directory) {
            use crate::attack::AttackError;
            return Err(match (&err, &e.filter) {
                (AttackError::Filter(m), Some(f)) => {
                    // The filter's own position, inside the TOML string.
                    let (line, col) = self.src.line_col(f.span().start);
                    let col = if m.line == 1 { col + m.col } else { m.col };
                    ScenarioError::Invalid {
                        path: self.src.path.to_path_buf(),
                        line: line + m.line - 1,
                        col,
                        message: format!("match: {}", m.message),
                    }
                }
                (AttackError::Param { .. }, _) => self.issue(
                    e.params.as_ref().map_or(entry.span(), |p| p.span()),
                    err.to_string(),
                ),
                (AttackError::UnknownKind { .. }, _) => self.issue(
                    e.kind.as_ref().map_or(entry.span(), |k| k.span()),
                    err.to_string(),
                ),
                _ => self.issue(on_span, err.to_string()),
            });
        }
        Ok(())
    }

    fn change(&self, e: &RawEntry) -> Result<Change, Err> {
        use crate::emulation::{parse_duration, parse_percent, parse_rate};
        let mut c = Change::default();
        if let Some(s) = e.delay.as_ref() {
            c.delay_ns =
                Some(parse_duration(s.get_ref()).map_err(|m| self.issue(s.span(), m.to_string()))?);
        }
        if let Some(s) = e.jitter.as_ref() {
            c.jitter_ns =
                Some(parse_duration(s.get_ref()).map_err(|m| self.issue(s.span(), m.to_string()))?);
        }
        for (field, slot) in [
            (&e.loss, &mut c.loss),
            (&e.duplicate, &mut c.duplicate),
            (&e.corrupt, &mut c.corrupt),
            (&e.reorder, &mut c.reorder),
        ] {
            if let Some(s) = field {
                *slot = Some(
                    parse_percent(s.get_ref()).map_err(|m| self.issue(s.span(), m.to_string()))?,
                );
            }
        }
        if let Some(s) = e.rate.as_ref() {
            c.rate_bps =
                Some(parse_rate(s.get_ref()).map_err(|m| self.issue(s.span(), m.to_string()))?);
        }
        Ok(c)
    }
}
