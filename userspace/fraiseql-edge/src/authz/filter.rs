//! Filter mode: the document without its unauthorized selections, and the
//! patch that answers them in the subgraph's response.
//!
//! The rewrite holds the selected operation only (with its name and
//! directives) and the fragments it still spreads. It keeps fragments
//! (named and inline), directives and variables; a named fragment is filtered once (its content depends only
//! on types) and dropped when nothing of it is left or it is no longer
//! spread, and variable definitions no longer used are dropped, so the
//! output stays valid. A removed selection under a type condition narrower
//! than its parent's type is answered `null` only in objects of that type:
//! the rewrite then selects `__typename` at that level (when the document
//! does not) and the patch removes it again.

use std::collections::{HashMap, HashSet};

use apollo_compiler::{Name, Node, ast};
use serde_json::Value;

use super::{Verdict, requirements::fragments, rules::Rules};
use crate::graphql::SubgraphSchema;

/// The outcome of [`filter`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filtered {
    /// The document to forward; `None` when nothing is left (do not call
    /// the subgraph: answer [`ResponsePatch::response`]).
    pub document: Option<String>,
    /// What to do to the subgraph's response.
    pub patch: ResponsePatch,
}

/// Nulls, null propagation and errors for the removed selections.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponsePatch {
    nulls: Vec<NullAt>,
    strip_typename: Vec<Strip>,
    errors: Vec<Value>,
}

/// A removed field: `null` at `steps` (the last is its key), in objects
/// whose `__typename` is in `on` (any object when `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct NullAt {
    steps: Vec<Step>,
    on: Option<Vec<Name>>,
}

/// A `__typename` the rewrite added at `steps`, removed again except in
/// objects of the types `keep` (the document asks it under fragments on them).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Strip {
    steps: Vec<Step>,
    keep: Vec<Name>,
}

/// One step of a response path, with the nullability of what it reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key { key: Name, non_null: bool },
    Item { non_null: bool },
}

/// Rewrites `operation` (of `document`) without the selections `verdict`
/// refuses. Only called when `!verdict.is_authorized()`.
pub fn filter(
    schema: &SubgraphSchema,
    document: &ast::Document,
    operation: &ast::OperationDefinition,
    verdict: &Verdict,
) -> Filtered {
    let errors = match verdict.errors() {
        Value::Array(errors) => errors,
        _ => Vec::new(),
    };
    let rules = Rules::new(schema);
    let Some(root) = schema.schema().root_operation(operation.operation_type) else {
        return Filtered {
            document: None,
            patch: ResponsePatch {
                errors,
                ..ResponsePatch::default()
            },
        };
    };
    let mut walk = Walk {
        rules: &rules,
        verdict,
        fragments: fragments(document),
        filtered: HashMap::new(),
        stack: Vec::new(),
        patch: ResponsePatch {
            errors,
            ..ResponsePatch::default()
        },
    };
    let mut path = Vec::new();
    // The operation is refused as a whole (a restricted root type, or a
    // document too large to keep paths for): every root field is null.
    if walk.denied(&rules.type_checks(root)) || verdict.paths.iter().any(Vec::is_empty) {
        walk.null_all(
            &operation.selection_set,
            root,
            &path,
            None,
            &mut HashSet::new(),
        );
        return Filtered {
            document: None,
            patch: walk.patch,
        };
    }
    let (selections, _) = walk.set(&operation.selection_set, root, &mut path, None, true);
    if selections.is_empty() {
        return Filtered {
            document: None,
            patch: walk.patch,
        };
    }

    // The fragments still spread, in their original order.
    let mut used = HashSet::new();
    let mut pending: Vec<&Name> = Vec::new();
    spreads(&selections, &mut pending);
    while let Some(name) = pending.pop() {
        if used.insert(name.clone())
            && let Some(Some(body)) = walk.filtered.get(name)
        {
            spreads(body, &mut pending);
        }
    }
    let mut out = ast::Document::new();
    let mut variables = HashSet::new();
    let mut operation = operation.clone();
    operation.selection_set = selections;
    directive_variables(&operation.directives, &mut variables);
    selection_variables(&operation.selection_set, &mut variables);
    for definition in &document.definitions {
        if let ast::Definition::FragmentDefinition(fragment) = definition
            && used.contains(&fragment.name)
            && let Some(Some(body)) = walk.filtered.get(&fragment.name)
        {
            let mut fragment = (**fragment).clone();
            fragment.selection_set = body.clone();
            directive_variables(&fragment.directives, &mut variables);
            selection_variables(&fragment.selection_set, &mut variables);
            out.definitions
                .push(ast::Definition::FragmentDefinition(Node::new(fragment)));
        }
    }
    operation.variables.retain(|v| variables.contains(&v.name));
    out.definitions.insert(
        0,
        ast::Definition::OperationDefinition(Node::new(operation)),
    );
    Filtered {
        document: Some(out.to_string()),
        patch: walk.patch,
    }
}

