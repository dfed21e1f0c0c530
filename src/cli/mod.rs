//! Command-line interface: subcommands, one-line errors, JSON on request.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "testbed", version, about = "Network-emulation testbed for connected-vehicle and IoT security", long_about = None)]
#[command(after_help = "Example:\n  sudo testbed up topologies/city.toml && testbed status city")]
pub struct Cli {
    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate a topology file and print a summary; changes nothing.
    #[command(after_help = "Example:\n  testbed check topologies/city.toml")]
    Check {
        file: PathBuf,
        /// Print the validated topology as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a lab from a topology file (namespaces, bridges, links, addresses, routes).
    #[command(
        after_help = "Examples:\n  sudo testbed up topologies/city.toml --dry-run\n  sudo testbed up topologies/city.toml --keylog keys.log --metrics 127.0.0.1:9464"
    )]
    Up {
        file: PathBuf,
        /// Print the plan and change nothing (no root needed).
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// The lab's output folder: events.jsonl, logs/NODE.log, results
        /// [default: testbed-out/LAB]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Append the agents' TLS secrets to this file (NSS key log format),
        /// so Wireshark and tshark decrypt captured QUIC.
        #[arg(long)]
        keylog: Option<PathBuf>,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Show the typed events of a lab's agents (events.jsonl), or follow them live.
    #[command(
        after_help = "Examples:\n  testbed events city --follow\n  testbed events city --node controller --kind input-rejected --json"
    )]
    Events {
        lab: String,
        /// Keep printing new events as they arrive (Ctrl-C ends).
        #[arg(short, long)]
        follow: bool,
        /// Only events of this node.
        #[arg(long)]
        node: Option<String>,
        /// Only events of this kind (e.g. agent-exited, input-rejected).
        #[arg(long)]
        kind: Option<String>,
        /// Print the stored JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print one node's agent log (stdout and stderr of its agent).
    #[command(
        after_help = "Examples:\n  testbed logs city controller\n  testbed logs city s-temp --follow"
    )]
    Logs {
        lab: String,
        node: String,
        /// Keep printing new lines as they arrive (Ctrl-C ends).
        #[arg(short, long)]
        follow: bool,
    },
    /// Show labs, or one lab's nodes, segments, links, addresses and backend.
    #[command(after_help = "Examples:\n  testbed status\n  testbed status city --json")]
    Status {
        lab: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a node (its network, with lab names in /etc/hosts).
    #[command(after_help = "Example:\n  sudo testbed exec city v001 -- ping -c3 rsu1")]
    Exec {
        lab: String,
        node: String,
        #[arg(required = true, last = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Open an interactive shell inside a node.
    #[command(after_help = "Example:\n  sudo testbed shell city v001")]
    Shell { lab: String, node: String },
    /// Capture node interfaces into one pcapng (one interface block per `node:iface`).
    #[command(
        after_help = "Examples:\n  sudo testbed capture city rsu1 v001 -w out.pcapng --duration 10s\n  sudo testbed capture city rsu1:eth0 -w - | wireshark -k -i -"
    )]
    Capture {
        lab: String,
        /// `NODE` (all its interfaces) or `NODE:IFACE`.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Output file, or `-` for standard output.
        #[arg(short = 'w', long = "write")]
        write: PathBuf,
        /// Stop after this many packets in total.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Stop after this long (e.g. 10s, 1m).
        #[arg(short = 'd', long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Show, change, cut or restore the link between two nodes of a running lab.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Start, list and stop attacks on a running lab's links; list the attack kinds.
    #[command(
        after_help = "Examples:\n  testbed attack list-kinds\n  sudo testbed attack city start replay --on iot-lan --match 'udp port 4434' --after 5s --count 50\n  sudo testbed attack city start tamper --on iot-lan:controller --param offset=20 --capture tamper.pcapng\n  sudo testbed attack city list\n  sudo testbed attack city stop 1"
    )]
    Attack(AttackArgs),
    /// Run a scenario: bring its lab up, play the timeline, check the assertions, write reports.
    #[command(
        after_help = "Examples:\n  sudo testbed run scenarios/cps-replay.toml --report-dir out/\n  sudo testbed run scenarios/cps-baseline.toml --seed 7 --report-dir out/\n  sudo testbed run scenarios/cps-replay.toml --lab city   # on a lab that is already up\n\nExit status: 0 iff every assertion held."
    )]
    Run {
        scenario: PathBuf,
        /// Where report.json, junit.xml, report.html, captures and the lab's
        /// outputs go.
        #[arg(long, default_value = "testbed-report")]
        report_dir: PathBuf,
        /// Use this running lab instead of bringing the scenario's topology up
        /// (and leave it up afterwards).
        #[arg(long)]
        lab: Option<String>,
        /// Override the scenario's seed (reproduces a run).
        #[arg(long)]
        seed: Option<u64>,
        /// Bring the lab up under this name instead of the topology's.
        #[arg(long, conflicts_with = "lab")]
        name: Option<String>,
        /// Also print the report as JSON on standard output.
        #[arg(long)]
        json: bool,
    },
    /// Tear a lab down: processes, namespaces, interfaces, state.
    #[command(after_help = "Example:\n  sudo testbed down city")]
    Down { lab: String },
    /// Remove leftovers after a crash; only what testbed created.
    #[command(after_help = "Examples:\n  sudo testbed clean city\n  sudo testbed clean --all")]
    Clean {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        lab: Option<String>,
        /// Every lab's leftovers.
        #[arg(long)]
        all: bool,
    },
    /// Internal: the lab's supervisor (started by `up` in the lab's namespace).
    #[command(
        hide = true,
        after_help = "Started by `testbed up`; not for direct use."
    )]
    Supervise { lab: String },
    /// Internal: the lab's userspace engine (started by its supervisor).
    #[command(
        hide = true,
        after_help = "Started by the lab's supervisor; not for direct use."
    )]
    Engine { lab: String },
}

