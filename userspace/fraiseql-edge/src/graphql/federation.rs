//! Apollo Federation definitions a subgraph SDL uses without defining.
//!
//! A federation subgraph's SDL applies `@key`, `@link`, `@authenticated`,
//! `@requiresScopes`, `@policy`, `@cost`… and its router adds `_Any`,
//! `_Entity`, `_entities` and `_service`, but the SDL rarely defines them.
//! `complete` reads the SDL and returns the definitions to add before
//! validation: only what is used (or, for the entry points, what federation
//! needs) and not already defined, so an SDL that defines them itself (a
//! Federation 1 SDL with `directive @key(fields: _FieldSet!)`) still parses.
//!
//! Names follow `@link` (Federation 2): an element listed in `import` has its
//! own name (or its `as` rename, `{ name: "@authenticated", as: "@auth" }`);
//! any other is spelled with the link's prefix, `@federation__authenticated`
//! (or `@{as}__authenticated` when the link is renamed). Without a
//! federation `@link` (Federation 1, or a plain SDL) only the default names
//! are recognised; federation entry points are only added when the SDL uses
//! `@key`.

use std::collections::HashSet;

use apollo_compiler::{Name, ast};

/// The names under which an SDL spells the authorization directives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectiveNames {
    /// `@authenticated`.
    pub authenticated: Name,
    /// `@requiresScopes`.
    pub requires_scopes: Name,
    /// `@policy`.
    pub policy: Name,
}

impl Default for DirectiveNames {
    fn default() -> Self {
        Self {
            authenticated: Name::new_static_unchecked("authenticated"),
            requires_scopes: Name::new_static_unchecked("requiresScopes"),
            policy: Name::new_static_unchecked("policy"),
        }
    }
}

/// What [`complete`] found and adds.
pub(super) struct Completion {
    /// Definitions to parse next to the SDL (empty when nothing is missing).
    pub additions: String,
    /// The SDL uses federation (a federation `@link` or `@key`).
    pub federation: bool,
    /// The authorization directives' names.
    pub names: DirectiveNames,
}

/// A federation directive: its name in the spec and its definition, with
/// `{FieldSet}`, `{Scope}`, `{Policy}`, `{ContextFieldValue}` standing for
/// the local names of those scalars.
const DIRECTIVES: &[(&str, &str)] = &[
    (
        "key",
        "(fields: {FieldSet}!, resolvable: Boolean = true) repeatable on OBJECT | INTERFACE",
    ),
    ("requires", "(fields: {FieldSet}!) on FIELD_DEFINITION"),
    ("provides", "(fields: {FieldSet}!) on FIELD_DEFINITION"),
    ("external", "(reason: String) on OBJECT | FIELD_DEFINITION"),
    (
        "tag",
        "(name: String!) repeatable on FIELD_DEFINITION | OBJECT | INTERFACE | UNION \
         | ARGUMENT_DEFINITION | SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT \
         | INPUT_FIELD_DEFINITION | SCHEMA",
    ),
    ("extends", " on OBJECT | INTERFACE"),
    ("shareable", " repeatable on OBJECT | FIELD_DEFINITION"),
    (
        "inaccessible",
        " on FIELD_DEFINITION | OBJECT | INTERFACE | UNION | ARGUMENT_DEFINITION | SCALAR \
         | ENUM | ENUM_VALUE | INPUT_OBJECT | INPUT_FIELD_DEFINITION",
    ),
    (
        "override",
        "(from: String!, label: String) on FIELD_DEFINITION",
    ),
    ("composeDirective", "(name: String!) repeatable on SCHEMA"),
    ("interfaceObject", " on OBJECT"),
    (
        "authenticated",
        " on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM",
    ),
    (
        "requiresScopes",
        "(scopes: [[{Scope}!]!]!) on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM",
    ),
    (
        "policy",
        "(policies: [[{Policy}!]!]!) on FIELD_DEFINITION | OBJECT | INTERFACE | SCALAR | ENUM",
    ),
    (
        "cost",
        "(weight: Int!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION \
         | INPUT_FIELD_DEFINITION | OBJECT | SCALAR",
    ),
    (
        "listSize",
        "(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], \
         requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION",
    ),
    (
        "context",
        "(name: String!) repeatable on INTERFACE | OBJECT | UNION",
    ),
    (
        "fromContext",
        "(field: {ContextFieldValue}) on ARGUMENT_DEFINITION",
    ),
];

