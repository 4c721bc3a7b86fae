//! Whether the fields nested under a root field stay within what the root
//! field is bound to, judged by the provider's schema (`schema.rs`): every
//! nested field is typed through fragments and type conditions, a field the
//! schema lacks is named, and below a reference to another resource only
//! identity fields may be selected. Only what `@skip` and `@include` let run
//! is judged, since only that is read.

use std::fmt;

use apollo_parser::cst::{self, CstNode};

use super::{ClassifyError, Scope, Walk, name_text};
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

impl Walk<'_> {
    /// What a root field returns, and the first place its selection leaves
    /// what the field is bound to. The root field's own objects are the
    /// bound resources', whatever their type; `policy::decide` judges the
    /// binding.
    pub(super) fn confine_root(
        &mut self,
        schema: &Schema,
        root: &str,
        field: &cst::Field,
        scope: &Scope<'_>,
    ) -> Result<(Returns, Option<Escape>), ClassifyError> {
        let name = name_text(field.name());
        let (returns, escape) = match (schema.field(root, &name), field.selection_set()) {
            (_, None) => (Returns::Unknown, None),
            (FieldType::Composite(ty), Some(set)) => {
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
                (returns, self.confine(schema, &set, &bound, scope)?)
            }
            (typed, Some(_)) => {
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
                (Returns::Unknown, Some(escape))
            }
        };
        Ok((returns, escape.map(|e| e.under(&name))))
    }

    fn confine(
        &mut self,
        schema: &Schema,
        set: &cst::SelectionSet,
        at: &Position,
        scope: &Scope<'_>,
    ) -> Result<Option<Escape>, ClassifyError> {
        let key = (set.syntax().text_range(), at.clone());
        if let Some(found) = self.confined.get(&key) {
            return Ok(found.clone());
        }
        let mut found = None;
        for (field, on) in self.flatten_on(set, scope, None, &mut Vec::new(), false, None)? {
            let here = at.narrow(schema, on);
            let name = name_text(field.name());
            let unknown = |why| Escape::Unknown {
                path: Vec::new(),
                parent: here.ty.clone(),
                field: name.clone(),
                why,
            };
            let escape = match (schema.field(&here.ty, &name), &here.reference) {
                (FieldType::Unknown, _) if !schema.is_composite(&here.ty) => Some(unknown(Unknown::NoType)),
                (FieldType::Unknown, _) => Some(unknown(Unknown::NoField)),
                // Not the field the schema has; the server would refuse it.
                (FieldType::Leaf, _) if field.selection_set().is_some() => Some(unknown(Unknown::Leaf)),
                (FieldType::Leaf, None) => None,
                (FieldType::Leaf, Some(_)) if schema.identity(&name) => None,
                (_, Some(reference)) => Some(Escape::Across {
                    path: Vec::new(),
                    reference: reference.clone(),
                    field: name.clone(),
                }),
                (FieldType::Composite(ty), None) => match field.selection_set() {
                    Some(inner) => {
                        let next = Position {
                            ty: ty.to_owned(),
                            reference: (!schema.confined(ty)).then(|| ty.to_owned()),
                        };
                        self.confine(schema, &inner, &next, scope)?.map(|e| e.under(&name))
                    }
                    None => None,
                },
            };
            if escape.is_some() {
                found = escape;
                break;
            }
        }
        self.confined.insert(key, found.clone());
        Ok(found)
    }
}
