//! Measuring one operation: depth, aliases, root fields, directives, static
//! cost, introspection and entity fetches, with fragment spreads expanded.
//!
//! **Each fragment is measured once.** Every measure is either a maximum
//! (depth, directives, flags) or a sum (aliases, root fields, cost) and does
//! not depend on where the fragment is spread, so a fragment's summary is
//! computed once, dependencies first, and added wherever it is spread. A
//! fragment "bomb" (`F1 { ...F2 ...F2 }`, `F2 { ...F3 ...F3 }`, …) therefore
//! costs linear time while its summary grows exponentially — sums saturate at
//! `u64::MAX` and are refused by the limits.
//!
//! **No unbounded recursion.** The order over fragments comes from an
//! iterative depth-first search, which also finds spreads of unknown
//! fragments and fragment cycles. Recursion happens only inside one
//! definition's selection sets, whose nesting the parser already bounded.
//!
//! **Cost** follows the IBM cost specification: a field weighs its
//! `@cost(weight:)`, else its type's `@cost(weight:)`, else 1 for an object,
//! interface or union and 0 for a scalar or enum. A list field multiplies its
//! weight plus its selection's cost by its size: the largest literal value of
//! its `@listSize(slicingArguments:)` (or that argument's default), else
//! `@listSize(assumedSize:)`, else `default_list_size`; with
//! `@listSize(sizedFields:)` (connections) that size applies to the named
//! child lists (`edges`) instead of the field itself. A slicing argument
//! given as a variable counts as absent here; the variable is recorded so
//! that its value can scale the cost later (see [`super::variables`]).
//! Without a schema, types are unknown: a field with a selection set weighs
//! 1, a leaf 0, and nothing is multiplied.

use std::collections::HashMap;

use apollo_compiler::{
    Node, Schema,
    ast::{self, DirectiveList, FieldDefinition, Selection, Value},
    parser::SourceSpan,
    schema::ExtendedType,
};

use super::{
    limits::GraphqlLimits,
    variables::{self, SlicingVariable},
};

/// What one selection set (and everything below it) measures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Deepest field nesting (`{ a { b } }` is 2).
    pub depth: u32,
    /// Aliased fields.
    pub aliases: u64,
    /// Fields at the top level of the set.
    pub root_fields: u64,
    /// Most directives on one node.
    pub max_directives: usize,
    /// Static cost.
    pub cost: u64,
    /// `__schema` or `__type` appears.
    pub introspection: bool,
    /// `_entities` appears at the top level of the set.
    pub entity_fetch: bool,
    /// `_service` appears at the top level of the set.
    pub service_fetch: bool,
    /// Variables used as slicing arguments (see [`super::variables`]).
    pub sized_by: Vec<SlicingVariable>,
    /// List fields at the top level of the set, for a parent whose
    /// `@listSize(sizedFields:)` names them.
    top_lists: Vec<TopList>,
}

/// List fields of one name and size at the top of a selection set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TopList {
    /// The field's name (not its alias).
    name: String,
    /// The size they were costed with.
    size: u64,
    /// Their summed cost per item (weight plus selection).
    per_item: u64,
}

impl Summary {
    /// Records list fields at the top level, merging same name and size so
    /// that the list stays as small as the document, never as large as its
    /// fragment expansion.
    fn add_top_list(&mut self, name: &str, size: u64, per_item: u64) {
        match self
            .top_lists
            .iter_mut()
            .find(|l| l.size == size && l.name == name)
        {
            Some(list) => list.per_item = list.per_item.saturating_add(per_item),
            None => self.top_lists.push(TopList {
                name: name.to_owned(),
                size,
                per_item,
            }),
        }
    }

    /// Re-costs the top-level lists named in `sized_fields` with `size`.
    fn resize_top_lists(&mut self, sized_fields: &[&str], size: u64) {
        if self.cost == u64::MAX {
            return;
        }
        for list in &self.top_lists {
            if sized_fields.contains(&list.name.as_str()) {
                self.cost = self
                    .cost
                    .saturating_sub(list.size.saturating_mul(list.per_item))
                    .saturating_add(size.saturating_mul(list.per_item));
            }
        }
    }
}

