//! What the schema requires of one selection: the checks of a field, of a
//! type, and of a fragment's type condition. Shared by
//! [`super::requirements`] and [`super::filter`] so both apply the same rules.
//!
//! Abstract types are handled conservatively, as Apollo Router does: a
//! field selected on an interface carries the requirements of that field on
//! every implementation, and a field returning an interface or a union
//! carries the type requirements of every possible type (plus the abstract
//! type's own). A fragment whose type condition narrows the parent type
//! carries the condition type's requirements. The exception is `_entities`:
//! its result type `_Entity` covers every entity, so it is authorized by
//! the representations' typenames instead (see [`Rules::entity_types`]).

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

    /// Checks of the type `name` itself (its possible types too when abstract).
    pub fn type_checks(&self, name: &str) -> Vec<Check> {
        let mut out = Vec::new();
        let Some(ty) = self.schema.types.get(name) else {
            return out;
        };
        self.push(ty.directives().iter().map(|d| &***d), &mut out);
        for possible in self.possible_types(name) {
            if possible != name
                && let Some(ty) = self.schema.types.get(possible.as_str())
            {
                self.push(ty.directives().iter().map(|d| &***d), &mut out);
            }
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

    /// The field `field` selected on `parent`.
    pub fn field(&self, parent: &str, field: &str) -> FieldRule {
        let Ok(definition) = self.schema.type_field(parent, field) else {
            return FieldRule {
                checks: Vec::new(),
                ty: None,
            };
        };
        let mut checks = Vec::new();
        self.push(definition.directives.iter().map(|d| &**d), &mut checks);
        if let Some(ExtendedType::Interface(_)) = self.schema.types.get(parent) {
            for object in self.possible_types(parent) {
                if let Ok(implementation) = self.schema.type_field(&object, field) {
                    self.push(implementation.directives.iter().map(|d| &**d), &mut checks);
                }
            }
        }
        if !self.is_entities(parent, field) {
            for check in self.type_checks(definition.ty.inner_named_type()) {
                if !checks.contains(&check) {
                    checks.push(check);
                }
            }
        }
        FieldRule {
            checks,
            ty: Some(definition.ty.clone()),
        }
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
