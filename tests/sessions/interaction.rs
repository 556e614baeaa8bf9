//! The ApiInteraction engine: the seed's XML examples, verbatim but for `~~~REPLACE~~~`, run
//! against a gateway started here; engine behaviour against a local test server; the
//! `tonegate interact` command; and a parser that never panics.

use crate::common;

use std::time::Duration;

use common::gateway::{Gateway, DEV_CLIENT};
use serde_json::{json, Value};
use tonegate::interaction::{
    run_plan, Interaction, InteractionError, InteractionRunner, Variables,
};

/// A seed fixture with its `~~~REPLACE~~~` placeholders filled in order.
fn seed(name: &str, fill: &[&str]) -> Interaction {
    let mut text =
        std::fs::read_to_string(common::fixture(&format!("interactions/{name}.xml"))).unwrap();
    for f in fill {
        assert!(
            text.contains("~~~REPLACE~~~"),
            "{name}: more fills than placeholders"
        );
        text = text.replacen("~~~REPLACE~~~", f, 1);
    }
    assert!(!text.contains("~~~REPLACE~~~"), "{name}: placeholders left");
    Interaction::parse(&text).unwrap()
}

fn payment_vars(vars: &mut Variables) {
    for (k, v) in [
        ("CallGuid", "call-interact-1"),
        ("Name", "Ada Lovelace"),
        ("PostCode", "SW1A 1AA"),
        ("Address", "10 Downing Street, \"The\" Study"),
        ("TxnRef", "INV-9"),
        ("Amount", "124.99"),
        ("Phone", "+447700900123"),
    ] {
        vars.insert(k.into(), json!(v));
    }
}

#[test]
fn the_seed_definitions_run_unchanged_and_fill_every_destination() {
    let gw = Gateway::start("");
    let base = format!("http://{}", gw.addr);
    let engine = InteractionRunner::new(Duration::from_secs(10), 0);
    let payment = ["Name", "PostCode", "Address", "TxnRef", "Amount"];
    let mut ss_fill = vec![base.as_str(), "dev-account"];
    ss_fill.extend(payment);
    let steps = vec![
        (
            "authorize".to_string(),
            seed("seed_authorize", &[&base, DEV_CLIENT.0, DEV_CLIENT.1]),
        ),
        (
            "selfservice".to_string(),
            seed("seed_selfservicesession", &ss_fill),
        ),
        ("status".to_string(), seed("seed_sessionstatus", &[&base])),
    ];
    let mut vars = Variables::new();
    payment_vars(&mut vars);
    gw.runtime
        .block_on(run_plan(&engine, &steps, &mut vars, None, |_, _, _| {}))
        .unwrap();
    for (k, want) in [
        ("AuthorizeResponseCode", json!(200)),
        ("GlobalPCIResponseCode", json!(200)),
        ("GlobalPCI|ResponseCode", json!(200)),
        ("TokenType", json!("Bearer")),
        ("GlobalPCI|SessionState", json!("Created")),
    ] {
        assert_eq!(vars.get(k), Some(&want), "{k}");
    }
    for k in [
        "AccessToken",
        "GlobalPCI|SessionId",
        "PCIPal|DtmfFallbackNumber",
        "PCIPal|DtmfLinkId",
        "GlobalPCI|Message",
    ] {
        assert!(
            vars.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "{k} not filled: {vars:?}"
        );
    }
    // The quote in the address reached the session intact (JSON-escaped, not breaking the body).
    let id = vars["GlobalPCI|SessionId"].as_str().unwrap();
    let s = gw.state.sessions.get_any(id).unwrap();
    assert_eq!(
        s.payment_data["cardholder Address"],
        "10 Downing Street, \"The\" Study"
    );
    assert_eq!(s.call_guid.as_deref(), Some("call-interact-1"));

    // The digital definition too.
    let mut d_fill = vec![base.as_str(), "dev-account", "Phone"];
    d_fill.extend(payment);
    let mut vars2 = vars.clone();
    vars2.insert("TxnRef".into(), json!("INV-10"));
    gw.runtime
        .block_on(engine.run(&seed("seed_digitalselfservicesession", &d_fill), &mut vars2))
        .unwrap();
    assert_eq!(vars2["GlobalPCIResponseCode"], 200);
    assert_ne!(vars2["GlobalPCI|SessionId"], vars["GlobalPCI|SessionId"]);
}