impl Summary {
    /// Adds the summary of a fragment spread or inline fragment at this level.
    fn absorb(&mut self, other: &Summary) {
        self.depth = self.depth.max(other.depth);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.root_fields = self.root_fields.saturating_add(other.root_fields);
        self.max_directives = self.max_directives.max(other.max_directives);
        self.cost = self.cost.saturating_add(other.cost);
        self.introspection |= other.introspection;
        self.entity_fetch |= other.entity_fetch;
        self.service_fetch |= other.service_fetch;
        for v in &other.sized_by {
            variables::merge(&mut self.sized_by, &v.name, v.assumed, v.nesting);
        }
        for list in &other.top_lists {
            self.add_top_list(&list.name, list.size, list.per_item);
        }
    }
}

/// Why a document could not be measured; each is a validation failure, at
/// the fragment definition where it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MeasureError {
    /// Two fragments share a name.
    DuplicateFragment(Option<SourceSpan>),
    /// A spread names a fragment the document does not define.
    UnknownFragment(Option<SourceSpan>),
    /// A fragment spreads itself, directly or through others.
    FragmentCycle(Option<SourceSpan>),
}

impl MeasureError {
    /// Where in the document the problem was found.
    pub(crate) fn location(self) -> Option<SourceSpan> {
        match self {
            Self::DuplicateFragment(at) | Self::UnknownFragment(at) | Self::FragmentCycle(at) => at,
        }
    }
}

/// Measures `operation` of `document`.
pub(crate) fn measure(
    document: &ast::Document,
    operation: &ast::OperationDefinition,
    schema: Option<&Schema>,
    limits: &GraphqlLimits,
) -> Result<Summary, MeasureError> {
    let mut fragments: HashMap<&str, &Node<ast::FragmentDefinition>> = HashMap::new();
    for definition in &document.definitions {
        if let ast::Definition::FragmentDefinition(fragment) = definition
            && fragments.insert(fragment.name.as_str(), fragment).is_some()
        {
            return Err(MeasureError::DuplicateFragment(fragment.location()));
        }
    }
    let mut measurer = Measurer {
        schema,
        limits,
        summaries: HashMap::with_capacity(fragments.len()),
    };
    for name in dependency_order(&fragments)? {
        let fragment = fragments[name];
        let mut summary = measurer.selection_set(
            &fragment.selection_set,
            Some(fragment.type_condition.as_str()),
        );
        summary.max_directives = summary.max_directives.max(fragment.directives.len());
        measurer.summaries.insert(name, summary);
    }

    let root_type = schema
        .and_then(|s| s.root_operation(operation.operation_type))
        .map(|name| name.as_str());
    let mut summary = measurer.selection_set(&operation.selection_set, root_type);
    summary.max_directives = summary.max_directives.max(operation.directives.len());
    if operation.operation_type == ast::OperationType::Mutation {
        summary.cost = summary.cost.saturating_add(
            limits
                .mutation_base_cost
                .saturating_mul(summary.root_fields),
        );
    }
    Ok(summary)
}

