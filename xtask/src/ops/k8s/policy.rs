//! Policies over a rendered overlay, beyond what the schemas say.
//!
//! For every workload (the pod template of a DaemonSet, Deployment, …):
//! no privileged container and no privilege escalation; capabilities drop
//! `ALL` and add only [`ALLOWED_CAPABILITIES`]; a read-only root file
//! system; readiness and liveness probes; CPU and memory requests and a
//! memory limit; images pinned by tag or digest, and ours at exactly the
//! workspace version; `hostNetwork` only on a DaemonSet, never `hostPID` or
//! `hostIPC`; no service account token mounted.
//!
//! For the overlay: the edge DaemonSet is there, and a NetworkPolicy selects
//! its pods, opens no port to everyone but GraphQL's, and lets only the
//! monitoring namespace reach the metrics port.

use serde_yaml_ng::Value;

use crate::image::REPOSITORY;

/// The capabilities a container may add. BPF, NET_ADMIN and PERFMON are
/// what the daemon's kernel layer needs, each of them (k8s/README.md).
pub const ALLOWED_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];

/// The port only the monitoring namespace may reach, by number and name.
const METRICS_PORT: [&str; 2] = ["9090", "metrics"];
/// The port anyone may reach, by number and name.
const GRAPHQL_PORT: [&str; 2] = ["8080", "graphql"];
/// The namespace Prometheus scrapes from.
const MONITORING_NAMESPACE: &str = "monitoring";

