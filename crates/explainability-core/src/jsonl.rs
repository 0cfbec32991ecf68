//! Resumable JSON Lines: long runs (a benchmark over hundreds of prompts, a study) write one
//! line per finished item, so that a rerun continues after the last complete line instead of
//! starting over, and never loses what an earlier run computed.

use std::fs::{File, OpenOptions};
use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// Opens a resumable JSON Lines file in which line `k` holds item `from + k` (its `"index"`
/// field), and returns the complete lines of an earlier run for the items
/// `from..from + count` with the file opened for appending the next.
///
/// Nothing an earlier run computed is dropped:
/// - only a torn last line (an interrupted write: not valid JSON, or without its newline) is
///   cut, so that the item is computed again;
/// - a complete line that belongs to another run — its `"index"` out of sequence, or rejected
///   by `belongs(index, line)` (another prompt set, limit or method list) — is an error that
///   names it, and the file is left as it was;
/// - lines past `count` (an earlier run over more items) stay in the file, unread.
///
/// A missing file is created.
///
/// # Errors
/// [`Error::InvalidArgument`] for a line of another run or a torn line that is not the last;
/// [`Error::Io`] when the file cannot be read, created or cut.
pub fn resume_jsonl(
    path: &Path,
    from: usize,
    count: usize,
    belongs: impl Fn(usize, &Value) -> bool,
) -> Result<(Vec<Value>, File)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut done = Vec::new();
    let mut complete_bytes = 0;
    for (k, raw) in lines.iter().enumerate() {
        let index = from + k;
        let parsed =
            serde_json::from_str::<Value>(raw.trim_end()).ok().filter(|_| raw.ends_with('\n'));
        let Some(line) = parsed else {
            if k + 1 == lines.len() {
                break; // a torn last line: cut below, and its item computed again
            }
            return Err(Error::invalid_argument(format!(
                "{}: line {} is not a complete JSON line; nothing was changed (move the file \
                 away to start over)",
                path.display(),
                k + 1
            )));
        };
        if line["index"].as_u64() != Some(index as u64) || (k < count && !belongs(index, &line)) {
            return Err(Error::invalid_argument(format!(
                "{}: line {} (index {}) belongs to another run (a different prompt set, limit \
                 or method list); nothing was changed: move the file away or write elsewhere",
                path.display(),
                k + 1,
                line["index"]
            )));
        }
        if k < count {
            done.push(line);
        }
        complete_bytes += raw.len();
    }
    let file =
        OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
    if complete_bytes < text.len() {
        file.set_len(complete_bytes as u64).map_err(|e| Error::io(path, e))?;
    }
    Ok((done, file))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines(n: usize, from: usize) -> String {
        (from..from + n).map(|i| format!("{{\"index\":{i},\"text\":\"t{i}\"}}\n")).collect()
    }

    fn any(_: usize, _: &Value) -> bool {
        true
    }

    /// A file `r.jsonl` holding `contents` in a fresh directory (kept alive by the guard).
    fn written(contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    #[test]
    fn keeps_every_complete_line_and_appends_after_them() {
        let (_dir, path) = written(&lines(3, 0));
        let (done, mut file) = resume_jsonl(&path, 0, 5, any).unwrap();
        assert_eq!(done.len(), 3);
        assert_eq!(done[2]["text"], "t2");
        file.write_all(b"{\"index\":3}\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, lines(3, 0) + "{\"index\":3}\n");
    }

    #[test]
    fn a_missing_file_is_created_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.jsonl");
        let (done, _) = resume_jsonl(&path, 0, 4, any).unwrap();
        assert!(done.is_empty());
        assert!(path.exists());
    }

    #[test]
    fn a_torn_last_line_is_cut_and_nothing_else() {
        let (_dir, path) = written("");
        for torn in ["{\"index\":3,\"te", "{\"index\":3}"] {
            std::fs::write(&path, lines(3, 0) + torn).unwrap();
            let (done, _) = resume_jsonl(&path, 0, 10, any).unwrap();
            assert_eq!(done.len(), 3, "{torn}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), lines(3, 0), "{torn}");
        }
    }

    #[test]
    fn a_line_of_another_run_is_an_error_and_the_file_is_unchanged() {
        let original = lines(4, 0);
        let (_dir, path) = written(&original);
        // Rejected by the caller (another prompt at index 2).
        let err = resume_jsonl(&path, 0, 4, |i, v| v["text"] == format!("t{i}") && i != 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3 (index 2) belongs to another run"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
        // An index out of sequence (a shard read as the first part).
        let err = resume_jsonl(&path, 5, 4, any).unwrap_err().to_string();
        assert!(err.contains("line 1 (index 0)"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
        // A torn line that is not the last.
        let torn_inside = "{\"index\":0}\n{\"ind\n{\"index\":2}\n";
        std::fs::write(&path, torn_inside).unwrap();
        let err = resume_jsonl(&path, 0, 4, any).unwrap_err().to_string();
        assert!(err.contains("line 2 is not a complete JSON line"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), torn_inside);
    }

    #[test]
    fn lines_past_the_count_stay_and_are_not_checked_by_the_caller() {
        let original = lines(6, 10);
        let (_dir, path) = written(&original);
        // A shard starting at 10 that asks for two items: the caller only knows those two.
        let (done, _) = resume_jsonl(&path, 10, 2, |i, _| i < 12).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(done[1]["index"], 11);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    }
}
