//! GitHub semantics a path alone cannot show: the files a git tree would put
//! in place. A tree that names a `.github` entry can become (or hold) the
//! directory whose workflows run with the repository's secrets, so creating
//! one needs the workflow scope, as GitHub itself demands of a push.

use serde_json::Value;

use super::ClassifyError;

/// The directory whose files run with the repository's secrets.
const WORKFLOW_DIR: &str = ".github";

/// Whether a `POST /repos/{owner}/{repo}/git/trees` body names a `.github`
/// entry at any depth of any entry's path (a tree made now can become the
/// root of a commit later, so depth is no defence).
pub fn tree_touches_workflows(body: &[u8]) -> Result<bool, ClassifyError> {
    let value =
        super::json::strict(body).map_err(|e| ClassifyError::Malformed(format!("the tree is not JSON: {e}")))?;
    let entries = value
        .get("tree")
        .and_then(Value::as_array)
        .ok_or_else(|| ClassifyError::Malformed("the request names no `tree` array".into()))?;
    for entry in entries {
        let path = entry
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ClassifyError::Malformed("a tree entry has no `path` string".into()))?;
        if path.split('/').any(|c| c.eq_ignore_ascii_case(WORKFLOW_DIR)) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_naming_github_anywhere_touches_workflows() {
        let tree = |paths: &[&str]| {
            let entries: Vec<Value> = paths
                .iter()
                .map(|p| serde_json::json!({ "path": p, "mode": "100644", "type": "blob", "content": "x" }))
                .collect();
            serde_json::json!({ "base_tree": "abc", "tree": entries }).to_string()
        };
        assert!(tree_touches_workflows(tree(&[".github/workflows/ci.yml"]).as_bytes()).unwrap());
        assert!(tree_touches_workflows(tree(&["src/a.rs", ".GitHub"]).as_bytes()).unwrap());
        assert!(tree_touches_workflows(tree(&["sub/.github/actions/x/action.yml"]).as_bytes()).unwrap());
        assert!(!tree_touches_workflows(tree(&["src/a.rs", "docs/github.md"]).as_bytes()).unwrap());
        for bad in [
            r#"{"tree": [{"path": 1}]}"#,
            r#"{"base_tree": "x"}"#,
            r#"{"tree": [], "tree": []}"#,
        ] {
            assert_eq!(
                tree_touches_workflows(bad.as_bytes()).unwrap_err().kind(),
                "malformed_request"
            );
        }
    }
}