struct Walk<'a, 'd> {
    rules: &'a Rules<'a>,
    verdict: &'a Verdict,
    fragments: HashMap<&'d Name, &'d ast::FragmentDefinition>,
    /// Filtered fragment bodies (`None`: nothing left).
    filtered: HashMap<Name, Option<Vec<ast::Selection>>>,
    stack: Vec<&'d Name>,
    patch: ResponsePatch,
}

impl<'d> Walk<'_, 'd> {
    fn denied(&self, checks: &[super::Check]) -> bool {
        checks.iter().any(|c| self.verdict.failed.contains(c))
    }

    fn null(&mut self, path: &[Step], key: &Name, non_null: bool, on: Option<&[Name]>) {
        let mut steps = path.to_vec();
        steps.push(Step::Key {
            key: key.clone(),
            non_null,
        });
        let null = NullAt {
            steps,
            on: on.map(<[Name]>::to_vec),
        };
        if !self.patch.nulls.contains(&null) {
            self.patch.nulls.push(null);
        }
    }

    /// Nulls for every field a refused fragment would have answered
    /// (`seen`: fragments already expanded at this level).
    fn null_all(
        &mut self,
        selections: &'d [ast::Selection],
        ty: &str,
        path: &[Step],
        on: Option<&[Name]>,
        seen: &mut HashSet<&'d Name>,
    ) {
        for selection in selections {
            match selection {
                ast::Selection::Field(field) => {
                    let non_null = self
                        .rules
                        .field(ty, &field.name, &field.selection_set)
                        .ty
                        .is_some_and(|t| t.is_non_null());
                    self.null(path, field.response_name(), non_null, on);
                }
                ast::Selection::InlineFragment(inline) => {
                    let condition = inline.type_condition.as_ref().map_or(ty, Name::as_str);
                    self.null_all(&inline.selection_set, condition, path, on, seen);
                }
                ast::Selection::FragmentSpread(spread) => {
                    if let Some(fragment) = self.fragments.get(&spread.fragment_name).copied()
                        && seen.insert(&fragment.name)
                    {
                        let condition = fragment.type_condition.as_str();
                        self.null_all(&fragment.selection_set, condition, path, on, seen);
                    }
                }
            }
        }
    }

    /// The narrowed type set for a fragment on `condition` in `parent`.
    fn narrow(&self, parent: &str, condition: &str, on: Option<&[Name]>) -> Option<Vec<Name>> {
        if parent == condition {
            on.map(<[Name]>::to_vec)
        } else {
            Some(self.rules.possible_types(condition))
        }
    }

    /// The filtered selections, and whether a conditional null was recorded
    /// at this level (the enclosing field then needs `__typename`).
    fn set(
        &mut self,
        selections: &'d [ast::Selection],
        parent_type: &str,
        path: &mut Vec<Step>,
        on: Option<&[Name]>,
        root: bool,
    ) -> (Vec<ast::Selection>, bool) {
        let mut out = Vec::with_capacity(selections.len());
        let mut conditional = false;
        for selection in selections {
            match selection {
                ast::Selection::Field(field) => {
                    if field.name.starts_with("__") {
                        out.push(selection.clone());
                        continue;
                    }
                    let rule = self
                        .rules
                        .field(parent_type, &field.name, &field.selection_set);
                    let non_null = rule.ty.as_ref().is_some_and(ast::Type::is_non_null);
                    let key = field.response_name();
                    let refused_entities = root
                        && self.verdict.refused_entities
                        && self.rules.is_entities(parent_type, &field.name);
                    if refused_entities || self.denied(&rule.checks) {
                        self.null(path, key, non_null, on);
                        conditional |= on.is_some();
                        continue;
                    }
                    let Some(ty) = rule.ty.as_ref().filter(|_| !field.selection_set.is_empty())
                    else {
                        out.push(selection.clone());
                        continue;
                    };
                    let depth = path.len();
                    path.push(Step::Key {
                        key: key.clone(),
                        non_null,
                    });
                    let mut item = ty;
                    while let ast::Type::List(inner) | ast::Type::NonNullList(inner) = item {
                        item = inner;
                        path.push(Step::Item {
                            non_null: item.is_non_null(),
                        });
                    }
                    let (mut children, needs_typename) = self.set(
                        &field.selection_set,
                        ty.inner_named_type(),
                        path,
                        None,
                        false,
                    );
                    if needs_typename && !children.is_empty() && !self.selects_typename(&children) {
                        children.push(ast::Selection::Field(Node::new(ast::Field {
                            alias: None,
                            name: Name::new_static_unchecked("__typename"),
                            arguments: Vec::new(),
                            directives: ast::DirectiveList::new(),
                            selection_set: Vec::new(),
                        })));
                        let mut keep = Vec::new();
                        self.typename_under_fragments(&children, &mut keep);
                        self.patch.strip_typename.push(Strip {
                            steps: path.clone(),
                            keep,
                        });
                    }
                    path.truncate(depth);
                    if children.is_empty() {
                        self.null(path, key, non_null, on);
                        conditional |= on.is_some();
                        continue;
                    }
                    let mut field = (**field).clone();
                    field.selection_set = children;
                    out.push(ast::Selection::Field(Node::new(field)));
                }
                ast::Selection::InlineFragment(inline) => {
                    let condition = inline
                        .type_condition
                        .as_ref()
                        .map_or(parent_type, Name::as_str);
                    let narrowed = self.narrow(parent_type, condition, on);
                    if self.denied(&self.rules.condition_checks(parent_type, condition)) {
                        self.null_all(
                            &inline.selection_set,
                            condition,
                            path,
                            narrowed.as_deref(),
                            &mut HashSet::new(),
                        );
                        conditional |= narrowed.is_some();
                        continue;
                    }
                    let (children, needs) = self.set(
                        &inline.selection_set,
                        condition,
                        path,
                        narrowed.as_deref(),
                        root,
                    );
                    conditional |= needs;
                    if !children.is_empty() {
                        let mut inline = (**inline).clone();
                        inline.selection_set = children;
                        out.push(ast::Selection::InlineFragment(Node::new(inline)));
                    }
                }
                ast::Selection::FragmentSpread(spread) => {
                    let Some(fragment) = self.fragments.get(&spread.fragment_name).copied() else {
                        continue;
                    };
                    if self.stack.contains(&&fragment.name) {
                        continue;
                    }
                    let condition = fragment.type_condition.as_str();
                    let narrowed = self.narrow(parent_type, condition, on);
                    self.stack.push(&fragment.name);
                    if self.denied(&self.rules.condition_checks(parent_type, condition)) {
                        self.null_all(
                            &fragment.selection_set,
                            condition,
                            path,
                            narrowed.as_deref(),
                            &mut HashSet::new(),
                        );
                        conditional |= narrowed.is_some();
                        self.stack.pop();
                        continue;
                    }
                    let (children, needs) = self.set(
                        &fragment.selection_set,
                        condition,
                        path,
                        narrowed.as_deref(),
                        root,
                    );
                    self.stack.pop();
                    conditional |= needs;
                    let keep = !children.is_empty();
                    self.filtered
                        .entry(fragment.name.clone())
                        .or_insert_with(|| keep.then_some(children));
                    if keep {
                        out.push(selection.clone());
                    }
                }
            }
        }
        (out, conditional)
    }

    /// The types whose objects get `__typename` from a type-conditioned
    /// fragment among the filtered `selections`.
    fn typename_under_fragments(&self, selections: &[ast::Selection], out: &mut Vec<Name>) {
        for selection in selections {
            let (condition, body) = match selection {
                ast::Selection::Field(_) => continue,
                ast::Selection::InlineFragment(i) => (i.type_condition.as_ref(), &i.selection_set),
                ast::Selection::FragmentSpread(s) => {
                    let (Some(fragment), Some(Some(body))) = (
                        self.fragments.get(&s.fragment_name),
                        self.filtered.get(&s.fragment_name),
                    ) else {
                        continue;
                    };
                    (Some(&fragment.type_condition), body)
                }
            };
            match condition {
                Some(condition) if self.selects_typename(body) => {
                    out.extend(self.rules.possible_types(condition));
                }
                _ => {}
            }
            self.typename_under_fragments(body, out);
        }
    }

    /// Whether the filtered `selections` select `__typename` under its own
    /// name in every object (not under a type condition).
    fn selects_typename(&self, selections: &[ast::Selection]) -> bool {
        selections.iter().any(|s| match s {
            ast::Selection::Field(f) => f.alias.is_none() && f.name == "__typename",
            ast::Selection::InlineFragment(i) => {
                i.type_condition.is_none() && self.selects_typename(&i.selection_set)
            }
            ast::Selection::FragmentSpread(_) => false,
        })
    }
}

