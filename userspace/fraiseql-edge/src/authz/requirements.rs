//! Computing [`Requirements`] once per document: the operation walked with
//! its fragments expanded, each selection's checks recorded with its
//! response path.

use std::collections::HashMap;

use apollo_compiler::{Name, ast};

use super::{Check, EntityFetch, Entry, PathElement, Requirements, rules::Rules};
use crate::graphql::SubgraphSchema;

/// Most selections visited while computing requirements; past it (a
/// fragment fan-out) every check found applies to the whole operation.
const MAX_VISITS: usize = 50_000;

/// Where an `_entities` field's representations come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Representations {
    /// A variable (the usual `$representations`).
    Variable(Name),
    /// Literal objects: their `__typename`s.
    Literal(Box<[String]>),
}

impl Representations {
    fn of(field: &ast::Field) -> Self {
        match field
            .arguments
            .iter()
            .find(|a| a.name == "representations")
            .map(|a| &*a.value)
        {
            Some(ast::Value::Variable(name)) => Self::Variable(name.clone()),
            Some(ast::Value::List(items)) => Self::Literal(
                items
                    .iter()
                    .filter_map(|item| match &**item {
                        ast::Value::Object(fields) => fields
                            .iter()
                            .find(|(k, _)| k == "__typename")
                            .and_then(|(_, v)| v.as_str())
                            .map(str::to_owned),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => Self::Literal(Box::new([])),
        }
    }
}

/// Computes what `operation` (in `document`, validated against `schema`)
/// requires. Once per document: the result belongs in the document cache.
pub fn requirements(
    schema: &SubgraphSchema,
    document: &ast::Document,
    operation: &ast::OperationDefinition,
) -> Requirements {
    let rules = Rules::new(schema);
    let Some(root) = schema.schema().root_operation(operation.operation_type) else {
        return Requirements::default();
    };
    let mut walk = Walk {
        rules: &rules,
        fragments: fragments(document),
        out: Requirements::default(),
        stack: Vec::new(),
        visits: 0,
    };
    // A directive on the root type guards the whole operation.
    let root_checks = rules.type_checks(root);
    let parent = walk.entry(&[], root_checks, None);
    let mut path = Vec::new();
    walk.set(&operation.selection_set, root, &mut path, parent, true);
    if walk.visits > MAX_VISITS {
        // Too many paths to keep (a fragment fan-out): every check of every
        // selection in the document, each definition walked once, guards
        // the whole operation.
        let mut checks = rules.type_checks(root);
        let mut entities = Vec::new();
        every_check(
            &rules,
            &operation.selection_set,
            root,
            &mut checks,
            &mut entities,
        );
        for definition in &document.definitions {
            if let ast::Definition::FragmentDefinition(f) = definition {
                every_check(
                    &rules,
                    &f.selection_set,
                    &f.type_condition,
                    &mut checks,
                    &mut entities,
                );
            }
        }
        let mut out = Walk {
            rules: &rules,
            fragments: HashMap::new(),
            out: Requirements::default(),
            stack: Vec::new(),
            visits: 0,
        };
        let checks = out.intern(checks);
        out.out.entries.push(Entry {
            path: Box::new([]),
            checks,
            parent: None,
        });
        for field in entities {
            let by_type = rules
                .entity_types(root)
                .into_iter()
                .map(|(name, checks)| (name, out.intern(checks)))
                .collect();
            out.out.entities.push(EntityFetch {
                path: Box::new([]),
                by_type,
                representations: Representations::of(field),
            });
        }
        return out.out;
    }
    walk.out
}

/// Every check of `selections` and the `_entities` fields among them,
/// without following fragment spreads (their definitions are walked once).
fn every_check<'d>(
    rules: &Rules<'_>,
    selections: &'d [ast::Selection],
    parent_type: &str,
    checks: &mut Vec<Check>,
    entities: &mut Vec<&'d ast::Field>,
) {
    let mut add = |found: Vec<Check>| {
        for check in found {
            if !checks.contains(&check) {
                checks.push(check);
            }
        }
    };
    let mut below = Vec::new();
    for selection in selections {
        match selection {
            ast::Selection::Field(field) => {
                let rule = rules.field(parent_type, &field.name, &field.selection_set);
                add(rule.checks);
                if rules.is_entities(parent_type, &field.name) {
                    entities.push(field);
                }
                if let Some(ty) = rule.ty {
                    below.push((&field.selection_set, ty.inner_named_type().clone()));
                }
            }
            ast::Selection::InlineFragment(inline) => {
                let condition = inline.type_condition.clone().unwrap_or_else(|| {
                    Name::new(parent_type).unwrap_or_else(|_| Name::new_static_unchecked("Query"))
                });
                add(rules.condition_checks(parent_type, &condition));
                below.push((&inline.selection_set, condition));
            }
            ast::Selection::FragmentSpread(_) => {}
        }
    }
    for (selections, ty) in below {
        every_check(rules, selections, &ty, checks, entities);
    }
}

/// The fragment definitions of `document` by name.
pub(super) fn fragments(document: &ast::Document) -> HashMap<&Name, &ast::FragmentDefinition> {
    document
        .definitions
        .iter()
        .filter_map(|d| match d {
            ast::Definition::FragmentDefinition(f) => Some((&f.name, &**f)),
            _ => None,
        })
        .collect()
}

/// The `"@"` elements a field of type `ty` adds below its key.
fn list_levels(mut ty: &ast::Type) -> usize {
    let mut levels = 0;
    while let ast::Type::List(item) | ast::Type::NonNullList(item) = ty {
        levels += 1;
        ty = item;
    }
    levels
}

struct Walk<'a, 'd> {
    rules: &'a Rules<'a>,
    fragments: HashMap<&'d Name, &'d ast::FragmentDefinition>,
    out: Requirements,
    stack: Vec<&'d Name>,
    visits: usize,
}

impl<'d> Walk<'_, 'd> {
    fn intern(&mut self, checks: Vec<Check>) -> Box<[u32]> {
        checks
            .into_iter()
            .map(
                |check| match self.out.checks.iter().position(|c| *c == check) {
                    Some(i) => i as u32,
                    None => {
                        self.out.checks.push(check);
                        (self.out.checks.len() - 1) as u32
                    }
                },
            )
            .collect()
    }

    /// Records an entry when `checks` is not empty; returns the parent for
    /// the selections below.
    fn entry(
        &mut self,
        path: &[PathElement],
        checks: Vec<Check>,
        parent: Option<u32>,
    ) -> Option<u32> {
        if checks.is_empty() || self.visits > MAX_VISITS {
            return parent;
        }
        let checks = self.intern(checks);
        self.out.entries.push(Entry {
            path: path.into(),
            checks,
            parent,
        });
        Some((self.out.entries.len() - 1) as u32)
    }

    fn set(
        &mut self,
        selections: &'d [ast::Selection],
        parent_type: &str,
        path: &mut Vec<PathElement>,
        parent: Option<u32>,
        root: bool,
    ) {
        for selection in selections {
            self.visits += 1;
            if self.visits > MAX_VISITS {
                // See `requirements`: the walk is replaced.
                return;
            }
            match selection {
                ast::Selection::Field(field) => {
                    if field.name.starts_with("__") {
                        continue;
                    }
                    let rule = self
                        .rules
                        .field(parent_type, &field.name, &field.selection_set);
                    path.push(PathElement::Key(field.response_name().clone()));
                    if root && self.rules.is_entities(parent_type, &field.name) {
                        let by_type = self
                            .rules
                            .entity_types(parent_type)
                            .into_iter()
                            .map(|(name, checks)| (name, self.intern(checks)))
                            .collect();
                        self.out.entities.push(EntityFetch {
                            path: path.as_slice().into(),
                            by_type,
                            representations: Representations::of(field),
                        });
                    }
                    let below = self.entry(path, rule.checks, parent);
                    if let Some(ty) = &rule.ty
                        && !field.selection_set.is_empty()
                    {
                        let levels = list_levels(ty);
                        path.extend(std::iter::repeat_n(PathElement::Item, levels));
                        self.set(
                            &field.selection_set,
                            ty.inner_named_type(),
                            path,
                            below,
                            false,
                        );
                        path.truncate(path.len() - levels);
                    }
                    path.pop();
                }
                ast::Selection::InlineFragment(inline) => {
                    let condition = inline
                        .type_condition
                        .as_ref()
                        .map_or(parent_type, Name::as_str);
                    let checks = self.rules.condition_checks(parent_type, condition);
                    let below = self.entry(path, checks, parent);
                    self.set(&inline.selection_set, condition, path, below, root);
                }
                ast::Selection::FragmentSpread(spread) => {
                    let Some(fragment) = self.fragments.get(&spread.fragment_name).copied() else {
                        continue;
                    };
                    if self.stack.contains(&&fragment.name) {
                        continue;
                    }
                    let condition = fragment.type_condition.as_str();
                    let checks = self.rules.condition_checks(parent_type, condition);
                    let below = self.entry(path, checks, parent);
                    self.stack.push(&fragment.name);
                    self.set(&fragment.selection_set, condition, path, below, root);
                    self.stack.pop();
                }
            }
        }
    }
}
