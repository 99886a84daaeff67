//! Lists sized by variables: the static cost assumes a size for them, the
//! request's variables may ask for more.
//!
//! When a slicing argument is a variable (`friends(first: $n)`), the static
//! cost uses the fallback size `b` (`@listSize(assumedSize:)` or
//! `default_list_size`, at least 1). Each term of the cost is a weight times
//! the sizes of the lists on its path, and `$n` sizes at most `k` lists on
//! any one path, so with `$n = v > b` every term grows by at most
//! `⌈v / b⌉^k`: the static cost times that factor (per variable) is an upper
//! bound of the real cost. [`Checked::cost_with_variables`] computes it
//! without parsing the document again.
//!
//! [`Checked::cost_with_variables`]: super::Checked::cost_with_variables

use serde_json::{Map, Value};

/// A variable used as a slicing argument of the selected operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicingVariable {
    /// The variable's name, without `$`.
    pub name: String,
    /// The smallest size the static cost assumed where it slices a list.
    pub assumed: u64,
    /// Most lists it sizes along one path of the selection.
    pub nesting: u32,
    /// Its literal integer default in the operation, if any.
    pub default: Option<u64>,
}

/// Merges `(name, assumed, nesting)` into `into`: the smallest assumption
/// and the deepest nesting win.
pub(crate) fn merge(into: &mut Vec<SlicingVariable>, name: &str, assumed: u64, nesting: u32) {
    match into.iter_mut().find(|v| v.name == name) {
        Some(v) => {
            v.assumed = v.assumed.min(assumed);
            v.nesting = v.nesting.max(nesting);
        }
        None => into.push(SlicingVariable {
            name: name.to_owned(),
            assumed,
            nesting,
            default: None,
        }),
    }
}

/// `cost` scaled for the values `variables` gives (or the defaults).
pub(crate) fn scaled_cost(
    cost: u64,
    sized_by: &[SlicingVariable],
    variables: &Map<String, Value>,
) -> u64 {
    let mut factor: u64 = 1;
    for v in sized_by {
        let value = match variables.get(&v.name) {
            Some(value) => size_of(value),
            None => v.default,
        };
        let Some(value) = value else { continue };
        let assumed = v.assumed.max(1);
        if value > assumed {
            let ratio = value.div_ceil(assumed);
            factor = factor.saturating_mul(ratio.saturating_pow(v.nesting));
        }
    }
    cost.saturating_mul(factor)
}

/// A JSON variable value as a list size: integers (negative as 0); floats
/// rounded up; anything else is not a size (the subgraph refuses it).
fn size_of(value: &Value) -> Option<u64> {
    let Value::Number(n) = value else {
        return None;
    };
    if let Some(n) = n.as_u64() {
        return Some(n);
    }
    if n.as_i64().is_some() {
        return Some(0);
    }
    n.as_f64().map(|f| {
        if f.is_nan() || f <= 0.0 {
            0
        } else if f >= u64::MAX as f64 {
            u64::MAX
        } else {
            f.ceil() as u64
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn vars(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn sized(nesting: u32, default: Option<u64>) -> Vec<SlicingVariable> {
        vec![SlicingVariable {
            name: "n".into(),
            assumed: 10,
            nesting,
            default,
        }]
    }

    #[test]
    fn values_within_the_assumption_keep_the_cost() {
        assert_eq!(
            scaled_cost(31, &sized(1, None), &vars(json!({"n": 10}))),
            31
        );
        assert_eq!(scaled_cost(31, &sized(1, None), &vars(json!({}))), 31);
        assert_eq!(
            scaled_cost(31, &sized(1, None), &vars(json!({"n": "big"}))),
            31
        );
    }

    #[test]
    fn larger_values_scale_by_the_ratio_per_nesting_level() {
        assert_eq!(
            scaled_cost(31, &sized(1, None), &vars(json!({"n": 25}))),
            31 * 3
        );
        assert_eq!(
            scaled_cost(31, &sized(2, None), &vars(json!({"n": 100}))),
            31 * 100
        );
        assert_eq!(
            scaled_cost(31, &sized(1, Some(50)), &vars(json!({}))),
            31 * 5
        );
        assert_eq!(
            scaled_cost(31, &sized(3, None), &vars(json!({"n": 1e300}))),
            u64::MAX
        );
    }
}
