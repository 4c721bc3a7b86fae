//! Object ids, their two formats, and the two kinds of object a push's
//! classification reads: a commit's root tree and parents, a tree's
//! entries (Documentation/gitformat-pack.txt names the types; the layouts
//! are git's loose-object ones).

use std::fmt;

use ring::digest;

use super::GitError;

/// The hash a repository names its objects by (`object-format=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ObjectFormat {
    #[default]
    Sha1,
    Sha256,
}

impl ObjectFormat {
    /// From a capability's value.
    pub fn named(name: &str) -> Option<ObjectFormat> {
        match name {
            "sha1" => Some(ObjectFormat::Sha1),
            "sha256" => Some(ObjectFormat::Sha256),
            _ => None,
        }
    }

    pub fn raw_len(self) -> usize {
        match self {
            ObjectFormat::Sha1 => 20,
            ObjectFormat::Sha256 => 32,
        }
    }

    pub fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            // git's own object names; not used for any security property here
            // beyond what git itself relies on.
            ObjectFormat::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            ObjectFormat::Sha256 => &digest::SHA256,
        }
    }

    /// The all-zero id that names "no object" in a ref update.
    pub fn null(self) -> Oid {
        Oid(vec![0; self.raw_len()].into())
    }

    /// A hex id of this format (lower case, as git writes it).
    pub fn parse_hex(self, hex_text: &[u8]) -> Result<Oid, GitError> {
        let valid = hex_text.len() == self.raw_len() * 2
            && hex_text.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if !valid {
            return Err(GitError::Malformed(format!(
                "`{}` is not a {self:?} object id in lower-case hex",
                String::from_utf8_lossy(&hex_text[..hex_text.len().min(80)])
            )));
        }
        Ok(Oid(hex::decode(hex_text).expect("checked hex").into()))
    }

    /// The id of an object of `kind` with `data`.
    pub fn hash(self, kind: Kind, data: &[u8]) -> Oid {
        let mut ctx = self.hasher(kind, data.len());
        ctx.update(data);
        Oid(ctx.finish().as_ref().into())
    }

    /// A hash context already fed the object header (`kind len\0`).
    pub fn hasher(self, kind: Kind, len: usize) -> digest::Context {
        let mut ctx = digest::Context::new(self.algorithm());
        ctx.update(format!("{} {len}\0", kind.name()).as_bytes());
        ctx
    }
}

/// An object id, raw bytes of its format's length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oid(Box<[u8]>);

impl Oid {
    pub fn from_raw(raw: &[u8]) -> Oid {
        Oid(raw.into())
    }

    /// The format whose ids are this long.
    pub fn format(&self) -> ObjectFormat {
        if self.0.len() == ObjectFormat::Sha256.raw_len() {
            ObjectFormat::Sha256
        } else {
            ObjectFormat::Sha1
        }
    }

    pub fn is_null(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The four kinds of object a pack holds whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Commit,
    Tree,
    Blob,
    Tag,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }

    /// The kinds whose contents classification reads; others are only
    /// hashed on the way past.
    pub fn is_read(self) -> bool {
        matches!(self, Kind::Commit | Kind::Tree)
    }
}

/// What a commit says about its place in history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub tree: Oid,
    pub parents: Vec<Oid>,
}

/// A commit's `tree` line, then its `parent` lines; the rest (author,
/// message, signatures) is not read.
pub fn parse_commit(format: ObjectFormat, data: &[u8]) -> Result<Commit, GitError> {
    let mut lines = data.split(|b| *b == b'\n');
    let header = |line: Option<&[u8]>, name: &[u8]| line.and_then(|l| l.strip_prefix(name)).map(<[u8]>::to_vec);
    let tree = header(lines.next(), b"tree ")
        .ok_or_else(|| GitError::Malformed("a commit does not begin with its tree".into()))?;
    let tree = format.parse_hex(&tree)?;
    let mut parents = Vec::new();
    for line in lines {
        match line.strip_prefix(b"parent ") {
            Some(hex_text) => parents.push(format.parse_hex(hex_text)?),
            None => break,
        }
    }
    Ok(Commit { tree, parents })
}

/// One entry of a tree: its mode, name and id.
pub type TreeEntry<'a> = (&'a [u8], &'a [u8], Oid);

/// The entries of a tree, in the tree's order.
pub fn tree_entries(format: ObjectFormat, data: &[u8]) -> Result<Vec<TreeEntry<'_>>, GitError> {
    let mut entries = Vec::new();
    let mut rest = data;
    let broken = || GitError::Malformed("a tree's entries do not parse".into());
    while !rest.is_empty() {
        let space = memchr::memchr(b' ', rest).ok_or_else(broken)?;
        let nul = memchr::memchr(0, &rest[space..]).ok_or_else(broken)? + space;
        let end = nul + 1 + format.raw_len();
        let raw = rest.get(nul + 1..end).ok_or_else(broken)?;
        entries.push((&rest[..space], &rest[space + 1..nul], Oid::from_raw(raw)));
        rest = &rest[end..];
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_hash_as_git_names_objects() {
        // `git hash-object -t blob --stdin <<< ''` (one LF) and the empty tree.
        assert_eq!(
            ObjectFormat::Sha1.hash(Kind::Blob, b"\n").to_string(),
            "8b137891791fe96927ad78e64b0aad7bded08bdc"
        );
        assert_eq!(
            ObjectFormat::Sha1.hash(Kind::Tree, b"").to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        assert_eq!(
            ObjectFormat::Sha256.hash(Kind::Tree, b"").to_string(),
            "6ef19b41225c5369f1c104d45d8d85efa9b057b53b14b4b9b939dd74decc5321"
        );
        for bad in [&b"8B137891791fe96927ad78e64b0aad7bded08bdc"[..], b"8b13", b"zz"] {
            assert!(ObjectFormat::Sha1.parse_hex(bad).is_err());
        }
        assert!(ObjectFormat::Sha1.null().is_null());
    }

    #[test]
    fn a_commit_gives_its_tree_and_parents_and_a_tree_its_entries() {
        let t = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
        let p = "8b137891791fe96927ad78e64b0aad7bded08bdc";
        let text = format!("tree {t}\nparent {p}\nparent {t}\nauthor a <a> 1 +0000\n\nparent {p}\n");
        let c = parse_commit(ObjectFormat::Sha1, text.as_bytes()).unwrap();
        assert_eq!(c.tree.to_string(), t);
        assert_eq!(c.parents.iter().map(ToString::to_string).collect::<Vec<_>>(), [p, t]);
        assert!(parse_commit(ObjectFormat::Sha1, b"author x\n").is_err());
        assert!(parse_commit(ObjectFormat::Sha1, format!("tree {t}\nparent 12\n").as_bytes()).is_err());

        let mut tree = b"100644 a.txt\0".to_vec();
        tree.extend_from_slice(&[1; 20]);
        tree.extend_from_slice(b"40000 .github\0");
        tree.extend_from_slice(&[2; 20]);
        let entries = tree_entries(ObjectFormat::Sha1, &tree).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].1, b".github");
        assert_eq!(entries[1].2, Oid::from_raw(&[2; 20]));
        assert!(tree_entries(ObjectFormat::Sha1, &tree[..tree.len() - 1]).is_err());
    }
}