/// The federation scalars directive arguments use.
const SCALARS: &[&str] = &["FieldSet", "Scope", "Policy", "ContextFieldValue"];

/// The link spec's own definitions (always spelled with their default names).
const LINK: &str = "directive @link(url: String, as: String, for: link__Purpose, \
                    import: [link__Import]) repeatable on SCHEMA";

/// Local names of the federation elements, per the SDL's `@link`.
struct Naming {
    /// `Some(prefix)` with a federation `@link`; `None` otherwise.
    prefix: Option<String>,
    /// `(spec name with "@" for directives, local name)` from `import`.
    imports: Vec<(String, String)>,
}

impl Naming {
    /// The local names of the directive `name` (the spec's, without `@`).
    fn directive(&self, name: &str) -> Vec<String> {
        self.local(&format!("@{name}"), name)
    }

    /// The local name of the scalar `name` (used in added definitions).
    fn scalar(&self, name: &str) -> String {
        match &self.prefix {
            Some(_) => self.local(name, name).remove(0),
            // Federation 1 spells it `_FieldSet`.
            None if name == "FieldSet" => "_FieldSet".to_owned(),
            None => format!("federation__{name}"),
        }
    }

    fn local(&self, spec_name: &str, bare: &str) -> Vec<String> {
        match &self.prefix {
            Some(prefix) => {
                let imported = self
                    .imports
                    .iter()
                    .find(|(name, _)| name == spec_name)
                    .map(|(_, local)| local.trim_start_matches('@').to_owned());
                vec![imported.unwrap_or_else(|| format!("{prefix}__{bare}"))]
            }
            // Without a link there is no prefix: a `@federation__…` name
            // stays undefined (and fails validation) rather than being
            // accepted but not enforced.
            None => vec![bare.to_owned()],
        }
    }
}