#[derive(Subcommand)]
pub enum LinkCommand {
    /// Impairments in force (read back from netem or the engine) and counters.
    #[command(
        after_help = "Examples:\n  testbed link show city\n  sudo testbed link show city v001 rsu1 --json"
    )]
    Show {
        lab: String,
        /// Only the link between these two nodes.
        #[arg(num_args = 2, value_names = ["A", "B"])]
        nodes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change impairments in place; unspecified values stay as they are.
    #[command(
        after_help = "Example:\n  sudo testbed link set city v001 rsu1 --delay 80ms --loss 5%"
    )]
    Set {
        lab: String,
        a: String,
        b: String,
        /// Which direction: frames a sends, frames b sends, or both.
        #[arg(long, value_enum, default_value = "both")]
        dir: DirArg,
        /// Mean one-way delay, e.g. 80ms.
        #[arg(long)]
        delay: Option<String>,
        /// Spread of the delay (with the profile's distribution), e.g. 5ms.
        #[arg(long)]
        jitter: Option<String>,
        /// Random loss, e.g. 5% (replaces any Gilbert-Elliott model).
        #[arg(long)]
        loss: Option<String>,
        /// Chance a frame is sent twice, e.g. 1%.
        #[arg(long)]
        duplicate: Option<String>,
        /// Chance one bit of a frame is flipped, e.g. 0.1%.
        #[arg(long)]
        corrupt: Option<String>,
        /// Chance a frame skips the delay and overtakes the queue, e.g. 10%.
        #[arg(long)]
        reorder: Option<String>,
        /// Serialisation rate, e.g. 10mbit.
        #[arg(long)]
        rate: Option<String>,
        /// Queue limit in packets.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Cut the link (carrier down on both ends), not 100 % loss.
    #[command(after_help = "Example:\n  sudo testbed link down city v001 rsu1")]
    Down { lab: String, a: String, b: String },
    /// Restore a link cut with `link down`.
    #[command(after_help = "Example:\n  sudo testbed link up city v001 rsu1")]
    Up { lab: String, a: String, b: String },
}

#[derive(clap::Args)]
#[command(subcommand_precedence_over_arg = true)]
pub struct AttackArgs {
    /// The lab (every action but list-kinds needs one).
    pub lab: Option<String>,
    #[command(subcommand)]
    pub action: AttackAction,
}

#[derive(Subcommand)]
pub enum AttackAction {
    /// The attack kinds, what they do and their parameters.
    #[command(after_help = "Example:\n  testbed attack list-kinds")]
    ListKinds,
    /// Start an attack; prints its id.
    #[command(
        after_help = "Examples:\n  sudo testbed attack city start drop --on iot-lan --match 'udp and src node s-temp' --param probability=0.5\n  sudo testbed attack city start replay --on iot-lan --match 'udp dst port 4434' --after 5s --count 50 --param after=2s"
    )]
    Start {
        /// An attack kind (see `testbed attack list-kinds`).
        kind: String,
        /// A segment (frames its members send), SEGMENT:NODE (one member's
        /// port, both directions) or a link (both directions).
        #[arg(long)]
        on: String,
        /// Which frames (the match language, docs/attacks.md); all by default.
        #[arg(long = "match", default_value = "")]
        filter: String,
        /// Start after this long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        after: std::time::Duration,
        /// Stop by itself after running this long.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Act on at most this many frames (inject/flood: send this many).
        #[arg(long)]
        count: Option<u64>,
        /// A parameter of the kind, NAME=VALUE (repeatable).
        #[arg(short, long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Seed of the attack's random choices.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Write the frames the attack received and sent to this pcapng.
        #[arg(long)]
        capture: Option<PathBuf>,
    },
    /// The attacks started on the lab, with counters.
    #[command(
        after_help = "Examples:\n  sudo testbed attack city list\n  sudo testbed attack city list --json"
    )]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Stop an attack (within 20 ms).
    #[command(after_help = "Example:\n  sudo testbed attack city stop 1")]
    Stop { id: u64 },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DirArg {
    #[value(name = "a-to-b")]
    AToB,
    #[value(name = "b-to-a")]
    BToA,
    Both,
}

pub fn main() -> ExitCode {
    // SAFETY: called first thing, before any thread exists; restores the
    // default action so `testbed status | head` ends quietly like other
    // tools instead of failing on a broken pipe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message already includes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
