//! `kubectl nhi inspect <secret | pem file>`: decodes an identity certificate and says whether it
//! is revoked. Reads only certificates: private key blocks are skipped, never printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use nhi_core::labels::TRUST_CONFIGMAP;
use nhi_identity::certificate::thumbprint;
use nhi_identity::delegation::{Delegation, delegation_of};
use nhi_identity::extension::claims_of;
use nhi_identity::timestamp::rfc3339;
use nhi_identity::verify::parse_spiffe_id;
use serde::Serialize;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::cluster::{Cluster, GlobalArgs, connect};
use crate::dates::{expires, relative};
use crate::error::{PluginError, Target, cause_chain, from_kube};
use crate::output::{Format, fields, structured};

/// `kubectl nhi inspect <secret-name | path-to-pem> [--crl FILE] [-o json|yaml]`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// An identity Secret's name (its `tls.crt` is read) or the path of a PEM file (`tls.crt`,
    /// `identity.pem`): the first CERTIFICATE block is the one inspected.
    pub target: String,
    /// Check revocation against this CRL (PEM) instead of the namespace's `nhi-trust` ConfigMap.
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// Whether the certificate is on its CA's revocation list.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RevocationState {
    Revoked,
    NotRevoked,
    Unknown,
}

/// The revocation verdict and where it comes from.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub status: RevocationState,
    /// When the certificate was revoked (RFC 3339), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The CRL consulted, or why none could be.
    pub detail: String,
}

impl Revocation {
    fn unknown(detail: impl Into<String>) -> Self {
        Revocation {
            status: RevocationState::Unknown,
            revoked_at: None,
            detail: detail.into(),
        }
    }
}

/// What a certificate says. These field names are the stable `-o json|yaml` output.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateReport {
    /// Where the certificate was read from.
    pub source: String,
    pub subject: String,
    /// The URI SAN, when it is a SPIFFE ID.
    #[serde(rename = "spiffeID")]
    pub spiffe_id: Option<String>,
    /// Lowercase hexadecimal, as in `status.serialNumber`.
    pub serial_number: String,
    pub not_before: String,
    pub not_after: String,
    pub expired: bool,
    pub issuer: String,
    /// `ECDSA-P256`, `ECDSA-P384`, `Ed25519`, `RSA-2048`, ... as in `spec.certificate.keyAlgorithm`.
    pub key_algorithm: String,
    /// SHA-256 of the DER, lowercase hexadecimal, as in `status.thumbprintSHA256`.
    #[serde(rename = "thumbprintSHA256")]
    pub thumbprint_sha256: String,
    pub grants: Vec<String>,
    pub attributes: BTreeMap<String, String>,
    /// Why the identity extension could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension_error: Option<String>,
    /// A task certificate's delegation: who authorized it, for what (absent for an identity's
    /// own certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation: Option<DelegationReport>,
    /// Why the delegation extension could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegation_error: Option<String>,
    pub revocation: Revocation,
}

/// A task certificate's delegation extension, as `inspect` shows it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DelegationReport {
    #[serde(rename = "taskID")]
    pub task_id: String,
    pub purpose: String,
    /// SHA-256 of the task's input, lowercase hexadecimal, when the parent gave one.
    #[serde(rename = "inputSHA256", skip_serializing_if = "Option::is_none")]
    pub input_sha256: Option<String>,
    /// The identity that delegated first, then each task certificate down to the direct parent.
    pub ancestors: Vec<AncestorReport>,
}

/// One certificate of a delegation chain.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AncestorReport {
    pub serial_number: String,
    #[serde(rename = "spiffeID")]
    pub spiffe_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl From<Delegation> for DelegationReport {
    fn from(d: Delegation) -> Self {
        DelegationReport {
            task_id: d.task_id,
            purpose: d.purpose,
            input_sha256: d.input_digest.map(hex::encode),
            ancestors: d
                .ancestors
                .into_iter()
                .map(|a| AncestorReport {
                    serial_number: a.serial_hex,
                    spiffe_id: a.spiffe_id,
                    attributes: a.attributes,
                })
                .collect(),
        }
    }
}