/// A local HTTP server for engine tests.
fn test_server(rt: &tokio::runtime::Runtime) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route("/echo/{*rest}", post(|headers: HeaderMap, uri: axum::http::Uri, body: String| async move {
            let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            axum::Json(json!({"path": uri.path(), "query": uri.query(), "contentType": ct, "body": body, "nested": {"list": [{"id": 7}, {"id": "x"}]}}))
        }))
        .route("/status/{code}", get(|axum::extract::Path(code): axum::extract::Path<u16>| async move {
            (StatusCode::from_u16(code).unwrap(), axum::Json(json!({"error": "nope", "count": "12"})))
        }))
        .route("/xml", get(|| async { ([("content-type", "application/xml")], "<r><session><id>s-9</id><paid>true</paid><when>2026-11-22T10:00:00Z</when></session></r>") }))
        .route("/slow", get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "late"
        }));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await });
    url
}

fn def(url: &str, method: &str, headers: &str, body: &str, ty: &str, fields: &str) -> Interaction {
    Interaction::parse(&format!(
        "<ApiInteraction><Request><Url>{url}</Url><Method>{method}</Method><Headers>{headers}</Headers><Body><![CDATA[{body}]]></Body></Request>\
         <Response><Type>{ty}</Type><ResponseCodeDestination>Code</ResponseCodeDestination><Fields>{fields}</Fields></Response></ApiInteraction>"
    ))
    .unwrap()
}

fn field(loc: &str, dest: &str, ty: &str) -> String {
    format!("<Field><Locator>{loc}</Locator><Destination>{dest}</Destination><DataType>{ty}</DataType></Field>")
}

#[test]
fn engine_behaviour() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let base = test_server(&rt);
    let engine = InteractionRunner::new(Duration::from_secs(1), 0);
    let mut vars = Variables::new();
    vars.insert("Base".into(), json!(base));
    vars.insert("Id".into(), json!("a b/c?d=1"));
    vars.insert("Quote".into(), json!("say \"hi\" & {bye}"));

    // Escaping: path segment percent-encoded, JSON body escaped, form body encoded.
    let ct_json = "<Header><Key>Content-Type</Key><Value>application/json</Value></Header>";
    let d = def(
        "$(Base)/echo/$(Id)",
        "POST",
        ct_json,
        r#"{"q":"$(Quote)"}"#,
        "JSON",
        &(field("body", "Body", "String")
            + &field("path", "Path", "String")
            + &field("nested.list[0].id", "Nested", "Integer")),
    );
    rt.block_on(engine.run(&d, &mut vars)).unwrap();
    assert_eq!(vars["Path"], "/echo/a%20b%2Fc%3Fd%3D1");
    let sent: Value = serde_json::from_str(vars["Body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["q"], "say \"hi\" & {bye}");
    assert_eq!(vars["Nested"], 7);
    let d = def(
        "$(Base)/echo/form",
        "POST",
        "",
        "a=$(Quote)&b=2",
        "JSON",
        &(field("body", "Body", "String") + &field("contentType", "Ct", "String")),
    );
    rt.block_on(engine.run(&d, &mut vars)).unwrap();
    assert_eq!(
        vars["Ct"], "application/x-www-form-urlencoded",
        "inferred for a form body"
    );
    let form: Vec<(String, String)> =
        serde_urlencoded::from_str(vars["Body"].as_str().unwrap()).unwrap();
    assert_eq!(form[0].1, "say \"hi\" & {bye}");

    // Missing variable: an error naming it; nothing sent.
    let d = def("$(Base)/echo/x", "POST", "", "$(Nope)", "JSON", "");
    assert!(
        matches!(rt.block_on(engine.run(&d, &mut vars)), Err(InteractionError::MissingVariable(n)) if n == "Nope")
    );

    // Non-2xx: the code still lands in ResponseCodeDestination, fields still map.
    for code in [404u16, 500] {
        let d = def(
            "$(Base)/status/$(C)",
            "GET",
            "",
            "",
            "JSON",
            &(field("error", "Err", "String") + &field("sessionId", "Sid", "String")),
        );
        vars.insert("C".into(), json!(code.to_string()));
        let r = rt.block_on(engine.run(&d, &mut vars)).unwrap();
        assert_eq!((vars["Code"].clone(), r.status), (json!(code), code));
        assert_eq!(vars["Err"], "nope");
        assert_eq!(r.missing, vec!["sessionId".to_string()]);
    }

    // Data types: a conversion error is clear; a good one converts.
    let d = def(
        "$(Base)/status/200",
        "GET",
        "",
        "",
        "JSON",
        &field("count", "Count", "Integer"),
    );
    rt.block_on(engine.run(&d, &mut vars)).unwrap();
    assert_eq!(vars["Count"], 12);
    let d = def(
        "$(Base)/status/200",
        "GET",
        "",
        "",
        "JSON",
        &field("error", "Count", "Boolean"),
    );
    let e = rt
        .block_on(engine.run(&d, &mut vars))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Count") && e.contains("not a Boolean"), "{e}");

    // XML responses by element path.
    let d = def(
        "$(Base)/xml",
        "GET",
        "",
        "",
        "XML",
        &(field("session/id", "X", "String")
            + &field("r.session.paid", "Paid", "Boolean")
            + &field("session/when", "When", "Date")),
    );
    rt.block_on(engine.run(&d, &mut vars)).unwrap();
    assert_eq!(
        (
            vars["X"].clone(),
            vars["Paid"].clone(),
            vars["When"].clone()
        ),
        (json!("s-9"), json!(true), json!("2026-11-22"))
    );
    // A JSON definition pointed at XML is a clear error.
    let d = def(
        "$(Base)/xml",
        "GET",
        "",
        "",
        "JSON",
        &field("a", "A", "String"),
    );
    assert!(matches!(
        rt.block_on(engine.run(&d, &mut vars)),
        Err(InteractionError::Body {
            expected: "JSON",
            ..
        })
    ));

    // Timeouts.
    let d = def("$(Base)/slow", "GET", "", "", "Text", "");
    let e = rt
        .block_on(engine.run(&d, &mut vars))
        .unwrap_err()
        .to_string();
    assert!(e.contains("timed out"), "{e}");
    // Nothing listening.
    vars.insert("Base".into(), json!("http://127.0.0.1:9"));
    let d = def("$(Base)/x", "GET", "", "", "Text", "");
    assert!(rt
        .block_on(engine.run(&d, &mut vars))
        .unwrap_err()
        .to_string()
        .contains("could not connect"));
}

