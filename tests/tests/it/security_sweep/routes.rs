//! The sweep's list of every route (method, path template, credential, port), and the tidy
//! check that keeps it equal to the `.route(` calls of the serving crates' sources
//! (`functions`, `http`, `engage`; test modules excluded): axum's `Router` cannot
//! list its routes, so the source is read instead. A route added to the code and not here
//! (or listed here and gone from the code) fails `the_route_list_is_the_code`; whether each
//! listed route is served on the port the list says is checked at runtime by the sweep.

use std::{collections::BTreeSet, path::Path};

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `x-api-key` of a tenant.
    ApiKey,
    /// `Authorization: Bearer $ADMIN_TOKEN`.
    Admin,
    /// `Authorization: Bearer $ORS_EVENTS_TOKEN`.
    Ors,
    /// Nothing (probes, metrics, the OpenAPI document).
    Open,
    /// The GMS surface: `ContactCenterId` of the tenant, plus the tenant's HTTP Basic
    /// credentials (the sweep's victim has some).
    Gms,
    /// An admin-UI session cookie (`ges_session`; the sweep's is a victim Administrator's).
    Session,
}

/// Where a route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    /// Both ports (the public allowlist and the probes).
    Both,
    /// Only the internal port; the external port must answer 404 as for an unknown path.
    Internal,
}

/// One route of the sweep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) auth: Auth,
    pub(crate) port: Port,
}

const fn r(method: &'static str, path: &'static str, auth: Auth, port: Port) -> Route {
    Route {
        method,
        path,
        auth,
        port,
    }
}

use Auth::{Admin, ApiKey, Gms, Open, Ors, Session};
use Port::{Both, Internal};

