//! The `valetkey` binary: the command line in `valetkey::cli`, errors
//! printed with their context.

use std::process::ExitCode;

// The proxy path allocates per request (headers, the GraphQL tree, the
// audit record); glibc's allocator spent a sixth of the broker's CPU on it
// under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match valetkey::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("valetkey: {}", message(&anyhow::Error::from(e)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once. Most messages quote their
/// cause already; a cause that quotes its own cause in turn adds only the
/// words of its own (so "cannot read x: not found" under a message that
/// already says "not found" does not say it again).
fn message(e: &anyhow::Error) -> String {
    let links: Vec<String> = e.chain().map(ToString::to_string).collect();
    let mut text = links[0].clone();
    for (i, link) in links.iter().enumerate().skip(1) {
        let own = match links.get(i + 1) {
            Some(inner) => link
                .strip_suffix(inner.as_str())
                .map_or(link.as_str(), |rest| rest.trim_end_matches([':', ' '])),
            None => link.as_str(),
        };
        if !own.is_empty() && !text.contains(own) {
            text.push_str(": ");
            text.push_str(own);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::message;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start: {0}")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read x: {source}")]
    struct Middle {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start: {inner}")]
    struct QuotesOnlyTheRoot {
        inner: String,
        #[source]
        source: Middle,
    }

    fn missing() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::NotFound)
    }

    #[test]
    fn every_cause_is_said_once() {
        let quoted = anyhow::Error::from(Outer(Middle { source: missing() }));
        assert_eq!(message(&quoted), "cannot start: cannot read x: entity not found");
        // A message that quotes the innermost cause but not the one between:
        // the one between adds its own words only.
        let root = missing().to_string();
        let skipped = anyhow::Error::from(QuotesOnlyTheRoot {
            inner: root.clone(),
            source: Middle { source: missing() },
        });
        let said = message(&skipped);
        assert_eq!(said.matches(&root).count(), 1, "{said}");
        assert!(said.contains("cannot read x"), "{said}");
    }
}
