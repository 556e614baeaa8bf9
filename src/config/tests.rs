use super::*;

#[test]
fn production_mode_refuses_each_development_setting_by_name() {
    let safe = include_str!("../../fixtures/config/production.toml");
    Config::parse(safe, Path::new("p.toml")).expect("a production config starts");
    for (change, named) in [
        (
            ("secret_hash = \"$argon2id", "secret = \"plain\"\n#"),
            "plain `secret`",
        ),
        (("psp = \"stripe\"", "psp = \"sandbox\""), "sandbox PSP"),
        (
            ("\"https://api.stripe.com\"", "\"http://api.stripe.com\""),
            "stripe_base_url",
        ),
        (
            ("\"https://pay.example.com\"", "\"http://pay.example.com\""),
            "server.public_url",
        ),
        (
            ("behind_tls_proxy = true", "behind_tls_proxy = false"),
            "behind_tls_proxy",
        ),
        (
            ("behind_tls_proxy = true", "behind_tls_proxy = false"),
            "[server.tls]",
        ),
        (("signing_key = ", "# signing_key = "), "auth.signing_key"),
        (
            (
                "stripe_secret_key = \"sk_live_x\"",
                "stripe_secret_key = \"sk_live_x\"\nwebhook_url = \"http://crm.example.com/hook\"",
            ),
            "webhook_url",
        ),
        (
            (
                "[ng]",
                "[sms]\nprovider = \"twilio\"\ntwilio_base_url = \"http://api.twilio.com\"\n[ng]",
            ),
            "sms.twilio_base_url",
        ),
        (
            (
                "mode = \"production\"",
                "mode = \"production\"\nadjustable_clock = true",
            ),
            "server.adjustable_clock",
        ),
    ] {
        let text = safe.replacen(change.0, change.1, 1);
        assert_ne!(text, safe, "{change:?}");
        let e = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("production") && e.contains(named),
            "{named}: {e}"
        );
    }
    // tonegate's own TLS stands in for the proxy.
    let own_tls = format!(
        "{}\n[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        safe.replacen("behind_tls_proxy = true", "behind_tls_proxy = false", 1)
    );
    let c = Config::parse(&own_tls, Path::new("p.toml")).expect("TLS in place of a proxy");
    assert_eq!(c.public_url(), "https://pay.example.com");
    // The same settings are accepted in development.
    let dev = safe.replacen("mode = \"production\"", "mode = \"development\"", 1);
    let dev = dev.replacen("psp = \"stripe\"", "psp = \"sandbox\"", 1);
    Config::parse(&dev, Path::new("d.toml")).unwrap();
}

#[test]
fn ng_allow_is_checked_and_production_needs_it_for_an_exposed_listen() {
    let safe = include_str!("../../fixtures/config/production.toml");
    let with = |ng: &str| safe.replacen("owner = \"crm\"", &format!("owner = \"crm\"\n{ng}"), 1);
    let exposed = with("listen = \"10.0.0.5:2223\"");
    let e = Config::parse(&exposed, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("production") && e.contains("ng.allow") && e.contains("ng.listen"),
        "{e}"
    );
    for wildcard in ["0.0.0.0:2223", "[::]:2223"] {
        let text = with(&format!("listen = \"{wildcard}\""));
        let e = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ng.allow"), "{wildcard}: {e}");
    }
    // Loopback, or an explicit allow-list, is accepted.
    let c = Config::parse(&with("listen = \"127.0.0.1:2223\""), Path::new("p.toml")).unwrap();
    assert_eq!(
        c.ng.allow_nets().unwrap(),
        ["127.0.0.0/8", "::1/128"].map(|n| n.parse::<ipnet::IpNet>().unwrap())
    );
    let c = Config::parse(
        &with("listen = \"10.0.0.5:2223\"\nallow = [\"10.0.0.10\", \"10.1.2.3/16\", \"fd00::/8\"]"),
        Path::new("p.toml"),
    )
    .unwrap();
    assert_eq!(
        c.ng.allow_nets().unwrap(),
        ["10.0.0.10/32", "10.1.0.0/16", "fd00::/8"].map(|n| n.parse::<ipnet::IpNet>().unwrap())
    );
    // A bad entry is refused at load, by setting and entry, in any mode.
    for bad in ["10.0.0/8", "10.0.0.0/33", "pbx.example.com", ""] {
        let text = format!("[ng]\nallow = [\"127.0.0.1\", \"{bad}\"]\n");
        let e = Config::parse(&text, Path::new("d.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ng.allow") && e.contains("CIDR"), "{bad}: {e}");
    }
    let e = Config::parse(
        &with("listen = \"127.0.0.1:2223\"\nreply_cache_bytes = 1000"),
        Path::new("p.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ng.reply_cache_bytes"), "{e}");
}