/// Every violation in `docs`, one message each; empty when all hold.
/// `image` is the reference the edge must run (`REPOSITORY:<version>`).
pub fn check(docs: &[Value], image: &str) -> Vec<String> {
    let mut violations = Vec::new();
    let mut edge_pod_labels = None;
    for doc in docs {
        let Some(spec) = pod_spec(doc) else { continue };
        let name = describe(doc);
        check_pod(&name, kind(doc), spec, image, &mut violations);
        if kind(doc) == "DaemonSet" && runs_image(spec, image) {
            edge_pod_labels = Some(&doc["spec"]["template"]["metadata"]["labels"]);
        }
    }
    match edge_pod_labels {
        None => violations.push(format!("no DaemonSet runs {image}")),
        Some(labels) => check_network_policy(docs, labels, &mut violations),
    }
    violations
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

/// `Kind/name` for messages.
fn describe(doc: &Value) -> String {
    format!(
        "{}/{}",
        kind(doc),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The pod spec of a workload object; `None` for other kinds.
fn pod_spec(doc: &Value) -> Option<&Value> {
    let spec = match kind(doc) {
        "Pod" => &doc["spec"],
        "DaemonSet" | "Deployment" | "StatefulSet" | "ReplicaSet" | "Job" => {
            &doc["spec"]["template"]["spec"]
        }
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => return None,
    };
    spec.is_mapping().then_some(spec)
}

/// The containers of a pod spec, init containers first, with a flag for
/// the init ones (they need no probes).
fn containers(spec: &Value) -> impl Iterator<Item = (&Value, bool)> {
    let init = spec["initContainers"].as_sequence().into_iter().flatten();
    let regular = spec["containers"].as_sequence().into_iter().flatten();
    init.map(|c| (c, true)).chain(regular.map(|c| (c, false)))
}

fn runs_image(spec: &Value, image: &str) -> bool {
    containers(spec).any(|(c, _)| c["image"].as_str().is_some_and(|i| is_reference(i, image)))
}

/// `image` itself, or it pinned further by digest (`image@sha256:…`).
fn is_reference(candidate: &str, image: &str) -> bool {
    candidate == image
        || candidate
            .strip_prefix(image)
            .and_then(|rest| rest.strip_prefix('@'))
            .is_some_and(is_digest)
}

/// `sha256:` and 64 hex digits.
fn is_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Pinned by digest, or by a tag other than `latest`.
fn is_pinned(image: &str) -> bool {
    if let Some((_, digest)) = image.split_once('@') {
        return is_digest(digest);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .is_some_and(|(_, tag)| !tag.is_empty() && tag != "latest")
}

fn check_pod(name: &str, kind: &str, spec: &Value, image: &str, out: &mut Vec<String>) {
    if spec["hostNetwork"].as_bool() == Some(true) && kind != "DaemonSet" {
        out.push(format!("{name}: hostNetwork is only for the DaemonSet"));
    }
    for field in ["hostPID", "hostIPC"] {
        if spec[field].as_bool() == Some(true) {
            out.push(format!("{name}: {field} must not be set"));
        }
    }
    if spec["automountServiceAccountToken"].as_bool() != Some(false) {
        out.push(format!(
            "{name}: automountServiceAccountToken must be false (the daemon never calls the API)"
        ));
    }
    for (container, init) in containers(spec) {
        let at = format!(
            "{name} container {}",
            container["name"].as_str().unwrap_or("?")
        );
        check_container(&at, container, init, image, out);
    }
}

fn check_container(at: &str, c: &Value, init: bool, image: &str, out: &mut Vec<String>) {
    let sc = &c["securityContext"];
    if sc["privileged"].as_bool() == Some(true) {
        out.push(format!("{at}: privileged: true is not allowed"));
    }
    if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
        out.push(format!("{at}: allowPrivilegeEscalation must be false"));
    }
    if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
        out.push(format!("{at}: readOnlyRootFilesystem must be true"));
    }
    let dropped = sc["capabilities"]["drop"].as_sequence();
    if !dropped.is_some_and(|d| d.iter().any(|c| c.as_str() == Some("ALL"))) {
        out.push(format!("{at}: capabilities must drop ALL"));
    }
    for cap in sc["capabilities"]["add"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let cap = cap.as_str().unwrap_or("?");
        if !ALLOWED_CAPABILITIES.contains(&cap) {
            out.push(format!(
                "{at}: capability {cap} is not one of {ALLOWED_CAPABILITIES:?}"
            ));
        }
    }
    match c["image"].as_str() {
        None => out.push(format!("{at}: no image")),
        Some(i) if !is_pinned(i) => out.push(format!(
            "{at}: image {i} is not pinned by a tag or a digest"
        )),
        Some(i) if i.starts_with(REPOSITORY) && !is_reference(i, image) => out.push(format!(
            "{at}: image {i} is not {image}, the workspace version"
        )),
        Some(_) => {}
    }
    if !init {
        for probe in ["readinessProbe", "livenessProbe"] {
            if !c[probe].is_mapping() {
                out.push(format!("{at}: no {probe}"));
            }
        }
    }
    let resources = &c["resources"];
    for (section, resource) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        if resources[section][resource].is_null() {
            out.push(format!("{at}: no resources.{section}.{resource}"));
        }
    }
}

/// The NetworkPolicy rules for the edge pods, whose template has `labels`.
fn check_network_policy(docs: &[Value], labels: &Value, out: &mut Vec<String>) {
    let selects_edge = |doc: &&Value| {
        kind(doc) == "NetworkPolicy"
            && doc["spec"]["podSelector"]["matchLabels"]
                .as_mapping()
                .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let policies: Vec<&Value> = docs.iter().filter(selects_edge).collect();
    if policies.is_empty() {
        out.push("no NetworkPolicy selects the edge pods".to_owned());
        return;
    }
    for policy in policies {
        let name = describe(policy);
        let types = policy["spec"]["policyTypes"].as_sequence();
        if !types.is_some_and(|t| t.iter().any(|t| t.as_str() == Some("Ingress"))) {
            out.push(format!("{name}: policyTypes must include Ingress"));
        }
        for rule in policy["spec"]["ingress"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            // Numbers or the container's port names.
            let ports: Vec<String> = rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| match &p["port"] {
                    Value::Number(n) => Some(n.to_string()),
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            if ports.is_empty() {
                out.push(format!("{name}: an ingress rule opens every port"));
                continue;
            }
            let from_anywhere = rule["from"].as_sequence().is_none_or(Vec::is_empty);
            for port in ports {
                if METRICS_PORT.contains(&port.as_str()) && !only_from_monitoring(&rule["from"]) {
                    out.push(format!(
                        "{name}: port {port} must only be open to the {MONITORING_NAMESPACE} namespace"
                    ));
                } else if from_anywhere && !GRAPHQL_PORT.contains(&port.as_str()) {
                    out.push(format!("{name}: port {port} is open to everyone"));
                }
            }
        }
    }
}

/// `from` is exactly the namespace labelled
/// `kubernetes.io/metadata.name: monitoring`.
fn only_from_monitoring(from: &Value) -> bool {
    let Some(peers) = from.as_sequence() else {
        return false;
    };
    !peers.is_empty()
        && peers.iter().all(|peer| {
            let ns = &peer["namespaceSelector"]["matchLabels"];
            peer.as_mapping().is_some_and(|m| m.len() == 1)
                && ns.as_mapping().is_some_and(|m| m.len() == 1)
                && ns["kubernetes.io/metadata.name"].as_str() == Some(MONITORING_NAMESPACE)
        })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize as _;

    use super::*;

    const IMAGE: &str = "ghcr.io/fraiseql/fraiseql-edge:0.1.0";

    /// A manifest every policy accepts.
    const GOOD: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: fraiseql-edge}
spec:
  template:
    metadata:
      labels: {app.kubernetes.io/name: fraiseql-edge, app.kubernetes.io/component: edge}
    spec:
      hostNetwork: true
      automountServiceAccountToken: false
      containers:
        - name: edge
          image: ghcr.io/fraiseql/fraiseql-edge:0.1.0
          readinessProbe: {httpGet: {path: /readyz, port: 9090}}
          livenessProbe: {httpGet: {path: /healthz, port: 9090}}
          resources:
            requests: {cpu: 250m, memory: 256Mi}
            limits: {memory: 1Gi}
          securityContext:
            privileged: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL], add: [BPF, NET_ADMIN, PERFMON]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: fraiseql-edge}
spec:
  podSelector:
    matchLabels: {app.kubernetes.io/name: fraiseql-edge}
  policyTypes: [Ingress]
  ingress:
    - ports: [{port: 8080, protocol: TCP}]
    - from:
        - namespaceSelector:
            matchLabels: {kubernetes.io/metadata.name: monitoring}
      ports: [{port: 9090, protocol: TCP}]
"#;

    fn good() -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(GOOD)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    /// The violations of the good manifest after `change`.
    fn violations_after(change: impl FnOnce(&mut Vec<Value>)) -> Vec<String> {
        let mut docs = good();
        change(&mut docs);
        check(&docs, IMAGE)
    }

    fn edge(docs: &mut [Value]) -> &mut Value {
        &mut docs[0]["spec"]["template"]["spec"]["containers"][0]
    }

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    /// Asserts exactly one violation, containing `needle`.
    fn assert_caught(violations: &[String], needle: &str) {
        assert_eq!(violations.len(), 1, "{violations:#?}");
        assert!(violations[0].contains(needle), "{violations:#?}");
    }

    #[test]
    fn the_good_manifest_passes() {
        assert_eq!(check(&good(), IMAGE), Vec::<String>::new());
    }

    #[test]
    fn privileged_is_caught() {
        let v = violations_after(|d| edge(d)["securityContext"]["privileged"] = Value::Bool(true));
        assert_caught(&v, "privileged: true");
    }

    #[test]
    fn privilege_escalation_is_caught() {
        let v = violations_after(|d| {
            edge(d)["securityContext"]["allowPrivilegeEscalation"] = Value::Bool(true)
        });
        assert_caught(&v, "allowPrivilegeEscalation");
    }

    #[test]
    fn a_writable_root_file_system_is_caught() {
        let v = violations_after(|d| {
            edge(d)["securityContext"]
                .as_mapping_mut()
                .unwrap()
                .remove("readOnlyRootFilesystem");
        });
        assert_caught(&v, "readOnlyRootFilesystem");
    }

    #[test]
    fn capabilities_not_dropped_are_caught() {
        let v = violations_after(|d| {
            edge(d)["securityContext"]["capabilities"]["drop"] = yaml("[NET_RAW]")
        });
        assert_caught(&v, "drop ALL");
    }

    #[test]
    fn a_capability_outside_the_list_is_caught() {
        let v = violations_after(|d| {
            edge(d)["securityContext"]["capabilities"]["add"] =
                yaml("[BPF, NET_ADMIN, PERFMON, SYS_ADMIN]")
        });
        assert_caught(&v, "SYS_ADMIN");
    }

    #[test]
    fn missing_probes_are_caught() {
        let v = violations_after(|d| {
            edge(d).as_mapping_mut().unwrap().remove("readinessProbe");
        });
        assert_caught(&v, "no readinessProbe");
        let v = violations_after(|d| {
            edge(d).as_mapping_mut().unwrap().remove("livenessProbe");
        });
        assert_caught(&v, "no livenessProbe");
    }

    #[test]
    fn missing_resources_are_caught() {
        let v = violations_after(|d| {
            edge(d)["resources"]["limits"] = yaml("{cpu: 1}");
        });
        assert_caught(&v, "resources.limits.memory");
        let v = violations_after(|d| {
            edge(d).as_mapping_mut().unwrap().remove("resources");
        });
        assert_eq!(v.len(), 3, "{v:#?}");
    }

    #[test]
    fn unpinned_images_are_caught() {
        for image in ["busybox", "busybox:latest", "registry:5000/busybox"] {
            let v = violations_after(|d| {
                d[0]["spec"]["template"]["spec"]["initContainers"] = yaml(&format!(
                    "[{{name: init, image: '{image}', securityContext: {{allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}, resources: {{requests: {{cpu: 10m, memory: 8Mi}}, limits: {{memory: 8Mi}}}}}}]"
                ));
            });
            assert_caught(&v, "not pinned");
        }
        assert!(is_pinned("registry:5000/busybox:1.36"));
        assert!(is_pinned(&format!("busybox@sha256:{}", "a".repeat(64))));
        assert!(!is_pinned("busybox@sha256:abc"));
    }

    #[test]
    fn our_image_at_another_version_is_caught() {
        let v = violations_after(|d| {
            edge(d)["image"] = Value::String("ghcr.io/fraiseql/fraiseql-edge:0.0.9".into())
        });
        assert!(
            v.iter()
                .any(|m| m.contains("not ghcr.io/fraiseql/fraiseql-edge:0.1.0")),
            "{v:#?}"
        );
        // …and then no DaemonSet runs the right image either.
        assert!(v.iter().any(|m| m.contains("no DaemonSet runs")), "{v:#?}");
        // Pinned further by digest is fine.
        let digest = format!("{IMAGE}@sha256:{}", "0".repeat(64));
        let v = violations_after(|d| edge(d)["image"] = Value::String(digest));
        assert!(v.is_empty(), "{v:#?}");
    }

    #[test]
    fn host_network_outside_the_daemonset_is_caught() {
        let v = violations_after(|d| {
            let mut deployment = d[0].clone();
            deployment["kind"] = Value::String("Deployment".into());
            deployment["metadata"]["name"] = Value::String("other".into());
            d.push(deployment);
        });
        assert_caught(&v, "Deployment/other: hostNetwork");
    }

    #[test]
    fn host_pid_and_a_mounted_token_are_caught() {
        let v =
            violations_after(|d| d[0]["spec"]["template"]["spec"]["hostPID"] = Value::Bool(true));
        assert_caught(&v, "hostPID");
        let v = violations_after(|d| {
            d[0]["spec"]["template"]["spec"]
                .as_mapping_mut()
                .unwrap()
                .remove("automountServiceAccountToken");
        });
        assert_caught(&v, "automountServiceAccountToken");
    }

    #[test]
    fn a_missing_network_policy_is_caught() {
        let v = violations_after(|d| {
            d.pop();
        });
        assert_caught(&v, "no NetworkPolicy");
        // One that selects other pods does not count.
        let v = violations_after(|d| {
            d[1]["spec"]["podSelector"]["matchLabels"] = yaml("{app: other}");
        });
        assert_caught(&v, "no NetworkPolicy");
    }

    #[test]
    fn metrics_open_beyond_monitoring_are_caught() {
        let v = violations_after(|d| {
            d[1]["spec"]["ingress"][0]["ports"] = yaml("[{port: 8080}, {port: 9090}]")
        });
        assert_caught(
            &v,
            "port 9090 must only be open to the monitoring namespace",
        );
        let v = violations_after(|d| {
            d[1]["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] =
                yaml("{kubernetes.io/metadata.name: default}")
        });
        assert_caught(&v, "port 9090");
    }

    #[test]
    fn rules_opening_other_ports_are_caught() {
        let v = violations_after(|d| {
            d[1]["spec"]["ingress"][0]
                .as_mapping_mut()
                .unwrap()
                .remove("ports");
        });
        assert_caught(&v, "opens every port");
        let v = violations_after(|d| {
            d[1]["spec"]["ingress"][0]["ports"] = yaml("[{port: 8080}, {port: 50051}]")
        });
        assert_caught(&v, "port 50051 is open to everyone");
    }
}