/// The first `CERTIFICATE` block of a PEM text (the leaf of a chain; an `identity.pem` starts
/// with its key, which is skipped).
pub fn first_certificate(pem_text: &str) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("not valid PEM: {e}"))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.contents().to_vec())
        .ok_or_else(|| "no CERTIFICATE block".to_string())
}

/// Decodes a DER certificate into a report (revocation not checked yet).
pub fn describe_certificate(
    der: &[u8],
    source: &str,
    now: OffsetDateTime,
) -> Result<CertificateReport, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let (grants, attributes, extension_error) = match claims_of(&cert) {
        Ok(c) => (c.grants.into_iter().collect(), c.attributes, None),
        Err(e) => (Vec::new(), BTreeMap::new(), Some(e.to_string())),
    };
    let (delegation, delegation_error) = match delegation_of(&cert) {
        Ok(d) => (d.map(DelegationReport::from), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let not_after = cert.validity().not_after.to_datetime();
    Ok(CertificateReport {
        source: source.to_string(),
        subject: cert.subject().to_string(),
        spiffe_id: spiffe_uri(&cert),
        serial_number: hex::encode(cert.raw_serial()),
        not_before: rfc3339(cert.validity().not_before.to_datetime()),
        not_after: rfc3339(not_after),
        expired: not_after <= now,
        issuer: cert.issuer().to_string(),
        key_algorithm: key_algorithm(cert.public_key()),
        thumbprint_sha256: thumbprint(der),
        grants,
        attributes,
        extension_error,
        delegation,
        delegation_error,
        revocation: Revocation::unknown("not checked"),
    })
}

/// The first `spiffe://` URI SAN.
fn spiffe_uri(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) if u.starts_with("spiffe://") => Some(u.to_string()),
        _ => None,
    })
}

/// The key algorithm in the spelling of `spec.certificate.keyAlgorithm`.
fn key_algorithm(spki: &SubjectPublicKeyInfo<'_>) -> String {
    let oid = spki.algorithm.algorithm.to_id_string();
    match oid.as_str() {
        "1.3.101.112" => "Ed25519".to_string(),
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some("1.2.840.10045.3.1.7") => "ECDSA-P256".to_string(),
                Some("1.3.132.0.34") => "ECDSA-P384".to_string(),
                Some(other) => format!("ECDSA (curve {other})"),
                None => "ECDSA".to_string(),
            }
        }
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => {
                let modulus = rsa.modulus.iter().skip_while(|b| **b == 0).count();
                format!("RSA-{}", modulus * 8)
            }
            _ => "RSA".to_string(),
        },
        other => format!("unknown ({other})"),
    }
}

/// Checks the certificate against a PEM CRL from `origin` (for example "ConfigMap shop/nhi-trust").
/// The CRL must come from the certificate's issuer; when the CA certificates are at hand
/// (`ca_pem`), its signature must verify against the issuer's key too.
pub fn check_revocation(
    leaf_der: &[u8],
    crl_pem: &str,
    ca_pem: Option<&str>,
    origin: &str,
    now: OffsetDateTime,
) -> Revocation {
    let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
        return Revocation::unknown("the certificate cannot be parsed");
    };
    // During a CA rotation crl.pem holds one CRL per CA: the certificate's issuer's is the one.
    let blocks = match pem::parse_many(crl_pem.trim()) {
        Ok(b) if !b.is_empty() => b,
        Ok(_) => return Revocation::unknown(format!("{origin} holds no CRL")),
        Err(e) => return Revocation::unknown(format!("{origin} holds no readable CRL: {e}")),
    };
    if let Some(block) = blocks.iter().find(|b| b.tag() != "X509 CRL") {
        return Revocation::unknown(format!(
            "{origin} holds a {} block, not an X509 CRL",
            block.tag()
        ));
    }
    let mut parsed = Vec::with_capacity(blocks.len());
    for block in &blocks {
        let Ok((_, crl)) = CertificateRevocationList::from_der(block.contents()) else {
            return Revocation::unknown(format!("{origin} holds a CRL that cannot be parsed"));
        };
        parsed.push(crl);
    }
    let Some(crl) = parsed
        .iter()
        .find(|c| c.issuer().as_raw() == leaf.issuer().as_raw())
    else {
        return Revocation::unknown(format!(
            "the CRL in {origin} is issued by {}, the certificate by {}",
            parsed[0].issuer(),
            leaf.issuer()
        ));
    };
    let updated = crl.last_update().to_datetime();
    let mut detail = format!("CRL in {origin}, updated {}", relative(updated, now));
    match ca_pem.map(|pem| crl_signature(crl, pem)) {
        None | Some(Signature::Verified) => {}
        Some(Signature::Unchecked(why)) => {
            detail.push_str(&format!("; signature not checked: {why}"))
        }
        Some(Signature::Bad(why)) => {
            return Revocation::unknown(format!("the CRL in {origin} {why}"));
        }
    }
    if let Some(next) = crl.next_update().map(|t| t.to_datetime())
        && next < now
    {
        detail.push_str(&format!(
            "; stale: its nextUpdate passed {}, is the operator publishing?",
            relative(next, now)
        ));
    }
    match crl
        .iter_revoked_certificates()
        .find(|r| r.raw_serial() == leaf.raw_serial())
    {
        Some(entry) => Revocation {
            status: RevocationState::Revoked,
            revoked_at: Some(rfc3339(entry.revocation_date.to_datetime())),
            detail,
        },
        None => Revocation {
            status: RevocationState::NotRevoked,
            revoked_at: None,
            detail,
        },
    }
}