/// Fragment names ordered so that every fragment comes after the fragments
/// it spreads (iterative depth-first search, post-order).
fn dependency_order<'d>(
    fragments: &HashMap<&'d str, &'d Node<ast::FragmentDefinition>>,
) -> Result<Vec<&'d str>, MeasureError> {
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mark {
        InProgress,
        Done,
    }
    let mut spreads: HashMap<&str, Vec<&str>> = HashMap::with_capacity(fragments.len());
    for (&name, fragment) in fragments {
        let mut names = Vec::new();
        collect_spreads(&fragment.selection_set, &mut names);
        spreads.insert(name, names);
    }
    let mut marks: HashMap<&str, Mark> = HashMap::with_capacity(fragments.len());
    let mut order = Vec::with_capacity(fragments.len());
    // Deterministic order: sort the roots so results never depend on hashing.
    let mut roots: Vec<&str> = fragments.keys().copied().collect();
    roots.sort_unstable();
    for root in roots {
        if marks.contains_key(root) {
            continue;
        }
        marks.insert(root, Mark::InProgress);
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some((name, next)) = stack.last_mut() {
            let deps = &spreads[*name];
            if let Some(&dep) = deps.get(*next) {
                *next += 1;
                let at = fragments[*name].location();
                if !fragments.contains_key(dep) {
                    return Err(MeasureError::UnknownFragment(at));
                }
                match marks.get(dep) {
                    Some(Mark::InProgress) => return Err(MeasureError::FragmentCycle(at)),
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(dep, Mark::InProgress);
                        stack.push((dep, 0));
                    }
                }
            } else {
                let name = *name;
                marks.insert(name, Mark::Done);
                order.push(name);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Names of the fragments spread anywhere in `selections` (within this
/// definition only).
fn collect_spreads<'d>(selections: &'d [Selection], out: &mut Vec<&'d str>) {
    for selection in selections {
        match selection {
            Selection::Field(field) => collect_spreads(&field.selection_set, out),
            Selection::FragmentSpread(spread) => out.push(spread.fragment_name.as_str()),
            Selection::InlineFragment(inline) => collect_spreads(&inline.selection_set, out),
        }
    }
}

struct Measurer<'a> {
    schema: Option<&'a Schema>,
    limits: &'a GraphqlLimits,
    /// Summaries of the fragments measured so far.
    summaries: HashMap<&'a str, Summary>,
}

impl Measurer<'_> {
    /// Measures a selection set whose parent type is `parent` (when known).
    fn selection_set(&self, selections: &[Selection], parent: Option<&str>) -> Summary {
        let mut summary = Summary::default();
        for selection in selections {
            match selection {
                Selection::Field(field) => self.field(field, parent, &mut summary),
                Selection::FragmentSpread(spread) => {
                    // Present: fragments are measured in dependency order
                    // and unknown names were refused.
                    if let Some(fragment) = self.summaries.get(spread.fragment_name.as_str()) {
                        summary.absorb(fragment);
                    }
                    summary.max_directives = summary.max_directives.max(spread.directives.len());
                }
                Selection::InlineFragment(inline) => {
                    let parent = inline
                        .type_condition
                        .as_ref()
                        .map(|name| name.as_str())
                        .or(parent);
                    let inner = self.selection_set(&inline.selection_set, parent);
                    summary.absorb(&inner);
                    summary.max_directives = summary.max_directives.max(inline.directives.len());
                }
            }
        }
        summary
    }

    fn field(&self, field: &ast::Field, parent: Option<&str>, summary: &mut Summary) {
        let definition = self
            .schema
            .zip(parent)
            .and_then(|(schema, parent)| schema.type_field(parent, &field.name).ok());
        let child_type = definition.map(|d| d.ty.inner_named_type().as_str());
        let mut child = self.selection_set(&field.selection_set, child_type);

        let mut sized_by_variables = Vec::new();
        let mut is_list = false;
        let (weight, size) = match (self.schema, definition) {
            (Some(schema), Some(definition)) => {
                is_list = definition.ty.is_list();
                let sized_fields = sized_fields(definition);
                let size = if is_list || !sized_fields.is_empty() {
                    list_size(
                        definition,
                        field,
                        self.limits.default_list_size,
                        &mut sized_by_variables,
                    )
                } else {
                    1
                };
                // A variable-sized list assumes at least 1 so that its value
                // can scale the cost later (0 times anything stays 0).
                let size = if sized_by_variables.is_empty() {
                    size
                } else {
                    size.max(1)
                };
                // The connection pattern: the slicing argument sizes the
                // named child lists (`edges`), not this field.
                child.resize_top_lists(&sized_fields, size);
                (weight(schema, definition), if is_list { size } else { 1 })
            }
            _ => (u64::from(!field.selection_set.is_empty()), 1),
        };
        let per_item = weight.saturating_add(child.cost);
        let cost = size.saturating_mul(per_item);
        if is_list {
            summary.add_top_list(&field.name, size, per_item);
        }
        for v in &child.sized_by {
            variables::merge(&mut summary.sized_by, &v.name, v.assumed, v.nesting);
        }
        for name in sized_by_variables {
            let below = child
                .sized_by
                .iter()
                .find(|v| v.name == name)
                .map_or(0, |v| v.nesting);
            variables::merge(&mut summary.sized_by, name, size, below.saturating_add(1));
        }

        summary.depth = summary.depth.max(child.depth.saturating_add(1));
        summary.aliases = summary
            .aliases
            .saturating_add(child.aliases)
            .saturating_add(u64::from(field.alias.is_some()));
        summary.root_fields = summary.root_fields.saturating_add(1);
        summary.max_directives = summary
            .max_directives
            .max(child.max_directives)
            .max(field.directives.len());
        summary.cost = summary.cost.saturating_add(cost);
        summary.introspection |=
            child.introspection || field.name == "__schema" || field.name == "__type";
        summary.entity_fetch |= field.name == "_entities";
        summary.service_fetch |= field.name == "_service";
    }
}

