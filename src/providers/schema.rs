//! A GraphQL provider's schema, as much of it as the broker reads: what each
//! field returns, and which object types hold one environment's data.
//!
//! With it the fields nested under a root field are typed, so that a read
//! bound to one environment cannot follow a reference out of it:
//! `deployment(id: ours) { service { deployments { … } } }` would read the
//! service's deployments in every environment. A position in a selection is
//! *confined* while the objects there belong to the resource the root field
//! is bound to: it stays so through a field whose type the pack lists as
//! confined (a deployment under an environment, a log line under a
//! deployment) or a connection's plumbing, and stops being so through any
//! other type (a service, a project, an environment reached from another
//! object: references to resources that span environments). Where a position
//! is not confined, only identity fields (`id`, `name`) may be selected. A
//! type the pack does not list, such as one a newer schema adds, is a
//! reference until someone reviews it.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;

use super::graphql::OperationType;

/// The generated schema file (`scripts/railway-schema.py`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    source: String,
    query: String,
    mutation: String,
    /// Object and interface types: field → the named type it returns.
    types: HashMap<String, HashMap<String, String>>,
    /// Union types → their members.
    unions: HashMap<String, Vec<String>>,
}

/// The pack's reading of the schema: `[graphql.nested]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NestedPack {
    /// Object types whose objects belong to the resource they are reached
    /// from, in its environment.
    pub confined: Vec<String>,
    /// Leaf fields that only identify an object, which may be selected on
    /// any object.
    pub identity: Vec<String>,
    /// Object types that hold no environment's data (the provider's own
    /// regions): confined too, and a root field returning them needs no
    /// environment of the credential's.
    #[serde(default)]
    pub no_environment: Vec<String>,
}

#[derive(Debug)]
pub struct Schema {
    file: SchemaFile,
    confined: BTreeSet<String>,
    no_environment: BTreeSet<String>,
    identity: BTreeSet<String>,
}

/// What a field is on a given type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType<'a> {
    /// A scalar or an enum.
    Leaf,
    /// An object, interface or union type, by name.
    Composite(&'a str),
    /// The type has no such field, or the schema has no such type.
    Unknown,
}

impl Schema {
    /// Reads the generated file against the pack's lists, which must name
    /// types and fields the schema has.
    pub fn parse(json: &str, nested: &NestedPack) -> Result<Schema, String> {
        let file: SchemaFile =
            serde_json::from_str(json).map_err(|e| format!("the schema file does not parse: {e}"))?;
        let schema = Schema {
            confined: nested.confined.iter().cloned().collect(),
            no_environment: nested.no_environment.iter().cloned().collect(),
            identity: nested.identity.iter().cloned().collect(),
            file,
        };
        let listed = schema.confined.iter().chain(&schema.no_environment);
        if let Some(t) = listed.into_iter().find(|t| !schema.is_composite(t)) {
            return Err(format!(
                "confined type `{t}` is not an object type of {}",
                schema.file.source
            ));
        }
        Ok(schema)
    }

    /// Where the schema was read from.
    pub fn source(&self) -> &str {
        &self.file.source
    }

    /// The root type of an operation.
    pub fn root(&self, operation: OperationType) -> &str {
        match operation {
            OperationType::Query => &self.file.query,
            OperationType::Mutation => &self.file.mutation,
        }
    }

    pub fn is_composite(&self, name: &str) -> bool {
        self.file.types.contains_key(name) || self.file.unions.contains_key(name)
    }

