//! The plugin's errors, and how an apiserver answer becomes one a person can act on.

/// Everything that can go wrong, each with the message the user sees.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "the MachineIdentity API (nhi.dev/v1alpha1) is not installed in this cluster: install the CRDs (helm install nhi-operator charts/nhi-operator, or kubectl apply -f crds/)"
    )]
    ApiNotInstalled,
    #[error("machineidentity {namespace}/{name} not found")]
    IdentityNotFound { namespace: String, name: String },
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    /// The apiserver's own words, which name the user, verb and resource.
    #[error("{0}")]
    Forbidden(String),
    #[error("the apiserver did not accept the credentials: {0}; check the kubeconfig's user")]
    Unauthorized(String),
    #[error("the apiserver refused the request: {0}")]
    Api(String),
    #[error("cannot reach the cluster: {0}")]
    Connection(String),
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    /// Bad input, caught before any call to the cluster.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Certificate(String),
    #[error("the operator has not answered within {0}: is it running?")]
    NoAnswer(String),
    #[error(
        "the operator refused to revoke machineidentity {namespace}/{name} ({reason}): {message}; its certificates stay valid"
    )]
    RevocationRefused {
        namespace: String,
        name: String,
        reason: String,
        message: String,
    },
    #[error("machineidentity {namespace}/{name} was deleted while waiting for the operator")]
    DeletedWhileWaiting { namespace: String, name: String },
}

/// What a failed request was about, to name it in the error.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// One MachineIdentity.
    Identity { namespace: &'a str, name: &'a str },
    /// A list of MachineIdentities.
    Identities,
    /// Another object, for example a Secret.
    Object {
        kind: &'static str,
        namespace: &'a str,
        name: &'a str,
    },
    /// A request about no object in particular.
    Other,
}

/// Turns a client error into a [`PluginError`] about `target`.
///
/// A 404 that names no object (no `details.name`, or the apiserver's plain `404 page not found`)
/// means the resource type itself is missing; on the MachineIdentity API that is the CRDs not
/// being installed. A 404 naming the object means the object does not exist.
pub fn from_kube(err: kube::Error, target: Target<'_>) -> PluginError {
    let status = match err {
        kube::Error::Api(status) => status,
        other => return PluginError::Connection(cause_chain(&other)),
    };
    let names_object = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
    match status.code {
        404 => match target {
            Target::Identity { namespace, name } if names_object => PluginError::IdentityNotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            Target::Identity { .. } | Target::Identities => PluginError::ApiNotInstalled,
            Target::Object {
                kind,
                namespace,
                name,
            } => PluginError::NotFound {
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            Target::Other => PluginError::Api(status.message),
        },
        403 => PluginError::Forbidden(status.message),
        401 => PluginError::Unauthorized(status.message),
        code => PluginError::Api(if status.reason.is_empty() {
            format!("{} (HTTP {code})", status.message)
        } else {
            format!("{} ({}, HTTP {code})", status.message, status.reason)
        }),
    }
}

/// An error and its causes, `outer: inner: innermost`, without repeats.
pub fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    /// A client error as kube builds it from the apiserver's answer.
    fn api_error(code: u16, reason: &str, message: &str, name: Option<&str>) -> kube::Error {
        let mut body = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "message": message, "reason": reason, "code": code});
        if let Some(name) = name {
            body["details"] =
                serde_json::json!({"name": name, "group": "nhi.dev", "kind": "machineidentities"});
        }
        let status: Status = serde_json::from_value(body).unwrap();
        kube::Error::Api(status.boxed())
    }

    const ONE: Target<'static> = Target::Identity {
        namespace: "payments",
        name: "checkout",
    };

    #[test]
    fn a_missing_resource_type_means_the_crds_are_not_installed() {
        // What the apiserver answers for a resource of an unknown type: plain text inside a
        // group it knows, a Status without details in a group it does not know.
        let plain = api_error(
            404,
            "Failed to parse error data",
            "404 page not found",
            None,
        );
        let status = api_error(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
        for err in [plain, status] {
            let mapped = from_kube(err, ONE);
            assert!(matches!(mapped, PluginError::ApiNotInstalled));
            let text = mapped.to_string();
            assert!(
                text.contains("not installed") && text.contains("crds/"),
                "{text}"
            );
        }
        let list = api_error(404, "NotFound", "404 page not found", None);
        assert!(matches!(
            from_kube(list, Target::Identities),
            PluginError::ApiNotInstalled
        ));
    }

    #[test]
    fn a_missing_identity_is_named() {
        let err = api_error(
            404,
            "NotFound",
            "machineidentities.nhi.dev \"checkout\" not found",
            Some("checkout"),
        );
        assert_eq!(
            from_kube(err, ONE).to_string(),
            "machineidentity payments/checkout not found"
        );
        let err = api_error(404, "NotFound", "secrets \"x\" not found", Some("x"));
        let secret = Target::Object {
            kind: "secret",
            namespace: "payments",
            name: "x",
        };
        assert_eq!(
            from_kube(err, secret).to_string(),
            "secret payments/x not found"
        );
    }

    #[test]
    fn forbidden_shows_the_apiserver_message() {
        let message = "machineidentities.nhi.dev \"checkout\" is forbidden: User \"dev\" cannot patch resource \"machineidentities\" in API group \"nhi.dev\" in the namespace \"payments\"";
        let err = api_error(403, "Forbidden", message, Some("checkout"));
        assert_eq!(from_kube(err, ONE).to_string(), message);
        let err = api_error(401, "Unauthorized", "Unauthorized", None);
        assert!(from_kube(err, ONE).to_string().contains("credentials"));
        let err = api_error(
            422,
            "Invalid",
            "spec.reviewBy: Invalid value",
            Some("checkout"),
        );
        assert_eq!(
            from_kube(err, ONE).to_string(),
            "the apiserver refused the request: spec.reviewBy: Invalid value (Invalid, HTTP 422)"
        );
    }

    #[test]
    fn cause_chains_skip_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(cause_chain(&e), "outer: refused");
    }
}
