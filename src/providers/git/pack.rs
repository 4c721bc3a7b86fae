//! A pack's commits and trees (Documentation/gitformat-pack.txt): the
//! header, each object's type and size, its zlib stream, and deltas
//! (OFS_DELTA and REF_DELTA) applied to commits and trees. Blobs and tags
//! are inflated only to be hashed and passed. Bounded: the object count,
//! each kept object's size, the bytes inflated in all, the delta chain's
//! depth. A delta whose base is not in the pack (a thin pack's) is applied
//! to a tree the caller learned elsewhere (`external`), or left unresolved:
//! what it is stays unknown, and callers treat unknown as the worst case.

use std::collections::HashMap;

use flate2::{Decompress, FlushDecompress, Status};

use super::GitError;
use super::object::{Commit, Kind, ObjectFormat, Oid, parse_commit};

/// How much reading one pack may cost.
#[derive(Debug, Clone, Copy)]
pub struct PackLimits {
    pub max_objects: usize,
    /// The largest commit, tree or delta kept in memory, inflated.
    pub max_object_bytes: usize,
    /// All the bytes inflated while reading the pack, blobs included.
    pub max_inflated_bytes: u64,
    pub max_delta_depth: u32,
}

impl Default for PackLimits {
    fn default() -> Self {
        PackLimits {
            max_objects: 500_000,
            max_object_bytes: 16 * 1024 * 1024,
            max_inflated_bytes: 1024 * 1024 * 1024,
            // git's own default `pack.depth` is 50.
            max_delta_depth: 64,
        }
    }
}

/// The commits and trees a pack carries, by id.
#[derive(Debug, Default)]
pub struct Pack {
    pub commits: HashMap<Oid, Commit>,
    pub trees: HashMap<Oid, Vec<u8>>,
    /// Deltas whose base is not in the pack: any of them may be a commit
    /// or a tree this pack does not show.
    pub unresolved: usize,
}

/// Where a delta's base is.
#[derive(Debug, Clone)]
enum Base {
    Index(usize),
    Id(Oid),
}

#[derive(Debug, Default)]
struct Entry {
    kind: Option<Kind>,
    /// A commit's or tree's contents.
    data: Option<Vec<u8>>,
    id: Option<Oid>,
    depth: u32,
    /// A delta not applied yet, and what it applies to.
    pending: Option<(Base, Vec<u8>)>,
}

/// Reads a whole pack: `bytes` must be exactly the pack, trailer included.
/// `external` holds trees outside it that a thin pack's deltas may use.
pub fn read(
    format: ObjectFormat,
    bytes: &[u8],
    limits: &PackLimits,
    external: &HashMap<Oid, Vec<u8>>,
) -> Result<Pack, GitError> {
    let trailer_at = bytes
        .len()
        .checked_sub(format.raw_len())
        .filter(|n| *n >= 12)
        .ok_or_else(|| GitError::Malformed("the pack is shorter than its header and trailer".into()))?;
    let (content, trailer) = bytes.split_at(trailer_at);
    if &content[..4] != b"PACK" {
        return Err(GitError::Malformed("the pack does not begin with `PACK`".into()));
    }
    let version = u32::from_be_bytes(content[4..8].try_into().expect("4 bytes"));
    if version != 2 && version != 3 {
        return Err(GitError::Unsupported(format!("pack version {version}")));
    }
    let count = u32::from_be_bytes(content[8..12].try_into().expect("4 bytes")) as usize;
    if count > limits.max_objects {
        return Err(GitError::TooLarge {
            what: "objects in the pack",
            limit: limits.max_objects,
            found: count,
        });
    }
    if ring::digest::digest(format.algorithm(), content).as_ref() != trailer {
        return Err(GitError::Malformed(
            "the pack's checksum does not match its contents".into(),
        ));
    }
    let mut reader = Reader {
        format,
        limits,
        external,
        budget: limits.max_inflated_bytes,
        entries: Vec::with_capacity(count.min(4096)),
        by_offset: HashMap::new(),
        by_id: HashMap::new(),
    };
    let mut pos = 12;
    for _ in 0..count {
        pos = reader.entry(content, pos)?;
    }
    if pos != content.len() {
        return Err(GitError::Malformed("the pack has bytes past its last object".into()));
    }
    reader.resolve_pending()?;
    Ok(reader.finish())
}