fn spreads<'s>(selections: &'s [ast::Selection], out: &mut Vec<&'s Name>) {
    for selection in selections {
        match selection {
            ast::Selection::Field(f) => spreads(&f.selection_set, out),
            ast::Selection::InlineFragment(i) => spreads(&i.selection_set, out),
            ast::Selection::FragmentSpread(s) => out.push(&s.fragment_name),
        }
    }
}

fn selection_variables(selections: &[ast::Selection], out: &mut HashSet<Name>) {
    for selection in selections {
        match selection {
            ast::Selection::Field(f) => {
                for argument in &f.arguments {
                    value_variables(&argument.value, out);
                }
                directive_variables(&f.directives, out);
                selection_variables(&f.selection_set, out);
            }
            ast::Selection::InlineFragment(i) => {
                directive_variables(&i.directives, out);
                selection_variables(&i.selection_set, out);
            }
            ast::Selection::FragmentSpread(s) => directive_variables(&s.directives, out),
        }
    }
}

fn directive_variables(directives: &ast::DirectiveList, out: &mut HashSet<Name>) {
    for directive in directives.iter() {
        for argument in &directive.arguments {
            value_variables(&argument.value, out);
        }
    }
}

fn value_variables(value: &ast::Value, out: &mut HashSet<Name>) {
    match value {
        ast::Value::Variable(name) => {
            out.insert(name.clone());
        }
        ast::Value::List(items) => items.iter().for_each(|v| value_variables(v, out)),
        ast::Value::Object(fields) => fields.iter().for_each(|(_, v)| value_variables(v, out)),
        _ => {}
    }
}