/// Reads the federation `@link` (if any) from the schema definitions.
fn naming(document: &ast::Document) -> Naming {
    let mut naming = Naming {
        prefix: None,
        imports: Vec::new(),
    };
    for definition in &document.definitions {
        if !matches!(
            definition,
            ast::Definition::SchemaDefinition(_) | ast::Definition::SchemaExtension(_)
        ) {
            continue;
        }
        for link in definition.directives().get_all("link") {
            let url = link
                .specified_argument_by_name("url")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            if !url.contains("specs.apollo.dev/federation/") {
                continue;
            }
            let prefix = link
                .specified_argument_by_name("as")
                .and_then(|v| v.as_str())
                .unwrap_or("federation");
            naming.prefix = Some(prefix.to_owned());
            let imports = link
                .specified_argument_by_name("import")
                .and_then(|v| v.as_list())
                .unwrap_or_default();
            for import in imports {
                match &**import {
                    ast::Value::String(name) => {
                        naming.imports.push((name.clone(), name.clone()));
                    }
                    ast::Value::Object(fields) => {
                        let get = |key: &str| {
                            fields
                                .iter()
                                .find(|(k, _)| k == key)
                                .and_then(|(_, v)| v.as_str())
                        };
                        if let Some(name) = get("name") {
                            let local = get("as").unwrap_or(name);
                            naming.imports.push((name.to_owned(), local.to_owned()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    naming
}

/// Every directive applied anywhere in the SDL.
fn used_directives(document: &ast::Document) -> HashSet<Name> {
    fn fields(used: &mut HashSet<Name>, fields: &[apollo_compiler::Node<ast::FieldDefinition>]) {
        for field in fields {
            used.extend(field.directives.iter().map(|d| d.name.clone()));
            values(used, &field.arguments);
        }
    }
    fn values(
        used: &mut HashSet<Name>,
        values: &[apollo_compiler::Node<ast::InputValueDefinition>],
    ) {
        for value in values {
            used.extend(value.directives.iter().map(|d| d.name.clone()));
        }
    }
    let mut used = HashSet::new();
    for definition in &document.definitions {
        used.extend(definition.directives().iter().map(|d| d.name.clone()));
        match definition {
            ast::Definition::ObjectTypeDefinition(d) => fields(&mut used, &d.fields),
            ast::Definition::ObjectTypeExtension(d) => fields(&mut used, &d.fields),
            ast::Definition::InterfaceTypeDefinition(d) => fields(&mut used, &d.fields),
            ast::Definition::InterfaceTypeExtension(d) => fields(&mut used, &d.fields),
            ast::Definition::InputObjectTypeDefinition(d) => values(&mut used, &d.fields),
            ast::Definition::InputObjectTypeExtension(d) => values(&mut used, &d.fields),
            ast::Definition::DirectiveDefinition(d) => values(&mut used, &d.arguments),
            ast::Definition::EnumTypeDefinition(d) => {
                for v in &d.values {
                    used.extend(v.directives.iter().map(|d| d.name.clone()));
                }
            }
            ast::Definition::EnumTypeExtension(d) => {
                for v in &d.values {
                    used.extend(v.directives.iter().map(|d| d.name.clone()));
                }
            }
            _ => {}
        }
    }
    used
}

/// The definitions `document` uses without defining (see the module docs).
pub(super) fn complete(document: &ast::Document) -> Completion {
    let naming = naming(document);
    let used = used_directives(document);
    let mut directives = HashSet::new();
    let mut types = HashSet::new();
    let mut query_fields = HashSet::new();
    let mut query_root = None;
    for definition in &document.definitions {
        match definition {
            ast::Definition::DirectiveDefinition(d) => {
                directives.insert(d.name.as_str());
            }
            ast::Definition::SchemaDefinition(d) => {
                query_root = root_query(&d.root_operations).or(query_root);
            }
            ast::Definition::SchemaExtension(d) => {
                query_root = root_query(&d.root_operations).or(query_root);
            }
            _ => {
                if let Some(name) = definition.name()
                    && !definition.is_extension_definition()
                {
                    types.insert(name.as_str());
                }
            }
        }
    }
    let query_root = query_root.unwrap_or("Query");
    for definition in &document.definitions {
        let fields = match definition {
            ast::Definition::ObjectTypeDefinition(d) if d.name == query_root => &d.fields,
            ast::Definition::ObjectTypeExtension(d) if d.name == query_root => &d.fields,
            _ => continue,
        };
        query_fields.extend(fields.iter().map(|f| f.name.as_str()));
    }

    let mut out = String::new();
    let mut scalars = HashSet::new();
    for (name, signature) in DIRECTIVES {
        for local in naming.directive(name) {
            if directives.contains(local.as_str()) || !used.iter().any(|u| *u == local.as_str()) {
                continue;
            }
            let mut signature = (*signature).to_owned();
            for scalar in SCALARS {
                let placeholder = format!("{{{scalar}}}");
                if signature.contains(&placeholder) {
                    let local = naming.scalar(scalar);
                    signature = signature.replace(&placeholder, &local);
                    scalars.insert(local);
                }
            }
            out.push_str(&format!("directive @{local}{signature}\n"));
        }
    }
    if used.iter().any(|u| u == "link") && !directives.contains("link") {
        out.push_str(LINK);
        out.push('\n');
        scalars.insert("link__Import".to_owned());
        if !types.contains("link__Purpose") {
            out.push_str("enum link__Purpose { SECURITY EXECUTION }\n");
        }
    }
    let key_names = naming.directive("key");
    let entities: Vec<&str> = document
        .definitions
        .iter()
        .filter(|d| {
            matches!(
                d,
                ast::Definition::ObjectTypeDefinition(_) | ast::Definition::ObjectTypeExtension(_)
            ) && d
                .directives()
                .iter()
                .any(|u| key_names.iter().any(|k| u.name == k.as_str()))
        })
        .filter_map(|d| d.name().map(Name::as_str))
        .collect::<Vec<_>>();
    let federation = naming.prefix.is_some()
        || used
            .iter()
            .any(|u| key_names.iter().any(|k| u == k.as_str()));
    let mut root_fields = Vec::new();
    if federation {
        scalars.insert("_Any".to_owned());
        if !types.contains("_Service") {
            out.push_str("type _Service { sdl: String }\n");
        }
        let mut members: Vec<&str> = Vec::new();
        for name in &entities {
            if !members.contains(name) {
                members.push(name);
            }
        }
        if !members.is_empty() {
            if !types.contains("_Entity") {
                out.push_str(&format!("union _Entity = {}\n", members.join(" | ")));
            }
            if !query_fields.contains("_entities") {
                root_fields.push("_entities(representations: [_Any!]!): [_Entity]!");
            }
        }
        if !query_fields.contains("_service") {
            root_fields.push("_service: _Service!");
        }
    }
    for scalar in scalars {
        if !types.contains(scalar.as_str()) {
            out.push_str(&format!("scalar {scalar}\n"));
        }
    }
    if !root_fields.is_empty() {
        let query_exists = document
            .definitions
            .iter()
            .any(|d| d.name().is_some_and(|n| n == query_root));
        let keyword = if query_exists { "extend type" } else { "type" };
        out.push_str(&format!(
            "{keyword} {query_root} {{ {} }}\n",
            root_fields.join(" ")
        ));
    }

    let first = |name: &str| {
        let local = naming.directive(name).remove(0);
        Name::new(&local).unwrap_or_else(|_| Name::new_static_unchecked("invalid"))
    };
    Completion {
        additions: out,
        federation,
        names: DirectiveNames {
            authenticated: first("authenticated"),
            requires_scopes: first("requiresScopes"),
            policy: first("policy"),
        },
    }
}

fn root_query(
    roots: &[apollo_compiler::Node<(ast::OperationType, ast::NamedType)>],
) -> Option<&str> {
    roots
        .iter()
        .find(|r| r.0 == ast::OperationType::Query)
        .map(|r| r.1.as_str())
}

#[cfg(test)]
mod tests {
    use crate::graphql::{GraphqlLimits, SubgraphSchema, check};

    /// A Federation 2 subgraph as `rover subgraph introspect` prints it.
    const FED2: &str = r#"
extend schema
  @link(url: "https://specs.apollo.dev/federation/v2.9",
        import: ["@key", "@shareable", "@authenticated", "@requiresScopes", "@policy",
                 "@cost", "@listSize", "FieldSet"])

type Query {
  product(id: ID!): Product
  products(first: Int = 10): [Product!]! @listSize(slicingArguments: ["first"])
  me: User @authenticated
}

type Product @key(fields: "id") {
  id: ID!
  name: String @shareable
  price: Int @requiresScopes(scopes: [["read:price"], ["admin"]])
  margin: Int @policy(policies: [["finance"]]) @cost(weight: 5)
}

type User @key(fields: "id") @key(fields: "email", resolvable: false) {
  id: ID!
  email: String!
}
"#;

    #[test]
    fn a_federation_2_subgraph_validates() {
        let schema = SubgraphSchema::parse(FED2).unwrap();
        let s = schema.schema();
        let query = s.get_object("Query").unwrap();
        assert!(query.fields.contains_key("_entities"));
        assert!(query.fields.contains_key("_service"));
        let entity = s.types.get("_Entity").unwrap();
        assert!(s.is_subtype("_Entity", "Product"), "{entity:?}");
        assert!(s.is_subtype("_Entity", "User"));
        assert_eq!(schema.directive_names().authenticated, "authenticated");
        assert_eq!(schema.directive_names().requires_scopes, "requiresScopes");

        let doc = "query ($r: [_Any!]!) { _entities(representations: $r) { ... on Product { name price } } _service { sdl } }";
        check(doc, None, Some(s), &GraphqlLimits::default()).unwrap();
        let bad =
            "query ($r: [_Any!]!) { _entities(representations: $r) { ... on Product { nope } } }";
        assert!(check(bad, None, Some(s), &GraphqlLimits::default()).is_err());
    }

    #[test]
    fn names_not_imported_are_prefixed_and_renames_are_followed() {
        let sdl = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5",
                    import: ["@key", { name: "@authenticated", as: "@auth" }])
type Query { a: Int @auth b: Int @federation__requiresScopes(scopes: [["s"]]) c: Int @federation__policy(policies: [["p"]]) }
type T @key(fields: "id") { id: ID! }
"#;
        let schema = SubgraphSchema::parse(sdl).unwrap();
        let names = schema.directive_names();
        assert_eq!(names.authenticated, "auth");
        assert_eq!(names.requires_scopes, "federation__requiresScopes");
        assert_eq!(names.policy, "federation__policy");
        // Not imported: the default name is not defined.
        let unimported = sdl.replace("@auth b", "@authenticated b");
        assert!(SubgraphSchema::parse(&unimported).is_err());
    }

    #[test]
    fn a_renamed_link_prefixes_with_its_name() {
        let sdl = r#"
schema @link(url: "https://specs.apollo.dev/federation/v2.3", as: "fed") { query: Root }
type Root { a: Int @fed__authenticated }
type T @fed__key(fields: "id") { id: ID! }
"#;
        let schema = SubgraphSchema::parse(sdl).unwrap();
        assert_eq!(schema.directive_names().authenticated, "fed__authenticated");
        assert!(
            schema
                .schema()
                .get_object("Root")
                .unwrap()
                .fields
                .contains_key("_entities")
        );
    }

    #[test]
    fn a_federation_1_sdl_that_defines_its_directives_still_parses() {
        let sdl = r#"
scalar _FieldSet
scalar _Any
directive @key(fields: _FieldSet!) repeatable on OBJECT | INTERFACE
directive @external on FIELD_DEFINITION
extend type Query { topProducts: [Product] }
type Product @key(fields: "upc") { upc: String! weight: Int @external }
"#;
        let schema = SubgraphSchema::parse(sdl).unwrap();
        assert!(
            schema
                .schema()
                .get_object("Query")
                .unwrap()
                .fields
                .contains_key("_entities")
        );
        // Federation 1 without definitions: `_FieldSet` is added.
        let bare = "extend type Query { p: Product } type Product @key(fields: \"upc\") @extends { upc: String! @external }";
        SubgraphSchema::parse(bare).unwrap();
    }

    #[test]
    fn a_subgraph_without_query_gets_one() {
        let sdl = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])
type Product @key(fields: "id") { id: ID! name: String }
"#;
        let schema = SubgraphSchema::parse(sdl).unwrap();
        let doc =
            "query ($r: [_Any!]!) { _entities(representations: $r) { ... on Product { name } } }";
        check(doc, None, Some(schema.schema()), &GraphqlLimits::default()).unwrap();
    }

    #[test]
    fn prefixed_names_need_a_link() {
        assert!(SubgraphSchema::parse("type Query { a: Int @federation__authenticated }").is_err());
        let schema = SubgraphSchema::parse("type Query { a: Int @authenticated }").unwrap();
        assert_eq!(schema.directive_names().authenticated, "authenticated");
    }

    #[test]
    fn a_plain_sdl_is_unchanged() {
        let schema = SubgraphSchema::parse("type Query { a: Int }").unwrap();
        assert!(
            !schema
                .schema()
                .get_object("Query")
                .unwrap()
                .fields
                .contains_key("_service")
        );
        assert!(schema.schema().types.get("_Any").is_none());
        // Orphan extensions are still refused in a plain SDL.
        assert!(SubgraphSchema::parse("extend type Query { a: Int }").is_err());
        assert!(SubgraphSchema::parse("type Query { a: Int @unknown }").is_err());
    }
}
