//! The journal: an append-only record, written and synced *before* each
//! namespace is made, of everything `up` creates. Every interface of a lab lives
//! inside one of its namespaces, so namespaces are all the journal must name for
//! `down` and `clean` to remove exactly what testbed made, even after SIGKILL.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// `up` started for this plan.
    Begin {
        lab: String,
        fingerprint: String,
        pid: u32,
    },
    /// About to create this namespace.
    Netns { name: String },
    /// Created it; its nsfs inode identifies it for good.
    Created { name: String, inode: u64 },
    /// `up` finished; the lab is complete.
    Complete,
}

pub struct Journal {
    file: File,
}

impl Journal {
    /// Open (create) the journal for appending.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        Ok(Journal { file })
    }

    /// Append entries and sync them to storage before returning.
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(entries.len() * 48);
        for e in entries {
            serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }
}

/// Read a journal. A torn last line (crash mid-write) is ignored; any other bad
/// line is an error naming the line.
pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let lines: Vec<String> = BufReader::new(file).lines().collect::<io::Result<_>>()?;
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(e) => entries.push(e),
            Err(_) if i + 1 == lines.len() => break,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}:{}: bad journal entry: {e}", path.display(), i + 1),
                ));
            }
        }
    }
    Ok(entries)
}