impl ResponsePatch {
    /// Patches a subgraph response: `null` at each removed field that is
    /// absent (in every list item), propagated through non-null positions
    /// up to the nearest nullable one (`data` itself becomes `null` when
    /// none is), then the errors appended to `errors`.
    pub fn apply(&self, response: &mut Value) {
        if let Some(data) = response.get_mut("data")
            && data.is_object()
        {
            for null in &self.nulls {
                if insert(data, &null.steps, null.on.as_deref()) {
                    *data = Value::Null;
                    break;
                }
            }
            for added in &self.strip_typename {
                strip(data, &added.steps, &added.keep);
            }
        }
        if self.errors.is_empty() {
            return;
        }
        if let Value::Object(response) = response {
            let errors = response
                .entry("errors")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(errors) = errors {
                errors.extend(self.errors.iter().cloned());
            }
        }
    }

    /// The response when nothing is left to ask the subgraph.
    pub fn response(&self) -> Value {
        let mut response = serde_json::json!({ "data": {} });
        self.apply(&mut response);
        response
    }
}

/// Inserts `null` at `steps` below `value`; true when `value` itself must
/// become `null` (a non-null position was nulled).
fn insert(value: &mut Value, steps: &[Step], on: Option<&[Name]>) -> bool {
    match (steps.split_first(), value) {
        (Some((Step::Key { key, non_null }, rest)), Value::Object(object)) => {
            if rest.is_empty() {
                let typename = object.get("__typename").and_then(Value::as_str);
                if let (Some(on), Some(typename)) = (on, typename)
                    && !on.iter().any(|t| t == typename)
                {
                    return false;
                }
                if object.contains_key(key.as_str()) {
                    return false;
                }
                object.insert(key.to_string(), Value::Null);
                return *non_null;
            }
            let Some(child) = object.get_mut(key.as_str()) else {
                return false;
            };
            if insert(child, rest, on) {
                *child = Value::Null;
                return *non_null;
            }
            false
        }
        (Some((Step::Item { non_null }, rest)), Value::Array(items)) => {
            let mut nulled = false;
            for item in items {
                if insert(item, rest, on) {
                    *item = Value::Null;
                    nulled |= *non_null;
                }
            }
            nulled
        }
        _ => false,
    }
}

/// Removes the `__typename` the rewrite added in the objects at `steps`,
/// except in objects of the types `keep`.
fn strip(value: &mut Value, steps: &[Step], keep: &[Name]) {
    match (steps.split_first(), value) {
        (None, Value::Object(object)) => {
            let kept = object
                .get("__typename")
                .and_then(Value::as_str)
                .is_some_and(|t| keep.iter().any(|k| k == t));
            if !kept {
                object.remove("__typename");
            }
        }
        (Some((Step::Key { key, .. }, rest)), Value::Object(object)) => {
            if let Some(child) = object.get_mut(key.as_str()) {
                strip(child, rest, keep);
            }
        }
        (Some((Step::Item { .. }, rest)), Value::Array(items)) => {
            for item in items {
                strip(item, rest, keep);
            }
        }
        _ => {}
    }
}
