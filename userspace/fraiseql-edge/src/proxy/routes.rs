//! The routing table: path prefix → subgraph. A route matches its exact
//! path and the paths below it (`/users/graphql` matches `/users/graphql`
//! and `/users/graphql/x`, not `/users/graphqlx`); a route ending in `/`
//! matches every path starting with it (and the path without the slash).
//! The longest matching route wins; no match falls to the default subgraph.
//!
//! The proxy holds the table behind an `ArcSwap`: a request takes a
//! snapshot, so a reload can swap the table without touching requests in
//! flight.

use std::sync::Arc;

use super::subgraph::Subgraph;

/// One immutable routing table.
pub struct Routes {
    /// Routes, longest prefix first.
    routes: Vec<(String, Arc<Subgraph>)>,
    default: Option<Arc<Subgraph>>,
}

impl Routes {
    /// A table over `subgraphs`, with `default` serving unmatched paths.
    pub fn new(subgraphs: &[Arc<Subgraph>], default: Option<&str>) -> Self {
        let mut routes: Vec<(String, Arc<Subgraph>)> = subgraphs
            .iter()
            .map(|sg| (sg.cfg.route(), Arc::clone(sg)))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        let default =
            default.and_then(|name| subgraphs.iter().find(|sg| sg.name() == name).cloned());
        Self { routes, default }
    }

    /// The subgraph serving `path`.
    pub fn route(&self, path: &str) -> Option<&Arc<Subgraph>> {
        self.routes
            .iter()
            .find(|(prefix, _)| matches(prefix, path))
            .map(|(_, sg)| sg)
            .or(self.default.as_ref())
    }

    /// Every subgraph, by name.
    pub fn subgraphs(&self) -> impl Iterator<Item = &Arc<Subgraph>> {
        self.routes.iter().map(|(_, sg)| sg)
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    if let Some(dir) = prefix.strip_suffix('/') {
        return path.starts_with(prefix) || path == dir;
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact_below_and_directory_routes() {
        assert!(matches("/users/graphql", "/users/graphql"));
        assert!(matches("/users/graphql", "/users/graphql/x"));
        assert!(!matches("/users/graphql", "/users/graphqlx"));
        assert!(!matches("/users/graphql", "/users"));
        assert!(matches("/api/", "/api/"));
        assert!(matches("/api/", "/api/users/graphql"));
        assert!(matches("/api/", "/api"));
        assert!(!matches("/api/", "/apix"));
        assert!(matches("/", "/anything"));
    }
}