struct Reader<'l> {
    format: ObjectFormat,
    limits: &'l PackLimits,
    external: &'l HashMap<Oid, Vec<u8>>,
    budget: u64,
    entries: Vec<Entry>,
    by_offset: HashMap<usize, usize>,
    by_id: HashMap<Oid, usize>,
}

impl Reader<'_> {
    /// Reads the object at `offset`; returns where the next begins.
    fn entry(&mut self, content: &[u8], offset: usize) -> Result<usize, GitError> {
        let truncated = || GitError::Malformed("the pack ends inside an object".into());
        let mut pos = offset;
        let mut byte = *content.get(pos).ok_or_else(truncated)?;
        pos += 1;
        let type_bits = (byte >> 4) & 7;
        let mut size = u64::from(byte & 15);
        let mut shift = 4;
        while byte & 0x80 != 0 {
            byte = *content.get(pos).ok_or_else(truncated)?;
            pos += 1;
            if shift > 57 {
                return Err(GitError::Malformed("an object's size does not fit".into()));
            }
            size |= u64::from(byte & 0x7f) << shift;
            shift += 7;
        }
        let index = self.entries.len();
        let base = match type_bits {
            6 => {
                let (distance, used) = ofs_distance(&content[pos..]).ok_or_else(truncated)?;
                pos += used;
                let at = offset
                    .checked_sub(distance)
                    .filter(|_| distance > 0)
                    .and_then(|at| self.by_offset.get(&at))
                    .ok_or_else(|| GitError::Malformed("an offset delta names no earlier object".into()))?;
                Some(Base::Index(*at))
            }
            7 => {
                let raw = content.get(pos..pos + self.format.raw_len()).ok_or_else(truncated)?;
                pos += raw.len();
                Some(Base::Id(Oid::from_raw(raw)))
            }
            _ => None,
        };
        let kind = match type_bits {
            1 => Some(Kind::Commit),
            2 => Some(Kind::Tree),
            3 => Some(Kind::Blob),
            4 => Some(Kind::Tag),
            6 | 7 => None,
            other => return Err(GitError::Malformed(format!("an object has the reserved type {other}"))),
        };
        let size = usize::try_from(size).map_err(|_| GitError::Malformed("an object's size does not fit".into()))?;
        let mut entry = Entry::default();
        let keep = kind.is_none_or(Kind::is_read);
        if keep && size > self.limits.max_object_bytes {
            return Err(GitError::TooLarge {
                what: "bytes in one commit, tree or delta",
                limit: self.limits.max_object_bytes,
                found: size,
            });
        }
        let mut hasher = kind.map(|k| self.format.hasher(k, size));
        let (data, used) = inflate(
            &content[pos..],
            size,
            keep,
            hasher.as_mut(),
            &mut self.budget,
            self.limits,
        )?;
        pos += used;
        match (kind, base) {
            (Some(kind), _) => {
                let id = Oid::from_raw(hasher.expect("a whole object is hashed").finish().as_ref());
                entry.kind = Some(kind);
                entry.data = data;
                self.by_id.insert(id.clone(), index);
                entry.id = Some(id);
            }
            (None, Some(base)) => entry.pending = Some((base, data.expect("deltas are kept"))),
            (None, None) => unreachable!("a delta type always names its base"),
        }
        self.entries.push(entry);
        self.by_offset.insert(offset, index);
        // Offset deltas usually follow their base: apply them now, so
        // their bytes need not wait.
        self.try_resolve(index)?;
        Ok(pos)
    }

    /// Applies pending deltas until none can be.
    fn resolve_pending(&mut self) -> Result<(), GitError> {
        loop {
            let mut progress = false;
            for index in 0..self.entries.len() {
                if self.entries[index].pending.is_some() && self.try_resolve(index)? {
                    progress = true;
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Applies the delta at `index` if its base is known; whether it did.
    fn try_resolve(&mut self, index: usize) -> Result<bool, GitError> {
        let Some((base, delta)) = &self.entries[index].pending else {
            return Ok(false);
        };
        let base_index = match base {
            Base::Index(i) => Some(*i),
            Base::Id(id) => self.by_id.get(id).copied(),
        };
        let (kind, base_data, depth) = match (base_index, base) {
            (Some(i), _) => match &self.entries[i] {
                Entry {
                    kind: Some(kind),
                    data,
                    depth,
                    ..
                } => (*kind, data.as_ref(), depth + 1),
                _ => return Ok(false),
            },
            (None, Base::Id(id)) => match self.external.get(id) {
                Some(tree) => (Kind::Tree, Some(tree), 1),
                None => return Ok(false),
            },
            (None, Base::Index(_)) => return Ok(false),
        };
        if depth > self.limits.max_delta_depth {
            return Err(GitError::TooLarge {
                what: "deltas in one chain",
                limit: self.limits.max_delta_depth as usize,
                found: depth as usize,
            });
        }
        let resolved = match (base_data, kind.is_read()) {
            (Some(base_data), true) => {
                let data = apply_delta(base_data, delta, self.limits.max_object_bytes)?;
                self.budget = self.budget.checked_sub(data.len() as u64).ok_or(GitError::TooLarge {
                    what: "bytes inflated from the pack",
                    limit: self.limits.max_inflated_bytes as usize,
                    found: self.limits.max_inflated_bytes as usize + 1,
                })?;
                let id = self.format.hash(kind, &data);
                self.by_id.insert(id.clone(), index);
                Entry {
                    kind: Some(kind),
                    data: Some(data),
                    id: Some(id),
                    depth,
                    pending: None,
                }
            }
            // A blob's or tag's delta: its kind is all that matters, and
            // without the base's bytes its id is not known.
            _ => Entry {
                kind: Some(kind),
                depth,
                ..Entry::default()
            },
        };
        self.entries[index] = resolved;
        Ok(true)
    }

    fn finish(self) -> Pack {
        let mut pack = Pack::default();
        for entry in self.entries {
            if entry.pending.is_some() {
                pack.unresolved += 1;
                continue;
            }
            match (entry.kind, entry.id, entry.data) {
                (Some(Kind::Commit), Some(id), Some(data)) => {
                    // A commit that does not parse is the server's to refuse;
                    // here it is one this pack does not show.
                    if let Ok(commit) = parse_commit(self.format, &data) {
                        pack.commits.insert(id, commit);
                    }
                }
                (Some(Kind::Tree), Some(id), Some(data)) => {
                    pack.trees.insert(id, data);
                }
                _ => {}
            }
        }
        pack
    }
}

/// An OFS_DELTA's distance back to its base, and the bytes it took.
fn ofs_distance(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut used = 0;
    let mut byte = *bytes.first()?;
    used += 1;
    let mut distance = u64::from(byte & 0x7f);
    while byte & 0x80 != 0 {
        byte = *bytes.get(used)?;
        used += 1;
        distance = distance.checked_add(1)?.checked_mul(128)? | u64::from(byte & 0x7f);
    }
    Some((usize::try_from(distance).ok()?, used))
}

/// Inflates one zlib stream of exactly `size` bytes from the front of
/// `input`: the bytes if `keep`, and how much input it took.
fn inflate(
    input: &[u8],
    size: usize,
    keep: bool,
    mut hasher: Option<&mut ring::digest::Context>,
    budget: &mut u64,
    limits: &PackLimits,
) -> Result<(Option<Vec<u8>>, usize), GitError> {
    let mut z = Decompress::new(true);
    let mut kept = keep.then(Vec::new);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let (before_in, before_out) = (z.total_in(), z.total_out());
        let status = z
            .decompress(&input[before_in as usize..], &mut chunk, FlushDecompress::None)
            .map_err(|e| GitError::Malformed(format!("an object's zlib stream is broken: {e}")))?;
        let produced = (z.total_out() - before_out) as usize;
        if z.total_out() > size as u64 {
            return Err(GitError::Malformed("an object inflates past its declared size".into()));
        }
        *budget = budget.checked_sub(produced as u64).ok_or(GitError::TooLarge {
            what: "bytes inflated from the pack",
            limit: limits.max_inflated_bytes as usize,
            found: limits.max_inflated_bytes as usize + 1,
        })?;
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk[..produced]);
        }
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&chunk[..produced]);
        }
        match status {
            Status::StreamEnd => break,
            _ if z.total_in() == before_in && produced == 0 => {
                return Err(GitError::Malformed(
                    "the pack ends inside an object's zlib stream".into(),
                ));
            }
            _ => {}
        }
    }
    if z.total_out() != size as u64 {
        return Err(GitError::Malformed(
            "an object inflates short of its declared size".into(),
        ));
    }
    Ok((kept, z.total_in() as usize))
}

