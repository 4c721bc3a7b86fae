//! What lies under a root field: the resource ids its nested fields name,
//! and, with the provider's schema (`schema.rs`), whether the selection
//! stays within what the root field is bound to. Every nested field is
//! typed through fragments and type conditions, a field the schema lacks is
//! named, and below a reference to another resource only identity fields
//! may be selected. Only what `@skip` and `@include` let run is read, so
//! only that is judged. One walk does both.

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

/// What lies under a selection set: the ids its fields name at any depth,
/// and the first place it leaves what its root field is bound to.
pub(super) type Under = (Vec<ResourceRef>, Option<Escape>);

impl Walk<'_> {
    /// The ids named under a root field, what it returns, and the first
    /// place its selection leaves what the field is bound to. The root
    /// field's own objects are the bound resources', whatever their type;
    /// `policy::decide` judges the binding.
    pub(super) fn root_under(
        &mut self,
        kind: OperationType,
        field: &cst::Field,
        scope: &Scope<'_>,
    ) -> Result<(Vec<ResourceRef>, Returns, Option<Escape>), ClassifyError> {
        let Some(set) = field.selection_set() else {
            return Ok((Vec::new(), Returns::Unknown, None));
        };
        let Some(schema) = self.ids.schema else {
            let (ids, _) = self.under(&set, None, scope)?;
            return Ok((ids, Returns::Unknown, None));
        };
        let name = name_text(field.name());
        let root = schema.root(kind);
        let (ids, returns, escape) = match schema.field(root, &name) {
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
                let (ids, escape) = self.under(&set, Some(&bound), scope)?;
                (ids, returns, escape)
            }
            typed => {
                let (ids, _) = self.under(&set, None, scope)?;
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
                (ids, Returns::Unknown, Some(escape))
            }
        };
        Ok((ids, returns, escape.map(|e| e.under(&name))))
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
        let mut ids = Vec::new();
        let mut found = None;
        for (field, on) in self.flatten_on(set, scope, None, &mut Vec::new(), false, None)? {
            let name = name_text(field.name());
            let id_kind = self.ids.kinds.get(&name).map(String::as_str);
            collect_ids(&arguments(&field, scope)?, id_kind, self.ids.arguments, &mut ids);
            let (mut escape, next) = match (self.ids.schema, at) {
                (Some(schema), Some(at)) => step(schema, &at.narrow(schema, on), &field, &name),
                _ => (None, None),
            };
            if let Some(inner) = field.selection_set() {
                let (inner_ids, inner_escape) = self.under(&inner, next.as_ref(), scope)?;
                for id in inner_ids {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                if escape.is_none() {
                    escape = inner_escape.map(|e| e.under(&name));
                }
            }
            if found.is_none() {
                found = escape;
            }
        }
        self.under.insert(key, (ids.clone(), found.clone()));
        Ok((ids, found))
    }
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
