//! What lies under a root field: the resource ids its nested fields name,
//! and, with the provider's schema (`schema.rs`), whether the selection
//! stays within what the root field is bound to. Every nested field is
//! typed through fragments and type conditions, a field the schema lacks is
//! named, and below a reference to another resource only identity fields
//! may be selected. Only what `@skip` and `@include` let run is read, so
//! only that is judged. One walk does both, and tells whether the selection
//! reads the bound resource's own objects or only references to others
//! (`Under::reads_own`).

use std::fmt;

use apollo_parser::cst::{self, CstNode};

use super::{ClassifyError, OperationType, Scope, Walk, arguments, collect_ids, name_text};
use crate::policy::ResourceRef;
use crate::providers::schema::{FieldType, Schema};

/// Where a root field's selection leaves what the field is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escape {
    /// `field` is selected on `parent` where the schema has no such field,
    /// no such type, or a leaf that takes no selection: the broker cannot
    /// tell what it reads.
    Unknown {
        path: Vec<String>,
        parent: String,
        field: String,
        why: Unknown,
    },
    /// `field` is selected beyond a `reference` to another resource, whose
    /// objects may belong to other environments.
    Across {
        path: Vec<String>,
        reference: String,
        field: String,
    },
}

/// What the schema says of a field the broker cannot type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    NoField,
    NoType,
    Leaf,
}

/// What a root field returns, by the schema: how its own objects relate to
/// the resources its arguments name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    /// No schema, no selection, or a leaf: nothing to tell.
    Unknown,
    /// A resource itself (a project, a service, an environment): what lies
    /// under it is its, in every environment it spans, whatever environment
    /// the arguments name.
    Resource,
    /// One environment's objects (deployments, logs, instances), or a
    /// connection of them: under a resource that spans environments, an
    /// environment of the credential's among the arguments must say which.
    EnvironmentData,
    /// Objects of no environment (the provider's own regions).
    NoEnvironment,
}

impl Escape {
    fn under(mut self, name: &str) -> Escape {
        match &mut self {
            Escape::Unknown { path, .. } | Escape::Across { path, .. } => path.insert(0, name.to_owned()),
        }
        self
    }
}

impl fmt::Display for Escape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Escape::Unknown {
                path,
                parent,
                field,
                why,
            } => {
                let what = match why {
                    Unknown::NoField => format!("`{parent}` has no field `{field}`"),
                    Unknown::NoType => format!("there is no type `{parent}` to select `{field}` on"),
                    Unknown::Leaf => format!("`{parent}.{field}` is a scalar, which takes no selection"),
                };
                write!(
                    f,
                    "it selects `{field}` under `{}`, and {what} in the provider's schema as the broker knows it, so what it reads cannot be told",
                    path.join(".")
                )
            }
            Escape::Across { path, reference, field } => write!(
                f,
                "it selects `{field}` under `{}` (of type `{reference}`), which may belong to other environments too; there, select only its id and name, and read the rest through a root field that names your environment",
                path.join(".")
            ),
        }
    }
}

/// The objects at a point of a selection: their type, and the reference
/// that led out of the bound resource, if one did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Position {
    ty: String,
    reference: Option<String>,
}

impl Position {
    /// A type condition narrows the type of the same objects. It never
    /// leads back in, and a type that is not confined leads out: the
    /// stricter reading, should a confined interface ever have an
    /// implementation that is not.
    fn narrow(&self, schema: &Schema, condition: Option<String>) -> Position {
        match condition {
            Some(ty) if ty != self.ty => Position {
                reference: self
                    .reference
                    .clone()
                    .or_else(|| (!schema.confined(&ty)).then(|| ty.clone())),
                ty,
            },
            _ => self.clone(),
        }
    }
}

/// What lies under a selection set.
#[derive(Debug, Clone, Default)]
pub(super) struct Under {
    /// The ids its fields name at any depth.
    pub ids: Vec<ResourceRef>,
    /// The first place it leaves what its root field is bound to.
    pub escape: Option<Escape>,
    /// Whether it reads a field of an object that belongs to the root
    /// field's resource (a project's deployments), rather than only the
    /// identity of objects it refers to (a project's environments, by id
    /// and name). Under a resource several environments share, the first
    /// reaches the other environments' share of it; the second is a
    /// directory of what exists, no environment's data.
    pub reads_own: bool,
}

/// What a root field's selection is, by the schema.
#[derive(Debug, Clone)]
pub(super) struct RootUnder {
    pub ids: Vec<ResourceRef>,
    pub returns: Returns,
    pub escape: Option<Escape>,
    /// `Under::reads_own`; without a schema to tell, whether it selects
    /// any object at all.
    pub reads_own: bool,
}