/// Every route of `engage serve` (the versioned admin kinds are expanded from [`KINDS`]).
const FIXED: &[Route] = &[
    r("POST", "/engagement/v3/callbacks/create", ApiKey, Both),
    r("POST", "/engagement/v3/callbacks/retrieve", ApiKey, Both),
    r("POST", "/engagement/v3/callbacks/cancel", ApiKey, Both),
    r("POST", "/engagement/v3/callbacks/reschedule", ApiKey, Both),
    r(
        "GET",
        "/engagement/v3/callbacks/availability/{service}",
        ApiKey,
        Both,
    ),
    r(
        "GET",
        "/engagement/v3/callbacks/open-for/{service}",
        ApiKey,
        Both,
    ),
    r(
        "GET",
        "/engagement/v3/callbacks/queue-status/{queue}",
        ApiKey,
        Both,
    ),
    r("GET", "/engagement/v3/estimated-wait-time", ApiKey, Both),
    r(
        "POST",
        "/engagement/v3/call-in/requests/create",
        ApiKey,
        Both,
    ),
    r("POST", "/ges/v1/call-in/match", Ors, Internal),
    r(
        "POST",
        "/engagement/v3/statistics/operations/get-statistic-ex",
        ApiKey,
        Both,
    ),
    r("GET", "/engagement/v3/openapi.json", Open, Both),
    r("GET", "/ges/v1/health/live", Open, Both),
    r("GET", "/ges/v1/health/ready", Open, Both),
    r("GET", "/ges/v1/health/detail", Open, Internal),
    r("GET", "/metrics", Open, Internal),
    r("GET", "/ges/v1/tenants", Admin, Internal),
    r("POST", "/ges/v1/tenants", Admin, Internal),
    r("GET", "/ges/v1/tenants/{ccid}", Admin, Internal),
    r("GET", "/ges/v1/tenants/{ccid}/api-errors", Admin, Internal),
    r("GET", "/ges/v1/tenants/{ccid}/callbacks", Admin, Internal),
    r(
        "GET",
        "/ges/v1/tenants/{ccid}/callbacks.csv",
        Admin,
        Internal,
    ),
    r(
        "POST",
        "/ges/v1/tenants/{ccid}/callbacks/bulk-cancel",
        Admin,
        Internal,
    ),
    r(
        "GET",
        "/ges/v1/tenants/{ccid}/callbacks/{id}",
        Admin,
        Internal,
    ),
    r(
        "POST",
        "/ges/v1/tenants/{ccid}/callbacks/{id}/cancel",
        Admin,
        Internal,
    ),
    r(
        "POST",
        "/ges/v1/tenants/{ccid}/callbacks/{id}/reschedule",
        Admin,
        Internal,
    ),
    r(
        "POST",
        "/ges/v1/tenants/{ccid}/callback-settings",
        Admin,
        Internal,
    ),
    r("GET", "/ges/v1/tenants/{ccid}/cors", Admin, Internal),
    r("PUT", "/ges/v1/tenants/{ccid}/cors", Admin, Internal),
    r("GET", "/ges/v1/tenants/{ccid}/api-keys", Admin, Internal),
    r("POST", "/ges/v1/tenants/{ccid}/api-keys", Admin, Internal),
    r(
        "DELETE",
        "/ges/v1/tenants/{ccid}/api-keys/{key_id}",
        Admin,
        Internal,
    ),
    r("POST", "/ges/v1/ors/callbacks/{id}/events", Ors, Internal),
    r("GET", "/ges/v1/tenants/{ccid}/users", Admin, Internal),
    r("POST", "/ges/v1/tenants/{ccid}/users", Admin, Internal),
    r(
        "DELETE",
        "/ges/v1/tenants/{ccid}/users/{username}",
        Admin,
        Internal,
    ),
    r("GET", "/ges", Session, Internal),
    r("GET", "/ges/", Session, Internal),
    r("GET", "/ges/static/app.css", Open, Internal),
    r("GET", "/ges/login", Open, Internal),
    r("POST", "/ges/login", Open, Internal),
    r("POST", "/ges/logout", Session, Internal),
    r("GET", "/ges/queues", Session, Internal),
    r("GET", "/ges/config/services", Session, Internal),
    r("GET", "/ges/config/capacity", Session, Internal),
    r("POST", "/ges/config/capacity/{name}", Session, Internal),
    r("GET", "/ges/config/number-rules", Session, Internal),
    r("POST", "/ges/config/number-rules/test", Session, Internal),
    r("GET", "/ges/developer", Session, Internal),
    r("POST", "/ges/developer/validate-key", Session, Internal),
    r("POST", "/ges/developer/refetch", Session, Internal),
    r(
        "POST",
        "/ges/developer/credentials/{kind}",
        Session,
        Internal,
    ),
    r(
        "POST",
        "/ges/developer/credentials/{kind}/delete",
        Session,
        Internal,
    ),
    r("GET", "/ges/config/call-in", Session, Internal),
    r("POST", "/ges/config/call-in/save", Session, Internal),
    r(
        "POST",
        "/ges/config/call-in/{name}/delete",
        Session,
        Internal,
    ),
    r("GET", "/ges/callbacks", Session, Internal),
    r("GET", "/ges/callbacks.csv", Session, Internal),
    r("POST", "/ges/callbacks/create", Session, Internal),
    r("POST", "/ges/callbacks/bulk-cancel", Session, Internal),
    r("GET", "/ges/callbacks/{id}", Session, Internal),
    r("POST", "/ges/callbacks/{id}/cancel", Session, Internal),
    r("POST", "/ges/callbacks/{id}/reschedule", Session, Internal),
    r(
        "PUT",
        "/ges/v1/tenants/{ccid}/gms-credentials",
        Admin,
        Internal,
    ),
    r(
        "DELETE",
        "/ges/v1/tenants/{ccid}/gms-credentials",
        Admin,
        Internal,
    ),
    r(
        "PUT",
        "/ges/v1/tenants/{ccid}/credentials/{kind}",
        Admin,
        Internal,
    ),
    r(
        "GET",
        "/ges/v1/tenants/{ccid}/credentials/{kind}",
        Admin,
        Internal,
    ),
    r(
        "DELETE",
        "/ges/v1/tenants/{ccid}/credentials/{kind}",
        Admin,
        Internal,
    ),
    r(
        "POST",
        "/genesys/1/service/callback/{service}",
        Gms,
        Internal,
    ),
    r(
        "DELETE",
        "/genesys/1/service/callback/{service}/{id}",
        Gms,
        Internal,
    ),
    r(
        "PUT",
        "/genesys/1/service/callback/{service}/{id}",
        Gms,
        Internal,
    ),
    r("GET", "/genesys/1/service/callback", Gms, Internal),
    r(
        "GET",
        "/genesys/1/service/callback/{service}",
        Gms,
        Internal,
    ),
    r(
        "GET",
        "/genesys/1/service/callback/{service}/availability",
        Gms,
        Internal,
    ),
    r(
        "GET",
        "/genesys/2/service/callback/{service}/availability",
        Gms,
        Internal,
    ),
    r("GET", "/genesys/1/admin/callback/queues", Gms, Internal),
    r("GET", "/genesys/1/admin/callback/watermarks", Gms, Internal),
    r("POST", "/genesys/1/admin/callback/cancel", Gms, Internal),
];

/// The versioned admin object kinds (`functions::admin::versioned`, `AdminKind::PATH`).
const KINDS: &[&str] = &[
    "services",
    "number-rules",
    "business-hours",
    "capacity-rules",
    "call-in-groups",
];

