//! What a push does, from its commands and the pack it carries (pure):
//! whether each ref update is provably a fast-forward, and whether any
//! pushed commit changes the repository's `.github` directory. What the
//! pack cannot show is never assumed harmless: an update not proven a
//! fast-forward is a rewrite; a commit whose `.github` or whose parent's
//! is not known is treated as changing it, and the parents to learn are
//! named so that the edge can ask the upstream and try again.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::object::{ObjectFormat, Oid, tree_entries};
use super::pack::Pack;
use super::request::RefUpdate;

/// The directory whose workflows (and the actions they use) run with the
/// repository's secrets.
const WORKFLOW_DIR: &[u8] = b".github";

/// How a ref moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    Create,
    /// The pack holds a path of commits from the new tip back to the old.
    FastForward,
    Delete,
    /// A rewrite, a moved tag, or an update the pack does not prove.
    Unproven,
}

pub fn movement(update: &RefUpdate, pack: &Pack) -> Movement {
    if update.is_delete() {
        Movement::Delete
    } else if update.is_create() {
        Movement::Create
    } else if update.name.starts_with("refs/tags/") {
        // A tag that moves rewrites what others already fetched.
        Movement::Unproven
    } else if descends(pack, &update.new, &update.old) {
        Movement::FastForward
    } else {
        Movement::Unproven
    }
}

/// Whether `ancestor` is reached from `tip` through the pack's commits.
fn descends(pack: &Pack, tip: &Oid, ancestor: &Oid) -> bool {
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([tip]);
    while let Some(id) = queue.pop_front() {
        if id == ancestor {
            return true;
        }
        if !seen.insert(id) {
            continue;
        }
        // A commit outside the pack ends this path: the walk cannot see
        // past it.
        if let Some(commit) = pack.commits.get(id) {
            queue.extend(&commit.parents);
        }
    }
    false
}

/// The entries of a root tree named `.github` in any case (git keeps
/// `.github` and `.GitHub` apart; a case-insensitive checkout does not),
/// with their modes and ids.
pub type WorkflowDirs = Vec<(Vec<u8>, Vec<u8>, Oid)>;

/// What the broker learned from the upstream about a commit the pack does
/// not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownCommit {
    pub tree: Oid,
    pub dirs: WorkflowDirs,
    /// The root tree's bytes: a thin pack's new root tree is most often a
    /// delta against it.
    pub tree_data: Vec<u8>,
}

/// Whether a push changes `.github`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workflows {
    Untouched,
    Changed,
    /// Not known from the pack and what was learned; learning these
    /// commits (parents outside the pack) may settle it.
    Unknown {
        learn: BTreeSet<Oid>,
    },
}

/// The `.github` entries of a root tree.
pub fn workflow_dirs(format: ObjectFormat, tree: &[u8]) -> Option<WorkflowDirs> {
    let entries = tree_entries(format, tree).ok()?;
    Some(
        entries
            .into_iter()
            .filter(|(_, name, _)| name.eq_ignore_ascii_case(WORKFLOW_DIR))
            .map(|(mode, name, id)| (mode.to_vec(), name.to_vec(), id))
            .collect(),
    )
}

/// Compares every pushed commit's `.github` with each of its parents'
/// (a merge that differs from any parent changes what runs on the branch
/// it lands on); a commit without parents changes it by having one.
pub fn workflows(
    format: ObjectFormat,
    updates: &[RefUpdate],
    pack: &Pack,
    known: &HashMap<Oid, KnownCommit>,
) -> Workflows {
    let mut pushed = BTreeSet::new();
    let mut queue: VecDeque<&Oid> = updates.iter().filter(|u| !u.is_delete()).map(|u| &u.new).collect();
    while let Some(id) = queue.pop_front() {
        if let Some(commit) = pack.commits.get(id)
            && pushed.insert(id.clone())
        {
            queue.extend(&commit.parents);
        }
    }
    let dirs_of = |id: &Oid| -> Option<WorkflowDirs> {
        let tree = match pack.commits.get(id) {
            Some(commit) => &commit.tree,
            None => return known.get(id).map(|k| k.dirs.clone()),
        };
        if let Some(data) = pack.trees.get(tree) {
            return workflow_dirs(format, data);
        }
        // A tree the pack lacks is one the upstream has: the same as a
        // parent's that the broker knows, or unknown.
        let commit = &pack.commits[id];
        commit.parents.iter().find_map(|p| {
            let parent_tree = pack.commits.get(p).map(|c| &c.tree).or(known.get(p).map(|k| &k.tree))?;
            if parent_tree != tree {
                return None;
            }
            match pack.trees.get(parent_tree) {
                Some(data) => workflow_dirs(format, data),
                None => known.get(p).map(|k| k.dirs.clone()),
            }
        })
    };
    let mut learn = BTreeSet::new();
    let mut unknown = false;
    for id in &pushed {
        let parents = &pack.commits[id].parents;
        let Some(mine) = dirs_of(id) else {
            // Its tree may be a delta against a parent's: learning the
            // parents may show it.
            unknown = true;
            learn.extend(
                parents
                    .iter()
                    .filter(|p| !pack.commits.contains_key(*p) && !known.contains_key(*p))
                    .cloned(),
            );
            continue;
        };
        if parents.is_empty() && !mine.is_empty() {
            return Workflows::Changed;
        }
        for parent in parents {
            match dirs_of(parent) {
                Some(theirs) if theirs != mine => return Workflows::Changed,
                Some(_) => {}
                None => {
                    unknown = true;
                    if !pack.commits.contains_key(parent) {
                        learn.insert(parent.clone());
                    }
                }
            }
        }
    }
    if unknown {
        Workflows::Unknown { learn }
    } else {
        Workflows::Untouched
    }
}