impl Walk<'_> {
    /// The ids named under a root field, what it returns, the first place
    /// its selection leaves what the field is bound to, and whether it reads
    /// the bound resource's own objects. The root field's own objects are
    /// the bound resources', whatever their type; `policy::decide` judges
    /// the binding.
    pub(super) fn root_under(
        &mut self,
        kind: OperationType,
        field: &cst::Field,
        scope: &Scope<'_>,
    ) -> Result<RootUnder, ClassifyError> {
        let Some(set) = field.selection_set() else {
            return Ok(RootUnder {
                ids: Vec::new(),
                returns: Returns::Unknown,
                escape: None,
                reads_own: false,
            });
        };
        // Without a schema, or where the root field cannot be typed, any
        // object selected may be the bound resource's own.
        let selects_objects = set.selections().any(|sel| !super::is_leaf(&sel));
        let Some(schema) = self.ids.schema else {
            let under = self.under(&set, None, scope)?;
            return Ok(RootUnder {
                ids: under.ids,
                returns: Returns::Unknown,
                escape: None,
                reads_own: selects_objects,
            });
        };
        let name = name_text(field.name());
        let root = schema.root(kind);
        let (under, returns) = match schema.field(root, &name) {
            FieldType::Composite(ty) => {
                let returns = if schema.environment_data(ty) {
                    Returns::EnvironmentData
                } else if schema.confined(ty) {
                    Returns::NoEnvironment
                } else {
                    Returns::Resource
                };
                let bound = Position {
                    ty: ty.to_owned(),
                    reference: None,
                };
                (self.under(&set, Some(&bound), scope)?, returns)
            }
            typed => {
                let under = self.under(&set, None, scope)?;
                let escape = Escape::Unknown {
                    path: Vec::new(),
                    parent: root.to_owned(),
                    field: name.clone(),
                    why: if typed == FieldType::Leaf {
                        Unknown::Leaf
                    } else {
                        Unknown::NoField
                    },
                };
                let under = Under {
                    escape: Some(escape),
                    reads_own: selects_objects,
                    ..under
                };
                (under, Returns::Unknown)
            }
        };
        Ok(RootUnder {
            ids: under.ids,
            returns,
            escape: under.escape.map(|e| e.under(&name)),
            reads_own: under.reads_own,
        })
    }

    /// What lies under a selection set whose objects are at `at` (none
    /// without a schema, or past where the selection already left).
    /// (`check` has bounded the depth.)
    fn under(
        &mut self,
        set: &cst::SelectionSet,
        at: Option<&Position>,
        scope: &Scope<'_>,
    ) -> Result<Under, ClassifyError> {
        let key = (set.syntax().text_range(), at.cloned());
        if let Some(found) = self.under.get(&key) {
            return Ok(found.clone());
        }
        let mut found = Under::default();
        for (field, on) in self.flatten_on(set, scope, None, &mut Vec::new(), false, None)? {
            let name = name_text(field.name());
            let id_kind = self.ids.kinds.get(&name).map(String::as_str);
            collect_ids(&arguments(&field, scope)?, id_kind, self.ids.arguments, &mut found.ids);
            let (mut escape, next) = match (self.ids.schema, at) {
                (Some(schema), Some(at)) => {
                    let here = at.narrow(schema, on);
                    found.reads_own |= [at, &here].iter().any(|p| own_object(schema, p, &name));
                    step(schema, &here, &field, &name)
                }
                _ => (None, None),
            };
            // What the broker cannot type, or reads past a reference, may
            // be anything's.
            found.reads_own |= escape.is_some();
            if let Some(inner) = field.selection_set() {
                let inner = self.under(&inner, next.as_ref(), scope)?;
                for id in inner.ids {
                    if !found.ids.contains(&id) {
                        found.ids.push(id);
                    }
                }
                found.reads_own |= inner.reads_own;
                if escape.is_none() {
                    escape = inner.escape.map(|e| e.under(&name));
                }
            }
            if found.escape.is_none() {
                found.escape = escape;
            }
        }
        self.under.insert(key, found.clone());
        Ok(found)
    }
}

/// Whether selecting `name` at `at` reads an object the bound resource holds
/// (that it exists is its data too: its id, its `__typename`, what it refers
/// to), rather than the resource's own fields (the root's type is not
/// confined) or a reference's identity. A connection's own plumbing is
/// passed through to its nodes; its counts and cursors are read.
fn own_object(schema: &Schema, at: &Position, name: &str) -> bool {
    at.reference.is_none()
        && schema.confined(&at.ty)
        && !(schema.plumbing(&at.ty) && matches!(name, "edges" | "node" | "nodes"))
}

/// One field selected at `here`: where it leaves what the root field is
/// bound to, if it does, and the position of the objects under it, when
/// they are still to be judged.
fn step(schema: &Schema, here: &Position, field: &cst::Field, name: &str) -> (Option<Escape>, Option<Position>) {
    let unknown = |why| {
        let escape = Escape::Unknown {
            path: Vec::new(),
            parent: here.ty.clone(),
            field: name.to_owned(),
            why,
        };
        (Some(escape), None)
    };
    match (schema.field(&here.ty, name), &here.reference) {
        (FieldType::Unknown, _) if !schema.is_composite(&here.ty) => unknown(Unknown::NoType),
        (FieldType::Unknown, _) => unknown(Unknown::NoField),
        // Not the field the schema has; the server would refuse it.
        (FieldType::Leaf, _) if field.selection_set().is_some() => unknown(Unknown::Leaf),
        (FieldType::Leaf, None) => (None, None),
        (FieldType::Leaf, Some(_)) if schema.shown_by_reference(&here.ty, name) => (None, None),
        // What a reference shows of another object (a repository's default
        // branch) is a reference too.
        (FieldType::Composite(ty), Some(reference)) if schema.shown_by_reference(&here.ty, name) => {
            let next = Position {
                ty: ty.to_owned(),
                reference: Some(reference.clone()),
            };
            (None, Some(next))
        }
        (_, Some(reference)) => {
            let escape = Escape::Across {
                path: Vec::new(),
                reference: reference.clone(),
                field: name.to_owned(),
            };
            (Some(escape), None)
        }
        (FieldType::Composite(ty), None) => {
            let next = Position {
                ty: ty.to_owned(),
                reference: (!schema.leads_within(&here.ty, name, ty)).then(|| ty.to_owned()),
            };
            (None, Some(next))
        }
    }
}