/// The whole list: [`FIXED`] plus, per kind, `GET …/{kind}` and `GET|PUT|DELETE …/{kind}/{name}`.
pub(crate) fn all() -> Vec<Route> {
    let mut out = FIXED.to_vec();
    for kind in KINDS {
        let all: &'static str = format!("/ges/v1/tenants/{{ccid}}/{kind}").leak();
        let one: &'static str = format!("{all}/{{name}}").leak();
        out.push(r("GET", all, Admin, Internal));
        for method in ["GET", "PUT", "DELETE"] {
            out.push(r(method, one, Admin, Internal));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a call's arguments: from just after its `(` to the matching `)`.
fn call_args(text: &str) -> &str {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced .route( call: {text:.80}");
}

/// The HTTP methods of a method router expression (`get(a).put(b)` → GET, PUT).
fn methods(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in [
        "get", "post", "put", "delete", "patch", "head", "options", "any",
    ] {
        for (i, _) in expr.match_indices(&format!("{m}(")) {
            let before = expr[..i].chars().last();
            if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                out.push(m.to_uppercase());
            }
        }
    }
    out
}

/// The path of a `.route(` call: a literal, or the two paths of the versioned router.
fn paths(file: &Path, first_arg: &str) -> Vec<String> {
    let arg = first_arg.trim();
    if let Some(lit) = arg.strip_prefix('"') {
        return vec![lit.trim_end_matches('"').to_string()];
    }
    let text = std::fs::read_to_string(file).expect("source");
    assert!(
        file.ends_with("admin/versioned.rs")
            && text.contains(r#"let all = format!("/ges/v1/tenants/{{ccid}}/{}", K::PATH);"#)
            && text.contains(r#"let one = format!("{all}/{{name}}");"#),
        "{}: a route whose path is not a literal ({arg}): teach the sweep to read it",
        file.display()
    );
    let suffix = match arg {
        "&all" => "",
        "&one" => "/{name}",
        other => panic!("versioned.rs routes {other}: teach the sweep to read it"),
    };
    kinds_in_source()
        .iter()
        .map(|k| format!("/ges/v1/tenants/{{ccid}}/{k}{suffix}"))
        .collect()
}

/// Every `const PATH: &'static str = "…";` of an `AdminKind` in `functions/src`.
fn kinds_in_source() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&functions_src(), &mut files);
    let marker = "const PATH: &'static str = \"";
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("source");
            text.match_indices(marker)
                .map(|(i, _)| {
                    let rest = &text[i + marker.len()..];
                    rest[..rest.find('"').expect("closing quote")].to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn functions_src() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions/src")
}

/// The sources of every crate that builds routers, without their test modules: an inline
/// `#[cfg(test)] mod x { … }` is cut from its attribute to the end of the file (test modules
/// come last), and a file declared `#[cfg(test)] mod x;` is left out.
fn serving_sources() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["functions/src", "http/src", "engage/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let texts: Vec<_> = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("source");
            (f, text)
        })
        .collect();
    let mut test_files = BTreeSet::new();
    for (f, text) in &texts {
        for (name, inline) in test_modules(text) {
            if !inline {
                let dir = f.parent().expect("folder");
                test_files.insert(dir.join(format!("{name}.rs")));
                test_files.insert(dir.join(&name).join("mod.rs"));
            }
        }
    }
    texts
        .into_iter()
        .filter(|(f, _)| !test_files.contains(f))
        .map(|(f, text)| {
            let cut = text
                .match_indices("#[cfg(test)]")
                .find(|(i, _)| {
                    let rest = text[i + "#[cfg(test)]".len()..].trim_start();
                    rest.starts_with("mod ")
                        && rest.lines().next().is_some_and(|l| l.ends_with('{'))
                })
                .map_or(text.len(), |(i, _)| i);
            (f, text[..cut].to_string())
        })
        .collect()
}

/// The `#[cfg(test)]` modules a file declares: (name, whether inline).
fn test_modules(text: &str) -> Vec<(String, bool)> {
    text.match_indices("#[cfg(test)]")
        .filter_map(|(i, _)| {
            let line = text[i + "#[cfg(test)]".len()..]
                .trim_start()
                .lines()
                .next()?;
            let decl = line.strip_prefix("mod ")?;
            let name: String = decl
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            Some((name, line.ends_with('{')))
        })
        .collect()
}

/// (METHOD, path) of every `.route(` call of the serving crates.
pub(crate) fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (file, text) in serving_sources() {
        for unread in [
            ".nest(",
            ".nest_service(",
            ".route_service(",
            ".fallback_service(",
        ] {
            assert!(
                !text.contains(unread),
                "{}: {unread}…) adds routes this list cannot read: teach the sweep",
                file.display()
            );
        }
        for (i, _) in text.match_indices(".route(") {
            let args = call_args(&text[i + ".route(".len()..]);
            let (first, rest) = args.split_once(',').expect("route(path, methods)");
            let methods = methods(rest);
            assert!(!methods.is_empty(), "no method in .route({args})");
            for path in paths(&file, first) {
                for m in &methods {
                    out.insert((m.clone(), path.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn the_route_list_is_the_code() {
    let listed: BTreeSet<(String, String)> = all()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let code = routes_in_source();
    let missing: Vec<_> = code.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "routes in functions/src but not in the sweep: {missing:?}; \
         listed in the sweep but not routed: {stale:?}"
    );
    assert_eq!(
        kinds_in_source(),
        KINDS.iter().map(|k| k.to_string()).collect()
    );
}