/// A field's own weight: `@cost` on the field, else on its type, else the
/// default of its kind of type.
fn weight(schema: &Schema, definition: &FieldDefinition) -> u64 {
    if let Some(weight) = cost_weight(&definition.directives) {
        return weight;
    }
    match schema.types.get(definition.ty.inner_named_type()) {
        Some(ty) => {
            if let Some(directive) = ty.directives().get("cost")
                && let Some(weight) = directive
                    .specified_argument_by_name("weight")
                    .and_then(|v| non_negative(v))
            {
                return weight;
            }
            match ty {
                ExtendedType::Object(_) | ExtendedType::Interface(_) | ExtendedType::Union(_) => 1,
                _ => 0,
            }
        }
        None => 0,
    }
}

fn cost_weight(directives: &DirectiveList) -> Option<u64> {
    directives
        .get("cost")?
        .specified_argument_by_name("weight")
        .and_then(|v| non_negative(v))
}

/// The child fields a `@listSize(sizedFields:)` names.
fn sized_fields(definition: &FieldDefinition) -> Vec<&str> {
    definition
        .directives
        .get("listSize")
        .and_then(|d| d.specified_argument_by_name("sizedFields"))
        .and_then(|v| v.as_list())
        .map(|names| names.iter().filter_map(|n| n.as_str()).collect())
        .unwrap_or_default()
}

/// The size of a list field (see the module docs).
///
/// Slicing arguments given as variables are pushed to `variables`.
fn list_size<'f>(
    definition: &FieldDefinition,
    field: &'f ast::Field,
    default: u64,
    variables: &mut Vec<&'f str>,
) -> u64 {
    let Some(list_size) = definition.directives.get("listSize") else {
        return default;
    };
    if let Some(names) = list_size
        .specified_argument_by_name("slicingArguments")
        .and_then(|v| v.as_list())
    {
        let largest = names
            .iter()
            .filter_map(|name| name.as_str())
            .filter_map(|name| {
                let given = field
                    .arguments
                    .iter()
                    .find(|argument| argument.name == name)
                    .map(|argument| &argument.value);
                if let Some(Value::Variable(variable)) = given.map(|v| &**v) {
                    variables.push(variable.as_str());
                    return None;
                }
                given
                    .or_else(|| {
                        definition
                            .argument_by_name(name)
                            .and_then(|argument| argument.default_value.as_ref())
                    })
                    .and_then(|v| non_negative(v))
            })
            .max();
        if let Some(size) = largest {
            return size;
        }
    }
    list_size
        .specified_argument_by_name("assumedSize")
        .and_then(|v| non_negative(v))
        .unwrap_or(default)
}

/// A literal integer (or, as IBM writes weights, a numeric string), with
/// negative values read as 0 and values beyond `i64` as `i64::MAX`. Variables and other values give `None`.
pub(crate) fn non_negative(value: &Value) -> Option<u64> {
    let n = match value {
        // Too large for i64 is huge, not absent: `first: 99999999999999999999`
        // must not fall back to the default size.
        Value::Int(i) => i
            .as_str()
            .parse::<i64>()
            .unwrap_or(if i.as_str().starts_with('-') {
                0
            } else {
                i64::MAX
            }),
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    Some(n.max(0).unsigned_abs())
}
