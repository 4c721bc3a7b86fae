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
//!
//! A pack may also name the fields through which a selection stays confined
//! (`within`): then a confined type is confined only when reached through
//! one of them, as where one type is both the bound resource's own (a pull
//! request's commits) and another's (the commits of the pull requests a
//! commit is associated with, in forks). And it may name, by type, the
//! fields a reference shows besides its identity (`reference_fields`): what
//! a link to the object shows, such as a repository's description.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    /// `Type.field`s through which a selection stays confined; without the
    /// list, every field returning a confined type does. Fields of a
    /// connection's plumbing need not be listed.
    #[serde(default)]
    pub within: Option<Vec<String>>,
    /// Type → fields that may be selected on a reference of that type,
    /// beside the identity fields; a composite one leads to a reference too.
    #[serde(default)]
    pub reference_fields: BTreeMap<String, Vec<String>>,
}

#[derive(Debug)]
pub struct Schema {
    file: SchemaFile,
    confined: BTreeSet<String>,
    no_environment: BTreeSet<String>,
    identity: BTreeSet<String>,
    within: Option<BTreeSet<(String, String)>>,
    reference_fields: BTreeSet<(String, String)>,
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
            within: nested
                .within
                .as_ref()
                .map(|fields| fields.iter().map(|f| type_field(f)).collect::<Result<_, _>>())
                .transpose()?,
            reference_fields: nested
                .reference_fields
                .iter()
                .flat_map(|(ty, fields)| fields.iter().map(move |f| (ty.clone(), f.clone())))
                .collect(),
            file,
        };
        let listed = schema.confined.iter().chain(&schema.no_environment);
        if let Some(t) = listed.into_iter().find(|t| !schema.is_composite(t)) {
            return Err(format!(
                "confined type `{t}` is not an object type of {}",
                schema.file.source
            ));
        }
        for (ty, field) in schema.within.iter().flatten() {
            match schema.field(ty, field) {
                FieldType::Composite(returned) if schema.confined(returned) => {}
                _ => {
                    return Err(format!(
                        "`{ty}.{field}` is listed within, and is no field of {} returning a confined type",
                        schema.file.source
                    ));
                }
            }
        }
        if let Some((ty, field)) = schema
            .reference_fields
            .iter()
            .find(|(ty, field)| schema.field(ty, field) == FieldType::Unknown)
        {
            return Err(format!(
                "reference field `{ty}.{field}` is no field of {}",
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
        name == "PageInfo" || only(&["edges", "nodes", "pageInfo", "totalCount"]) || only(&["node", "cursor"])
    }

    /// Whether `parent.field`, returning `ty`, keeps a confined selection
    /// confined: `ty` is confined, and the pack lists the field as within
    /// (when it lists any) or `parent` is a connection's plumbing. A page
    /// of a connection holds only cursors, wherever it is reached.
    pub fn leads_within(&self, parent: &str, field: &str, ty: &str) -> bool {
        if !self.confined(ty) {
            return false;
        }
        if ty == "PageInfo" {
            return true;
        }
        let Some(within) = &self.within else {
            return true;
        };
        self.plumbing(parent) || within.contains(&(parent.to_owned(), field.to_owned()))
    }

    /// Whether the type is a connection's plumbing, confined by its shape
    /// alone, whose objects are the nodes it leads to.
    pub fn plumbing(&self, name: &str) -> bool {
        !self.confined.contains(name) && !self.no_environment.contains(name) && self.confined(name)
    }

    /// Whether `field` may be selected on a reference of type `ty`.
    pub fn shown_by_reference(&self, ty: &str, field: &str) -> bool {
        self.identity(field) || self.reference_fields.contains(&(ty.to_owned(), field.to_owned()))
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

/// `Type.field` as a pair.
fn type_field(text: &str) -> Result<(String, String), String> {
    match text.split_once('.') {
        Some((ty, field)) if !ty.is_empty() && !field.is_empty() => Ok((ty.to_owned(), field.to_owned())),
        _ => Err(format!("`{text}` is not `Type.field`")),
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
            ..NestedPack::default()
        };
        Schema::parse(json, &nested).unwrap()
    }

    /// A schema where a pull request is reached from its repository and,
    /// as another repository's, from a commit.
    fn with_within() -> Schema {
        let json = r#"{
            "source": "test", "query": "Query", "mutation": "Mutation",
            "types": {
                "Query": {"repository": "Repository"},
                "Mutation": {"ping": "Boolean"},
                "Repository": {"id": "ID", "description": "String", "pullRequests": "PullRequestConnection", "defaultBranchRef": "Ref", "owner": "User"},
                "PullRequestConnection": {"nodes": "PullRequest", "totalCount": "Int", "pageInfo": "PageInfo"},
                "PageInfo": {"hasNextPage": "Boolean"},
                "PullRequest": {"title": "String", "commits": "Commit", "headRepository": "Repository"},
                "Commit": {"oid": "String", "associatedPullRequests": "PullRequestConnection"},
                "Ref": {"name": "String", "target": "Commit"},
                "User": {"login": "String"}
            },
            "unions": {}
        }"#;
        let nested = NestedPack {
            confined: vec!["PullRequest".into(), "Commit".into(), "Ref".into()],
            identity: vec!["id".into(), "login".into()],
            within: Some(vec!["Repository.pullRequests".into(), "PullRequest.commits".into()]),
            reference_fields: [(
                "Repository".to_owned(),
                vec!["description".to_owned(), "defaultBranchRef".to_owned()],
            )]
            .into(),
            ..NestedPack::default()
        };
        Schema::parse(json, &nested).unwrap()
    }

    #[test]
    fn with_a_within_list_only_its_fields_and_plumbing_stay_confined() {
        let s = with_within();
        assert!(s.leads_within("Repository", "pullRequests", "PullRequestConnection"));
        assert!(s.leads_within("PullRequestConnection", "nodes", "PullRequest"));
        assert!(s.leads_within("PullRequest", "commits", "Commit"));
        assert!(!s.leads_within("Commit", "associatedPullRequests", "PullRequestConnection"));
        assert!(!s.leads_within("Repository", "defaultBranchRef", "Ref"));
        assert!(!s.leads_within("PullRequest", "headRepository", "Repository"));
        // Without the list, every confined type is reached within.
        assert!(schema().leads_within("Environment", "sourceEnvironment", "Deployment"));
        assert!(!schema().leads_within("Deployment", "x", "Environment"));
    }

    #[test]
    fn a_reference_shows_its_identity_and_the_fields_listed_for_its_type() {
        let s = with_within();
        assert!(s.shown_by_reference("Repository", "description"));
        assert!(s.shown_by_reference("Repository", "id"));
        assert!(s.shown_by_reference("User", "login"));
        assert!(!s.shown_by_reference("User", "description"));
        assert!(!s.shown_by_reference("Repository", "pullRequests"));
    }

    #[test]
    fn listed_fields_must_be_the_schemas() {
        let json = r#"{"source": "s", "query": "Q", "mutation": "M", "types": {"A": {"b": "B", "s": "String"}, "B": {"x": "String"}}, "unions": {}}"#;
        let parse = |within: &[&str], reference: &[(&str, &str)]| {
            let nested = NestedPack {
                confined: vec!["B".into()],
                within: Some(within.iter().map(|w| (*w).to_owned()).collect()),
                reference_fields: reference
                    .iter()
                    .map(|(t, f)| ((*t).to_owned(), vec![(*f).to_owned()]))
                    .collect(),
                ..NestedPack::default()
            };
            Schema::parse(json, &nested)
        };
        assert!(parse(&["A.b"], &[("A", "s")]).is_ok());
        for within in ["A.c", "A.s", "Ab", "A."] {
            assert!(parse(&[within], &[]).unwrap_err().contains(within), "{within}");
        }
        assert!(parse(&[], &[("A", "t")]).unwrap_err().contains("`A.t`"));
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