    /// What `field` returns on `parent`.
    pub fn field(&self, parent: &str, field: &str) -> FieldType<'_> {
        if field == "__typename" && self.is_composite(parent) {
            return FieldType::Leaf;
        }
        match self.file.types.get(parent).and_then(|fields| fields.get(field)) {
            None => FieldType::Unknown,
            Some(returned) if self.is_composite(returned) => FieldType::Composite(returned),
            Some(_) => FieldType::Leaf,
        }
    }

    /// Whether objects of this type, reached from a confined position,
    /// belong to the same resource: a type the pack lists, or a
    /// connection's plumbing (`…Connection { edges pageInfo }`,
    /// `…Edge { node cursor }`, `PageInfo`), whose nodes are judged by their
    /// own type.
    pub fn confined(&self, name: &str) -> bool {
        if self.confined.contains(name) || self.no_environment.contains(name) {
            return true;
        }
        let Some(fields) = self.file.types.get(name) else {
            return false;
        };
        let only = |allowed: &[&str]| fields.keys().all(|f| allowed.contains(&f.as_str()));
        name == "PageInfo" || only(&["edges", "pageInfo"]) || only(&["node", "cursor"])
    }

    /// Whether objects of this type hold one environment's data: confined,
    /// and not a type of no environment.
    pub fn environment_data(&self, name: &str) -> bool {
        self.confined(name) && !self.no_environment.contains(name)
    }

    /// The fields of an object or interface type.
    pub fn fields(&self, ty: &str) -> impl Iterator<Item = &str> {
        self.file
            .types
            .get(ty)
            .into_iter()
            .flat_map(|f| f.keys())
            .map(String::as_str)
    }

    /// Whether a leaf field only identifies its object.
    pub fn identity(&self, field: &str) -> bool {
        field == "__typename" || self.identity.contains(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        let json = r#"{
            "source": "test", "query": "Query", "mutation": "Mutation",
            "types": {
                "Query": {"environment": "Environment"},
                "Mutation": {"ping": "Boolean"},
                "Environment": {"id": "ID", "name": "String", "config": "JSON", "deployments": "EnvDeploymentsConnection", "sourceEnvironment": "Environment"},
                "EnvDeploymentsConnection": {"edges": "EnvDeploymentsEdge", "pageInfo": "PageInfo"},
                "EnvDeploymentsEdge": {"node": "Deployment", "cursor": "String"},
                "PageInfo": {"hasNextPage": "Boolean"},
                "Deployment": {"id": "ID", "status": "String"},
                "Odd": {"edges": "String", "secret": "String"},
                "Region": {"name": "String"}
            },
            "unions": {"Either": ["Environment", "Deployment"]}
        }"#;
        let nested = NestedPack {
            confined: vec!["Deployment".into()],
            identity: vec!["id".into(), "name".into()],
            no_environment: vec!["Region".into()],
        };
        Schema::parse(json, &nested).unwrap()
    }

    #[test]
    fn fields_are_typed_as_leaves_composites_or_unknown() {
        let s = schema();
        assert_eq!(s.field("Environment", "config"), FieldType::Leaf);
        assert_eq!(
            s.field("Environment", "sourceEnvironment"),
            FieldType::Composite("Environment")
        );
        assert_eq!(s.field("Environment", "__typename"), FieldType::Leaf);
        assert_eq!(s.field("Either", "__typename"), FieldType::Leaf);
        assert_eq!(s.field("Environment", "secrets"), FieldType::Unknown);
        assert_eq!(s.field("Nope", "__typename"), FieldType::Unknown);
        assert_eq!(s.field("Either", "id"), FieldType::Unknown);
        assert_eq!(s.root(OperationType::Query), "Query");
    }

    #[test]
    fn listed_types_and_connection_plumbing_are_confined_nothing_else() {
        let s = schema();
        for t in [
            "Deployment",
            "EnvDeploymentsConnection",
            "EnvDeploymentsEdge",
            "PageInfo",
        ] {
            assert!(s.confined(t), "{t}");
        }
        for t in ["Environment", "Odd", "Either", "Nope"] {
            assert!(!s.confined(t), "{t}");
        }
        assert!(s.identity("id") && s.identity("__typename") && !s.identity("config"));
        assert!(s.confined("Region") && !s.environment_data("Region") && s.environment_data("Deployment"));
    }

    #[test]
    fn a_confined_type_the_schema_lacks_is_refused() {
        let nested = NestedPack {
            confined: vec!["Deploymnet".into()],
            ..NestedPack::default()
        };
        let json = r#"{"source": "s", "query": "Q", "mutation": "M", "types": {}, "unions": {}}"#;
        let err = Schema::parse(json, &nested).unwrap_err();
        assert!(err.contains("`Deploymnet`"), "{err}");
    }
}