/// A delta's size header: little-endian base-128.
fn delta_size(delta: &[u8], pos: &mut usize) -> Result<usize, GitError> {
    let mut size = 0u64;
    let mut shift = 0;
    loop {
        let byte = *delta
            .get(*pos)
            .ok_or_else(|| GitError::Malformed("a delta ends inside its header".into()))?;
        *pos += 1;
        if shift > 57 {
            return Err(GitError::Malformed("a delta's size does not fit".into()));
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return usize::try_from(size).map_err(|_| GitError::Malformed("a delta's size does not fit".into()));
        }
    }
}

/// Applies a delta's copy and insert instructions to `base`.
fn apply_delta(base: &[u8], delta: &[u8], max: usize) -> Result<Vec<u8>, GitError> {
    let broken = |why: &str| GitError::Malformed(format!("a delta is broken: {why}"));
    let mut pos = 0;
    if delta_size(delta, &mut pos)? != base.len() {
        return Err(broken("its base size is not its base's"));
    }
    let target = delta_size(delta, &mut pos)?;
    if target > max {
        return Err(GitError::TooLarge {
            what: "bytes in one commit, tree or delta",
            limit: max,
            found: target,
        });
    }
    let mut out = Vec::with_capacity(target);
    while pos < delta.len() {
        let op = delta[pos];
        pos += 1;
        if op & 0x80 != 0 {
            let mut fields = [0usize; 7];
            for (bit, field) in fields.iter_mut().enumerate() {
                if op & (1 << bit) != 0 {
                    *field = usize::from(*delta.get(pos).ok_or_else(|| broken("a copy is cut short"))?);
                    pos += 1;
                }
            }
            let offset = fields[0] | fields[1] << 8 | fields[2] << 16 | fields[3] << 24;
            let mut len = fields[4] | fields[5] << 8 | fields[6] << 16;
            if len == 0 {
                len = 0x10000;
            }
            let part = offset
                .checked_add(len)
                .and_then(|end| base.get(offset..end))
                .ok_or_else(|| broken("a copy reaches past its base"))?;
            out.extend_from_slice(part);
        } else if op != 0 {
            let part = delta
                .get(pos..pos + usize::from(op))
                .ok_or_else(|| broken("an insert is cut short"))?;
            pos += part.len();
            out.extend_from_slice(part);
        } else {
            return Err(broken("it uses the reserved instruction 0"));
        }
        if out.len() > target {
            return Err(broken("it makes more than its declared size"));
        }
    }
    if out.len() != target {
        return Err(broken("it makes less than its declared size"));
    }
    Ok(out)
}
