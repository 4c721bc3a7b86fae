//! The JSON-lines file sink: follows the store's chain and appends every
//! event to a file, one JSON object a line, for SIEMs to ship. Following the
//! store (rather than hooking appends) means events written by CLI commands
//! reach the file too, in chain order, and a restart resumes after the last
//! line the file holds.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Filter;
use crate::store::Store;

/// How often the sink looks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Most events one look reads.
const PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write the audit sink {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The position of the last event the file holds (0 when none).
fn last_written(path: &Path) -> Result<i64, SinkError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(SinkError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let last = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter_map(|v| v["seq"].as_i64())
        .last();
    Ok(last.unwrap_or(0))
}

/// Appends every event after the file's last one, then keeps following.
/// Returns only on an error, which the caller logs; the trail in the store
/// is unaffected.
pub async fn follow(store: &dyn Store, path: &Path) -> Result<(), SinkError> {
    let io = |source| SinkError::Io {
        path: path.to_owned(),
        source,
    };
    let mut last = last_written(path)?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?
    };
    loop {
        let filter = Filter {
            after_seq: Some(last),
            limit: PAGE,
            ..Filter::default()
        };
        let records = store.search_audit(&filter).await?;
        if !records.is_empty() {
            let mut lines = String::new();
            for r in &records {
                lines.push_str(&r.to_json().to_string());
                lines.push('\n');
            }
            file.write_all(lines.as_bytes()).map_err(io)?;
            file.sync_data().map_err(io)?;
            last = records.last().map_or(last, |r| r.seq);
        }
        if records.len() < PAGE as usize {
            tokio::time::sleep(FOLLOW_EVERY).await;
        }
    }
}
