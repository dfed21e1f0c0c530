//! The journal: an append-only record, written and synced *before* each
//! namespace is made, of everything `up` creates. Every interface of a lab lives
//! inside one of its namespaces, so namespaces are all the journal must name for
//! `down` and `clean` to remove exactly what testbed made, even after SIGKILL.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
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

/// Read a journal. A torn last line (a crash mid-write: no final newline) is
/// ignored; any other bad line is an error naming the line.
pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
    let text = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let torn = !text.is_empty() && !text.ends_with(b"\n");
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice(line) {
            Ok(e) => entries.push(e),
            Err(_) if torn && i + 1 == lines.len() => break,
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;

    fn every_kind() -> Vec<Entry> {
        vec![
            Entry::Begin {
                lab: "city".into(),
                fingerprint: "0123456789abcdef".into(),
                pid: 4242,
            },
            Entry::Netns {
                name: "tb-city".into(),
            },
            Entry::Netns {
                name: "tb-city.v001".into(),
            },
            Entry::Created {
                name: "tb-city".into(),
                inode: u64::MAX,
            },
            Entry::Complete,
        ]
    }

    fn journal_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("journal")
    }

    #[test]
    fn round_trip_of_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_in(&dir);
        let entries = every_kind();
        let mut j = Journal::open(&path).unwrap();
        j.append(&entries[..2]).unwrap();
        j.append(&[]).unwrap();
        j.append(&entries[2..]).unwrap();
        drop(j);
        assert_eq!(read(&path).unwrap(), entries);
        // One JSON object per line, tagged by "op".
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), entries.len());
        assert!(text.ends_with('\n'));
        assert_eq!(text.lines().last(), Some(r#"{"op":"complete"}"#));
        assert!(text.starts_with(r#"{"op":"begin","lab":"city","#));
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_in(&dir);
        let entries = every_kind();
        Journal::open(&path).unwrap().append(&entries[..3]).unwrap();
        Journal::open(&path).unwrap().append(&entries[3..]).unwrap();
        assert_eq!(read(&path).unwrap(), entries);
    }

    #[test]
    fn missing_journal_reads_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&journal_in(&dir)).unwrap(), Vec::new());
        // An empty file is an empty journal too.
        let path = journal_in(&dir);
        Journal::open(&path).unwrap();
        assert_eq!(read(&path).unwrap(), Vec::new());
    }

    #[test]
    fn torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_in(&dir);
        let entries = every_kind();
        Journal::open(&path).unwrap().append(&entries).unwrap();
        let whole = fs::read(&path).unwrap();
        let mut more = whole.clone();
        more.extend_from_slice(br#"{"op":"created","name":"tb-city.v0"#);
        fs::write(&path, &more).unwrap();
        assert_eq!(read(&path).unwrap(), entries);
        // Torn at every byte of the last entry: the ones before it survive.
        let last_start = whole[..whole.len() - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        for cut in last_start..whole.len() - 1 {
            fs::write(&path, &whole[..cut]).unwrap();
            let got = read(&path).unwrap();
            assert_eq!(got, entries[..entries.len() - 1], "cut at {cut}");
        }
    }

    #[test]
    fn bad_line_in_the_middle_names_path_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_in(&dir);
        let text = concat!(
            r#"{"op":"netns","name":"tb-a"}"#,
            "\n",
            r#"{"op":"netns","name":"tb-b"}"#,
            "\n",
            r#"{"op":"bogus"}"#,
            "\n",
            r#"{"op":"complete"}"#,
            "\n",
        );
        fs::write(&path, text).unwrap();
        let err = read(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let msg = err.to_string();
        let at = format!("{}:3: bad journal entry", path.display());
        assert!(msg.starts_with(&at), "{msg}");
    }

    #[test]
    fn non_utf8_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_in(&dir);
        fs::write(
            &path,
            b"{\"op\":\"complete\"}\n\xff\xfe\n{\"op\":\"complete\"}\n",
        )
        .unwrap();
        assert!(read(&path).is_err());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = journal_in(&dir);
            fs::write(&path, &bytes).unwrap();
            let _ = read(&path);
        }

        #[test]
        fn valid_prefix_plus_garbage_line_never_panics(
            lines in proptest::collection::vec("[ -~]{0,40}", 0..8),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = journal_in(&dir);
            let mut text = String::from("{\"op\":\"complete\"}\n");
            for l in &lines {
                text.push_str(l);
                text.push('\n');
            }
            fs::write(&path, &text).unwrap();
            match read(&path) {
                Ok(entries) => prop_assert!(!entries.is_empty()),
                Err(e) => prop_assert!(e.to_string().contains(&path.display().to_string())),
            }
        }
    }
}