/// What the CRL's signature check found.
enum Signature {
    Verified,
    /// The issuer's certificate is not at hand (for example an intermediate CA whose root alone
    /// is in `ca.crt`).
    Unchecked(String),
    Bad(String),
}

/// Checks the CRL's signature with the key of the CA certificate in `ca_pem` that issued it.
fn crl_signature(crl: &CertificateRevocationList<'_>, ca_pem: &str) -> Signature {
    let Ok(blocks) = pem::parse_many(ca_pem) else {
        return Signature::Unchecked("ca.crt is not valid PEM".to_string());
    };
    let issuer = blocks
        .iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .filter_map(|b| X509Certificate::from_der(b.contents()).ok().map(|(_, c)| c))
        .find(|ca| ca.subject().as_raw() == crl.issuer().as_raw());
    match issuer {
        None => Signature::Unchecked("its issuer is not in ca.crt".to_string()),
        Some(ca) => match crl.verify_signature(ca.public_key()) {
            Ok(()) => Signature::Verified,
            Err(e) => Signature::Bad(format!("does not verify against its issuer's key: {e}")),
        },
    }
}

/// The report as labelled lines.
pub fn render_text(r: &CertificateReport, now: OffsetDateTime) -> String {
    let dash = || "-".to_string();
    let when = |t: &str| match nhi_identity::timestamp::parse_rfc3339(t) {
        Some(at) => format!("{t} ({})", relative(at, now)),
        None => t.to_string(),
    };
    let not_after = match nhi_identity::timestamp::parse_rfc3339(&r.not_after) {
        Some(at) if r.expired => format!("{} (expired {})", r.not_after, relative(at, now)),
        Some(at) => format!("{} ({})", r.not_after, expires(at, now)),
        None => r.not_after.clone(),
    };
    let grants = match (&r.extension_error, r.grants.is_empty()) {
        (Some(e), _) => format!("unreadable: {e}"),
        (None, true) => dash(),
        (None, false) => r.grants.join(", "),
    };
    let attributes = if r.attributes.is_empty() {
        dash()
    } else {
        r.attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let revocation = match r.revocation.status {
        RevocationState::Revoked => format!(
            "REVOKED at {} ({})",
            r.revocation.revoked_at.as_deref().unwrap_or("?"),
            r.revocation.detail
        ),
        RevocationState::NotRevoked => format!("not revoked ({})", r.revocation.detail),
        RevocationState::Unknown => format!("unknown ({})", r.revocation.detail),
    };
    let mut lines = vec![
        ("Source", r.source.clone()),
        ("Subject", r.subject.clone()),
        ("SPIFFE ID", r.spiffe_id.clone().unwrap_or_else(dash)),
        ("Serial", r.serial_number.clone()),
        ("Not before", when(&r.not_before)),
        ("Not after", not_after),
        ("Issuer", r.issuer.clone()),
        ("Key algorithm", r.key_algorithm.clone()),
        ("SHA-256", r.thumbprint_sha256.clone()),
        ("Grants", grants),
        ("Attributes", attributes),
    ];
    lines.extend(delegation_lines(r));
    lines.push(("Revocation", revocation));
    fields(&lines)
}

/// The task and the chain that delegated it, for a task certificate.
fn delegation_lines(r: &CertificateReport) -> Vec<(&'static str, String)> {
    if let Some(e) = &r.delegation_error {
        return vec![("Delegation", format!("unreadable: {e}"))];
    }
    let Some(d) = &r.delegation else {
        return vec![];
    };
    let mut task = format!(
        "{} ({})",
        d.task_id,
        if d.purpose.is_empty() {
            "-"
        } else {
            &d.purpose
        }
    );
    if let Some(digest) = &d.input_sha256 {
        task.push_str(&format!(", input SHA-256 {digest}"));
    }
    let mut lines = vec![("Task", task)];
    for (i, a) in d.ancestors.iter().enumerate() {
        let attributes: Vec<String> = a
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let label = if i == 0 { "Delegated by" } else { "" };
        let mut line = format!("{}. {} (serial {})", i + 1, a.spiffe_id, a.serial_number);
        if !attributes.is_empty() {
            line.push_str(&format!(" [{}]", attributes.join(", ")));
        }
        lines.push((label, line));
    }
    lines
}

/// Runs `inspect`.
pub async fn run(global: &GlobalArgs, args: &InspectArgs) -> Result<String, PluginError> {
    let now = OffsetDateTime::now_utc();
    let path = Path::new(&args.target);
    let mut cluster = None;
    let (source, pem_text) = if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PluginError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        (format!("file {}", path.display()), text)
    } else if args.target.contains('/') {
        // Secret names have no slash: this was meant as a file.
        return Err(PluginError::Invalid(format!(
            "no such file: {}",
            args.target
        )));
    } else {
        let c = connect(global).await?;
        let text = secret_certificate(&c, &args.target).await?;
        let source = format!("secret {}/{} (tls.crt)", c.namespace, args.target);
        cluster = Some(c);
        (source, text)
    };
    let der = first_certificate(&pem_text)
        .map_err(|e| PluginError::Certificate(format!("{source}: {e}")))?;
    let mut report = describe_certificate(&der, &source, now)
        .map_err(|e| PluginError::Certificate(format!("{source}: {e}")))?;
    report.revocation = match &args.crl {
        Some(file) => {
            let crl = std::fs::read_to_string(file).map_err(|e| {
                PluginError::Invalid(format!("cannot read --crl {}: {e}", file.display()))
            })?;
            check_revocation(&der, &crl, None, &format!("file {}", file.display()), now)
        }
        None => {
            // A file names its namespace in its SPIFFE ID, unless -n says otherwise.
            let spiffe_ns = report
                .spiffe_id
                .as_deref()
                .and_then(|id| parse_spiffe_id(id).ok())
                .map(|id| id.namespace);
            let cluster = match cluster {
                Some(c) => Ok(c),
                None => connect(global).await,
            };
            match cluster {
                Ok(c) => {
                    let ns = global
                        .namespace
                        .clone()
                        .or(spiffe_ns)
                        .unwrap_or(c.namespace.clone());
                    published_revocation(&c, &ns, &der, now).await
                }
                Err(e) => Revocation::unknown(format!("cannot reach the cluster for the CRL: {e}")),
            }
        }
    };
    match structured(&report, args.output)? {
        Some(text) => Ok(text),
        None => Ok(render_text(&report, now)),
    }
}

