//! What the schema requires of one selection: the checks of a field, of a
//! type, and of a fragment's type condition. Shared by
//! [`super::requirements`] and [`super::filter`] so both apply the same rules.
//!
//! Abstract types follow Apollo Router: a field selected on an interface
//! carries the requirements of that field (and of its result type) on
//! every implementation; a field returning an interface carries the type
//! requirements of every implementation, unless it selects only
//! `__typename` and fragments (which are then checked by their type
//! condition). Unions carry no requirements of their members: fragments on
//! the members are checked by their type condition. A fragment carries the
//! requirements of its type condition. `_entities` (whose `_Entity` union
//! covers every entity) is authorized by the representations' typenames
//! instead (see [`Rules::entity_types`]).

use apollo_compiler::{
    Name, Schema,
    ast::{self, OperationType, Type},
    schema::{ExtendedType, Implementers},
};

use super::Check;
use crate::graphql::{SubgraphSchema, federation::DirectiveNames};

/// A field as the filter and the requirements see it.
pub(super) struct FieldRule {
    /// Checks of the field and of its result type.
    pub checks: Vec<Check>,
    /// Its type, when the schema knows the field.
    pub ty: Option<Type>,
}

pub(super) struct Rules<'s> {
    schema: &'s Schema,
    names: &'s DirectiveNames,
    implementers: apollo_compiler::collections::HashMap<Name, Implementers>,
    query_root: Option<&'s Name>,
}

impl<'s> Rules<'s> {
    pub fn new(schema: &'s SubgraphSchema) -> Self {
        let valid = schema.schema();
        Self {
            schema: valid,
            names: schema.directive_names(),
            implementers: valid.implementers_map(),
            query_root: valid.root_operation(OperationType::Query),
        }
    }

    /// The checks the directives ask for.
    fn push<'d>(
        &self,
        directives: impl IntoIterator<Item = &'d ast::Directive>,
        out: &mut Vec<Check>,
    ) {
        for directive in directives {
            let check = if directive.name == self.names.authenticated {
                Check::Authenticated
            } else if directive.name == self.names.requires_scopes {
                Check::Scopes(lists(directive, "scopes"))
            } else if directive.name == self.names.policy {
                Check::Policies(lists(directive, "policies"))
            } else {
                continue;
            };
            if !out.contains(&check) {
                out.push(check);
            }
        }
    }

    /// Checks of the type `name` itself.
    pub fn type_checks(&self, name: &str) -> Vec<Check> {
        let mut out = Vec::new();
        if let Some(ty) = self.schema.types.get(name) {
            self.push(ty.directives().iter().map(|d| &***d), &mut out);
        }
        out
    }

    /// The object types a value of type `name` can have.
    pub fn possible_types(&self, name: &str) -> Vec<Name> {
        match self.schema.types.get(name) {
            Some(ExtendedType::Union(u)) => u.members.iter().map(|m| m.name.clone()).collect(),
            Some(ExtendedType::Interface(_)) => self
                .implementers
                .get(name)
                .map(|i| i.objects.iter().cloned().collect())
                .unwrap_or_default(),
            Some(_) => Name::new(name).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// The field `field` selected on `parent`, with `selections` below it.
    pub fn field(&self, parent: &str, field: &str, selections: &[ast::Selection]) -> FieldRule {
        let Ok(definition) = self.schema.type_field(parent, field) else {
            return FieldRule {
                checks: Vec::new(),
                ty: None,
            };
        };
        let mut checks = self.definition_checks(definition);
        if let Some(ExtendedType::Interface(_)) = self.schema.types.get(parent) {
            for object in self.possible_types(parent) {
                if let Ok(implementation) = self.schema.type_field(&object, field) {
                    merge(&mut checks, self.definition_checks(implementation));
                }
            }
        }
        let result = definition.ty.inner_named_type();
        let plain_fields = selections.iter().any(|s| match s {
            ast::Selection::Field(f) => f.name != "__typename",
            _ => false,
        });
        if plain_fields && let Some(ExtendedType::Interface(_)) = self.schema.types.get(result) {
            for object in self.possible_types(result) {
                merge(&mut checks, self.type_checks(&object));
            }
        }
        FieldRule {
            checks,
            ty: Some(definition.ty.clone()),
        }
    }

    /// Checks of a field definition and of its result type (but not for
    /// `_entities`, see the module docs).
    fn definition_checks(&self, definition: &ast::FieldDefinition) -> Vec<Check> {
        let mut checks = Vec::new();
        self.push(definition.directives.iter().map(|d| &**d), &mut checks);
        if definition.name != "_entities" {
            merge(
                &mut checks,
                self.type_checks(definition.ty.inner_named_type()),
            );
        }
        checks
    }

    /// Checks of a fragment with the type condition `condition` in a
    /// selection set of type `parent`.
    pub fn condition_checks(&self, parent: &str, condition: &str) -> Vec<Check> {
        if parent == condition {
            Vec::new()
        } else {
            self.type_checks(condition)
        }
    }

    /// Whether `parent.field` is the federation entity fetch.
    pub fn is_entities(&self, parent: &str, field: &str) -> bool {
        field == "_entities" && self.query_root.is_some_and(|q| q == parent)
    }

    /// The entity types of `_entities` whose type-level checks are not empty.
    pub fn entity_types(&self, parent: &str) -> Vec<(Name, Vec<Check>)> {
        let Ok(definition) = self.schema.type_field(parent, "_entities") else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for object in self.possible_types(definition.ty.inner_named_type()) {
            let mut checks = Vec::new();
            if let Some(ty) = self.schema.types.get(object.as_str()) {
                self.push(ty.directives().iter().map(|d| &***d), &mut checks);
            }
            if !checks.is_empty() {
                out.push((object, checks));
            }
        }
        out
    }
}

fn merge(into: &mut Vec<Check>, checks: Vec<Check>) {
    for check in checks {
        if !into.contains(&check) {
            into.push(check);
        }
    }
}

/// `[[String]]` argument values; anything else in it is ignored.
fn lists(directive: &ast::Directive, argument: &str) -> Vec<Vec<String>> {
    let Some(outer) = directive
        .specified_argument_by_name(argument)
        .and_then(|v| v.as_list())
    else {
        return Vec::new();
    };
    outer
        .iter()
        .map(|inner| match inner.as_list() {
            Some(items) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            // A lone value is a one-item list (input coercion).
            None => inner.as_str().map(str::to_owned).into_iter().collect(),
        })
        .collect()
}