#[test]
fn interact_command_runs_a_call_plan_and_masks_secrets() {
    let gw = Gateway::start("");
    let vars = json!({"BaseUrl": format!("http://{}", gw.addr), "ClientId": DEV_CLIENT.0, "ClientSecret": DEV_CLIENT.1,
        "AccountConfigurationId": "dev-account", "CallGuid": "call-cli-1", "CardholderName": "A", "CardholderPostCode": "B",
        "CardholderAddress": "C", "MerchantTxnRef": "R", "Amount": "1.00"});
    let dir = tempfile::tempdir().unwrap();
    let vf = dir.path().join("vars.json");
    std::fs::write(&vf, vars.to_string()).unwrap();
    let cfg = |f: &str| {
        common::root()
            .join("config/interactions")
            .join(f)
            .display()
            .to_string()
    };
    let out = common::tonegate(&[
        "interact",
        &cfg("authorize.xml"),
        &cfg("agentsession.xml"),
        &cfg("cancelsession.xml"),
        &cfg("sessionstatus.xml"),
        "--vars-file",
        vf.to_str().unwrap(),
        "--poll",
        "--poll-interval",
        "1",
        "--poll-timeout",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["AccessToken"], "***");
    assert_eq!(v["ClientSecret"], "***");
    assert_eq!(v["GlobalPCI|PaymentUiAccessCode"], "***");
    assert_eq!(v["GlobalPCI|SessionState"], "Cancelled");
    assert_eq!(v["GlobalPCI|ResponseCode"], 200);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(DEV_CLIENT.1));
    // A missing variable is a clear failure.
    let out = common::tonegate(&["interact", &cfg("authorize.xml")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"BaseUrl\" is not set"));
    // A malformed definition names the line and column.
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, "<ApiInteraction>\n  <Request>\n    <Nope/>").unwrap();
    let out = common::tonegate(&["interact", bad.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

mod parser_properties {
    use proptest::prelude::*;
    use tonegate::interaction::Interaction;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn arbitrary_text_never_panics(s in ".{0,400}") {
            let _ = Interaction::parse(&s);
        }

        #[test]
        fn mangled_definitions_never_panic(cut in 0usize..900, junk in "[<>/A-Za-z\\[\\]!$() ]{0,20}") {
            let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/interactions/selfservicesession.xml")).unwrap();
            let cut = cut.min(good.len());
            let cut = (0..=cut).rev().find(|&i| good.is_char_boundary(i)).unwrap();
            let mangled = format!("{}{}{}", &good[..cut], junk, &good[cut..]);
            let _ = Interaction::parse(&mangled);
        }
    }
}