#[test]
fn secrets_come_inline_from_the_environment_or_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    std::fs::write(&key, "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n").unwrap();
    std::env::set_var("TONEGATE_CONFIG_TEST_STRIPE", "sk_from_env");
    let safe = include_str!("../../fixtures/config/production.toml");
    let text = safe
        .replacen(
            "signing_key = \"MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\"",
            &format!("signing_key = \"file:{}\"", key.display()),
            1,
        )
        .replacen("\"sk_live_x\"", "\"env:TONEGATE_CONFIG_TEST_STRIPE\"", 1);
    let c = Config::parse(&text, Path::new("s.toml")).unwrap();
    assert_eq!(
        c.auth.signing_key.as_deref(),
        Some("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=")
    );
    assert_eq!(
        c.accounts[0].stripe_secret_key.as_deref(),
        Some("sk_from_env")
    );
    assert!(c.inline_secrets.is_empty(), "{:?}", c.inline_secrets);
    assert_eq!(c.secret_files, vec![key.clone()]);
    let inline = Config::parse(safe, Path::new("s.toml")).unwrap();
    assert_eq!(
        inline.inline_secrets,
        ["auth.signing_key", "accounts \"live\" stripe_secret_key"]
    );
    // A missing variable or file is named with the setting, never a value.
    let e = Config::parse(
        &safe.replacen("\"sk_live_x\"", "\"env:TONEGATE_CONFIG_TEST_UNSET\"", 1),
        Path::new("s.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("accounts \"live\" stripe_secret_key")
            && e.contains("TONEGATE_CONFIG_TEST_UNSET"),
        "{e}"
    );
    let e = Config::parse(
        &safe.replacen("\"sk_live_x\"", "\"file:/nonexistent/key\"", 1),
        Path::new("s.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("stripe_secret_key") && e.contains("/nonexistent/key"),
        "{e}"
    );
}

#[test]
fn personal_data_needs_a_retention_of_at_least_a_day() {
    let e = Config::parse("[store]\npersonal_data_days = 0\n", Path::new("r.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("store.personal_data_days"), "{e}");
    assert_eq!(
        Config::parse("", Path::new("r.toml"))
            .unwrap()
            .store
            .personal_data_days,
        90
    );
}

#[test]
fn empty_file_gives_defaults() {
    let c = Config::parse("", Path::new("x.toml")).unwrap();
    assert_eq!(c.server.listen.port(), 8080);
    assert_eq!(c.public_url(), "http://127.0.0.1:8080");
}

#[test]
fn unknown_keys_and_bad_values_are_clear_errors() {
    let e = Config::parse(
        "[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n",
        Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("c.toml") && e.contains("bogus"), "{e}");
    let e = Config::parse("[server]\nlisten = \"nope\"\n", Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2"), "{e}");
    let e = Config::parse("[server]\npublic_url = \"ftp://x\"\n", Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("public_url"), "{e}");
    let e = Config::parse("[relay]\nengine = \"fast\"\n", Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("io_uring") && e.contains("tokio"), "{e}");
    let e = Config::parse("[relay]\nworkers = 65\n", Path::new("c.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("relay.workers"), "{e}");
    let c = Config::parse(
        "[relay]\nengine = \"tokio\"\nworkers = 3\n",
        Path::new("c.toml"),
    )
    .unwrap();
    assert_eq!((c.relay.engine, c.relay.workers), (RelayEngine::Tokio, 3));
}

#[test]
fn the_front_door_settings_are_checked_by_name() {
    let err = |text: &str| {
        Config::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    };
    let e = err("[server]\ntrusted_proxies = [\"10.0.0.0/40\"]\n");
    assert!(e.contains("server.trusted_proxies"), "{e}");
    let e = err("[auth]\nverified_secret_cache_s = 7200\n");
    assert!(e.contains("auth.verified_secret_cache_s"), "{e}");
    let e = err(
        "[server]\nlisten = \"127.0.0.1:8080\"\n[server.internal]\nlisten = \"127.0.0.1:8080\"\n",
    );
    assert!(e.contains("server.internal.listen"), "{e}");
    // The retired setting still loads (an upgrade must not stop a gateway); serve warns.
    let c = Config::parse("[auth]\nfailures_per_client = 30\n", Path::new("c.toml")).unwrap();
    assert_eq!(c.auth.failures_per_client, Some(30));
    // The per-address cap: a sixteenth of the connection cap unless set (0: none).
    let c = Config::parse("[server]\nmax_connections = 64\n", Path::new("c.toml")).unwrap();
    assert_eq!(c.server.per_address_cap(), 4);
    let c = Config::parse(
        "[server]\nmax_connections_per_address = 0\ntrusted_proxies = [\"10.0.0.1\", \"fd00::/8\"]\n",
        Path::new("c.toml"),
    )
    .unwrap();
    assert_eq!(c.server.per_address_cap(), 0);
    assert!(c
        .server
        .trusted_proxies
        .contains("fd00::1".parse().unwrap()));
}

#[test]
fn no_lookahead_is_refused_unless_marked_unsafe() {
    let e = Config::parse(
        "[relay]
lookahead_frames = 0
",
        Path::new("c.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unsafe_no_lookahead"), "{e}");
    let c = Config::parse(
        "[relay]
lookahead_frames = 0
unsafe_no_lookahead = true
",
        Path::new("c.toml"),
    )
    .unwrap();
    assert_eq!(c.relay.lookahead_frames, 0);
    assert!(Config::parse(
        "[relay]
lookahead_frames = 4
",
        Path::new("c.toml")
    )
    .is_err());
}

#[test]
fn sip_tls_listen_needs_the_plain_listener() {
    let e = Config::parse(
        "[sip]\ntls_listen = \"127.0.0.1:5061\"\n",
        Path::new("s.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sip.tls_listen needs sip.listen"), "{e}");
}