/// The `tls.crt` of a Secret; no other key of it is read.
async fn secret_certificate(cluster: &Cluster, name: &str) -> Result<String, PluginError> {
    let ns = &cluster.namespace;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let target = Target::Object {
        kind: "secret",
        namespace: ns,
        name,
    };
    let secret = secrets.get(name).await.map_err(|e| from_kube(e, target))?;
    let crt = secret
        .data
        .as_ref()
        .and_then(|d| d.get("tls.crt"))
        .ok_or_else(|| {
            PluginError::Certificate(format!(
                "secret {ns}/{name} has no tls.crt (nor is there a file of that name)"
            ))
        })?;
    String::from_utf8(crt.0.clone()).map_err(|_| {
        PluginError::Certificate(format!("secret {ns}/{name}: tls.crt is not PEM text"))
    })
}

/// Checks the certificate against the CRL the operator publishes in `ns`.
async fn published_revocation(
    cluster: &Cluster,
    ns: &str,
    der: &[u8],
    now: OffsetDateTime,
) -> Revocation {
    let maps: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let origin = format!("ConfigMap {ns}/{TRUST_CONFIGMAP}");
    let map = match maps.get_opt(TRUST_CONFIGMAP).await {
        Ok(Some(map)) => map,
        Ok(None) => return Revocation::unknown(format!("no {TRUST_CONFIGMAP} ConfigMap in {ns}")),
        Err(e) => {
            let why = from_kube(e, Target::Other);
            return Revocation::unknown(format!("cannot read {origin}: {}", cause_chain(&why)));
        }
    };
    let data = map.data.unwrap_or_default();
    match data.get("crl.pem") {
        Some(crl) => check_revocation(
            der,
            crl,
            data.get("ca.crt").map(String::as_str),
            &origin,
            now,
        ),
        None => Revocation::unknown(format!("{origin} has no crl.pem")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_api::{KeyAlgorithm, Usage};
    use nhi_core::ca::CertificateAuthority;
    use nhi_core::issue::keys::generate_key;
    use nhi_core::issue::leaf::{IssuedCertificate, LeafRequest, issue_leaf};
    use nhi_identity::extension::{EXTENSION_OID, IdentityClaims, encode};
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams,
        SerialNumber,
    };
    use time::Duration;

    fn ca(name: &str) -> CertificateAuthority {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root(name, Duration::days(30), now).unwrap();
        CertificateAuthority::from_material(&m, now).unwrap()
    }

    /// A CA with the same name as `ca` and another key (roots the operator makes have distinct
    /// names; a forger would copy one).
    fn twin_of(ca: &CertificateAuthority) -> CertificateAuthority {
        let (_, original) = X509Certificate::from_der(ca.cert_der()).unwrap();
        let subject = original.subject();
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        let first = |mut it: Box<dyn Iterator<Item = _> + '_>| -> String {
            let attr: &x509_parser::x509::AttributeTypeAndValue = it.next().unwrap();
            attr.as_str().unwrap().to_string()
        };
        dn.push(
            rcgen::DnType::CommonName,
            first(Box::new(subject.iter_common_name())),
        );
        dn.push(
            rcgen::DnType::OrganizationName,
            first(Box::new(subject.iter_organization())),
        );
        dn.push(
            rcgen::DnType::OrganizationalUnitName,
            first(Box::new(subject.iter_organizational_unit())),
        );
        params.distinguished_name = dn;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let material = nhi_core::ca::CaMaterial {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            trust_bundle_pem: None,
        };
        CertificateAuthority::from_material(&material, OffsetDateTime::now_utc()).unwrap()
    }

    fn issue(ca: &CertificateAuthority, alg: KeyAlgorithm, grants: &[&str]) -> IssuedCertificate {
        let claims = IdentityClaims {
            grants: grants.iter().map(|s| s.to_string()).collect(),
            attributes: [("project".to_string(), "shop".to_string())].into(),
        };
        let req = LeafRequest {
            spiffe_id: "spiffe://cluster.local/ns/shop/mi/checkout".into(),
            common_name: Some("checkout".into()),
            namespace: "shop".into(),
            dns_names: vec![],
            usages: vec![Usage::Client],
            ttl: Duration::hours(1),
            not_after_cap: None,
            extensions: vec![(EXTENSION_OID.to_vec(), encode(&claims).unwrap())],
        };
        let key = generate_key(alg).unwrap();
        issue_leaf(ca, &req, &key, OffsetDateTime::now_utc()).unwrap()
    }

    #[test]
    fn a_task_certificate_shows_its_task_and_the_chain_that_delegated_it() {
        use nhi_identity::delegation::{Ancestor, DELEGATION_OID, Delegation};
        let ca = ca("delegation");
        let delegation = Delegation {
            ancestors: vec![Ancestor {
                serial_hex: "1c".into(),
                spiffe_id: "spiffe://cluster.local/ns/shop/mi/checkout".into(),
                attributes: [("model".to_string(), "m-1".to_string())].into(),
            }],
            task_id: "T-1".into(),
            purpose: "refund order 1042".into(),
            input_digest: Some([0xab; 32]),
        };
        let req = LeafRequest {
            spiffe_id: "spiffe://cluster.local/ns/shop/mi/checkout/task/T-1".into(),
            common_name: None,
            namespace: "shop".into(),
            dns_names: vec![],
            usages: vec![Usage::Client],
            ttl: Duration::minutes(5),
            not_after_cap: None,
            extensions: vec![(
                DELEGATION_OID.to_vec(),
                nhi_identity::delegation::encode(&delegation).unwrap(),
            )],
        };
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let issued = issue_leaf(&ca, &req, &key, OffsetDateTime::now_utc()).unwrap();
        let der = first_certificate(&issued.chain_pem).unwrap();
        let now = OffsetDateTime::now_utc();
        let report = describe_certificate(&der, "task.pem", now).unwrap();
        let d = report.delegation.clone().expect("the delegation");
        assert_eq!(d.task_id, "T-1");
        assert_eq!(d.ancestors[0].serial_number, "1c");
        assert_eq!(d.input_sha256.as_deref(), Some("ab".repeat(32).as_str()));
        let text = render_text(&report, now);
        assert!(
            text.contains("Task:") && text.contains("T-1 (refund order 1042)"),
            "{text}"
        );
        assert!(
            text.contains("Delegated by:")
                && text.contains(
                    "1. spiffe://cluster.local/ns/shop/mi/checkout (serial 1c) [model=m-1]"
                ),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["delegation"]["taskID"], "T-1");
        assert_eq!(
            json["delegation"]["ancestors"][0]["spiffeID"],
            "spiffe://cluster.local/ns/shop/mi/checkout"
        );
        // An identity's own certificate has none, in text and in JSON.
        let own = describe_certificate(
            &first_certificate(&issue(&ca, KeyAlgorithm::EcdsaP256, &[]).chain_pem).unwrap(),
            "own.pem",
            now,
        )
        .unwrap();
        assert!(!render_text(&own, now).contains("Task:"));
        assert!(
            serde_json::to_value(&own)
                .unwrap()
                .get("delegation")
                .is_none()
        );
    }

    fn crl(ca: &CertificateAuthority, serials: &[&str], next_update: Duration) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - Duration::minutes(2),
            next_update: now + next_update,
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(s).unwrap()),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(ca.issuer())
        .unwrap()
        .pem()
        .unwrap()
    }

    #[test]
    fn reports_what_the_operator_records_in_status() {
        let ca = ca("test root");
        let issued = issue(
            &ca,
            KeyAlgorithm::EcdsaP256,
            &["payments.process", "payments.refund"],
        );
        let now = OffsetDateTime::now_utc();
        let der = first_certificate(&issued.chain_pem).unwrap();
        assert_eq!(der, issued.leaf_der, "the leaf is the first block");
        let r = describe_certificate(&der, "file tls.crt", now).unwrap();
        assert_eq!(r.serial_number, issued.info.serial_hex);
        assert_eq!(r.thumbprint_sha256, issued.info.thumbprint_sha256);
        assert_eq!(r.not_after, rfc3339(issued.info.not_after));
        assert_eq!(
            r.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/shop/mi/checkout")
        );
        assert_eq!(r.grants, ["payments.process", "payments.refund"]);
        assert_eq!(r.attributes["project"], "shop");
        assert_eq!(r.key_algorithm, "ECDSA-P256");
        assert!(r.subject.contains("CN=checkout"), "{}", r.subject);
        assert!(r.issuer.contains("test root"), "{}", r.issuer);
        assert!(!r.expired);
        let text = render_text(&r, now);
        for want in [
            "SPIFFE ID:",
            "payments.process, payments.refund",
            "project=shop",
            "in 59m",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }

    #[test]
    fn key_algorithms_are_named_as_in_the_spec() {
        let ca = ca("test root");
        for (alg, name) in [
            (KeyAlgorithm::EcdsaP384, "ECDSA-P384"),
            (KeyAlgorithm::Ed25519, "Ed25519"),
            (KeyAlgorithm::Rsa2048, "RSA-2048"),
        ] {
            let issued = issue(&ca, alg, &[]);
            let r = describe_certificate(&issued.leaf_der, "x", OffsetDateTime::now_utc()).unwrap();
            assert_eq!(r.key_algorithm, name);
        }
    }

    #[test]
    fn the_key_of_an_identity_file_is_skipped_and_never_reported() {
        let ca = ca("test root");
        let issued = issue(&ca, KeyAlgorithm::EcdsaP256, &[]);
        let identity_pem = format!("{}{}", issued.key_pem, issued.chain_pem);
        let der = first_certificate(&identity_pem).unwrap();
        assert_eq!(der, issued.leaf_der);
        let r = describe_certificate(&der, "file identity.pem", OffsetDateTime::now_utc()).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("PRIVATE"));
        assert_eq!(
            first_certificate(&issued.key_pem),
            Err("no CERTIFICATE block".to_string())
        );
        assert!(first_certificate("hello").is_err());
    }

    #[test]
    fn revocation_is_looked_up_in_the_issuers_crl() {
        let ca = ca("test root");
        let revoked = issue(&ca, KeyAlgorithm::EcdsaP256, &[]);
        let fine = issue(&ca, KeyAlgorithm::EcdsaP256, &[]);
        let now = OffsetDateTime::now_utc();
        let list = crl(&ca, &[&revoked.info.serial_hex], Duration::hours(1));
        let origin = "ConfigMap shop/nhi-trust";
        let trust = ca.trust_bundle_pem();

        let r = check_revocation(&revoked.leaf_der, &list, Some(trust), origin, now);
        assert_eq!(r.status, RevocationState::Revoked);
        assert!(r.revoked_at.is_some());
        assert!(r.detail.contains(origin), "{}", r.detail);

        let r = check_revocation(&fine.leaf_der, &list, Some(trust), origin, now);
        assert_eq!(r.status, RevocationState::NotRevoked);
        assert!(r.detail.contains("updated 2m ago"), "{}", r.detail);

        // A stale CRL still answers, and says it is stale.
        let stale = crl(&ca, &[], -Duration::minutes(1));
        let r = check_revocation(&fine.leaf_der, &stale, None, origin, now);
        assert_eq!(r.status, RevocationState::NotRevoked);
        assert!(r.detail.contains("stale"), "{}", r.detail);
    }

    #[test]
    fn a_crl_from_elsewhere_or_unreadable_says_unknown() {
        let ca = ca("test root");
        let other = self::ca("another root");
        let cert = issue(&ca, KeyAlgorithm::EcdsaP256, &[]);
        let now = OffsetDateTime::now_utc();
        let foreign = crl(&other, &[&cert.info.serial_hex], Duration::hours(1));
        let r = check_revocation(&cert.leaf_der, &foreign, None, "file crl.pem", now);
        assert_eq!(r.status, RevocationState::Unknown);
        assert!(r.detail.contains("issued by"), "{}", r.detail);

        // Same issuer name, other key: the signature check catches it.
        let twin = twin_of(&ca);
        let forged = crl(&twin, &[], Duration::hours(1));
        let r = check_revocation(
            &cert.leaf_der,
            &forged,
            Some(ca.trust_bundle_pem()),
            "x",
            now,
        );
        assert_eq!(r.status, RevocationState::Unknown);
        assert!(r.detail.contains("does not verify"), "{}", r.detail);

        // The issuer's certificate not at hand: the CRL still answers, unchecked, and says so.
        let list = crl(&ca, &[&cert.info.serial_hex], Duration::hours(1));
        let r = check_revocation(
            &cert.leaf_der,
            &list,
            Some(other.trust_bundle_pem()),
            "x",
            now,
        );
        assert_eq!(r.status, RevocationState::Revoked);
        assert!(r.detail.contains("signature not checked"), "{}", r.detail);

        let r = check_revocation(&cert.leaf_der, &cert.chain_pem, None, "x", now);
        assert_eq!(r.status, RevocationState::Unknown);
        assert!(r.detail.contains("not an X509 CRL"), "{}", r.detail);
        let r = check_revocation(&cert.leaf_der, "garbage", None, "x", now);
        assert_eq!(r.status, RevocationState::Unknown);
    }
}
