//! GitHub semantics a path alone cannot show: the files a git tree would put
//! in place, and the repositories a search reads. A tree that names a
//! `.github` entry can become (or hold) the directory whose workflows run
//! with the repository's secrets, so creating one needs the workflow scope,
//! as GitHub itself demands of a push. A search reads every repository the
//! token reaches unless its query names some with `repo:` qualifiers; it is
//! bound to those only when nothing else in the query can widen it.

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

/// The qualifiers of GitHub's issue and pull request search that filter
/// what the `repo:` qualifiers name (GitHub's "Searching issues and pull
/// requests"). Others, `org:`, `user:` and `owner:` among them, add
/// repositories to the search, or are ones the broker does not know.
const FILTERS: [&str; 34] = [
    "archived",
    "assignee",
    "author",
    "base",
    "closed",
    "commenter",
    "comments",
    "created",
    "draft",
    "head",
    "in",
    "interactions",
    "involves",
    "is",
    "label",
    "language",
    "linked",
    "mentions",
    "merged",
    "milestone",
    "no",
    "project",
    "reactions",
    "reason",
    "review",
    "review-requested",
    "reviewed-by",
    "sort",
    "state",
    "status",
    "team",
    "team-review-requested",
    "type",
    "user-review-requested",
];

/// The `owner/name` ids a search query names with `qualifier:` terms.
/// Refused (with why) when it names none, when a term could widen it (an
/// unknown qualifier, `OR`, `AND`, `NOT`, parentheses), or when it cannot be
/// read one way only (an unclosed quote, a repository not `owner/name`).
pub fn search_scope(query: &str, qualifier: &str) -> Result<Vec<String>, String> {
    let mut named = Vec::new();
    for term in terms(query)? {
        if ["or", "and", "not"].contains(&term.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "its query holds `{term}`, which can widen a search beyond the repositories it names"
            ));
        }
        let negated = term.starts_with('-');
        let Some((key, value)) = term.trim_start_matches('-').split_once(':') else {
            continue;
        };
        // A colon inside a quoted phrase is text, not a qualifier.
        if key.contains('"') {
            continue;
        }
        let key = key.to_ascii_lowercase();
        if key == qualifier && !negated {
            if !is_owner_name(value) {
                return Err(format!("`{term}` does not name one repository as `owner/name`"));
            }
            if !named.iter().any(|n: &String| n.eq_ignore_ascii_case(value)) {
                named.push(value.to_owned());
            }
        } else if key != qualifier && !FILTERS.contains(&key.as_str()) {
            return Err(format!(
                "its query holds `{key}:`, which the broker does not read as a filter within the repositories the search names (it may add others)"
            ));
        }
    }
    if named.is_empty() {
        return Err(format!(
            "it searches every repository the token reaches; name the repositories with `{qualifier}:OWNER/NAME`"
        ));
    }
    Ok(named)
}

/// A query's terms: split at white space outside double quotes.
fn terms(query: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    for (i, c) in query.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '(' | ')' if !quoted => {
                return Err("its query groups terms with parentheses, which can widen a search".into());
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(s) = start.take() {
                    out.push(&query[s..i]);
                }
                continue;
            }
            _ => {}
        }
        start.get_or_insert(i);
    }
    if quoted {
        return Err("its query has an unclosed `\"`".into());
    }
    out.extend(start.map(|s| &query[s..]));
    Ok(out)
}

/// `owner/name`, as GitHub spells repository names.
fn is_owner_name(value: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    value
        .split_once('/')
        .is_some_and(|(owner, name)| part(owner) && part(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_bound_to_the_repositories_its_query_names() {
        let scope = |q: &str| search_scope(q, "repo");
        assert_eq!(
            scope("author:octo repo:OWNER/REPO state:open type:pr").unwrap(),
            ["OWNER/REPO"]
        );
        assert_eq!(
            scope(r#"label:"bug fix" repo:a/b is:open "org:x" repo:c/d.e REPO:A/B -repo:z/z"#).unwrap(),
            ["a/b", "c/d.e"]
        );
        for (query, why) in [
            ("is:open", "every repository"),
            ("-repo:a/b is:pr", "every repository"),
            (r#""repo:a/b" is:pr"#, "every repository"),
            ("repo:a/b org:prod", "`org:`"),
            ("repo:a/b user:prod", "`user:`"),
            ("repo:a/b Owner:prod", "`owner:`"),
            ("repo:a/b OR is:open", "`OR`"),
            ("repo:a/b not is:open", "`not`"),
            ("repo:a/b (is:open)", "parentheses"),
            (r#"repo:a/b "is:open"#, "unclosed"),
            ("repo:a/b,c/d", "one repository"),
            ("repo:a", "one repository"),
            ("repo:a/b/c", "one repository"),
        ] {
            let err = scope(query).unwrap_err();
            assert!(err.contains(why), "{query}: {err}");
        }
    }

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
