//! Reading a configuration file: parse, resolve secrets, check every setting, with errors that
//! name the setting (never a secret's value).

use super::*;

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text, path)?;
        if config.server.mode == ServerMode::Production {
            config.check_secret_file_modes(path)?;
        }
        Ok(config)
    }

    /// Production: the config file, if it holds secrets inline, and every `file:` secret must
    /// be closed to group and others (`chmod 600`).
    fn check_secret_file_modes(&self, path: &Path) -> Result<(), ConfigError> {
        use std::os::unix::fs::PermissionsExt;
        let open_to_others = |p: &Path| -> Result<Option<u32>, ConfigError> {
            let mode = std::fs::metadata(p)
                .map_err(|source| ConfigError::Io {
                    path: p.to_owned(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            Ok((mode & 0o077 != 0).then_some(mode))
        };
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message: format!("server.mode = \"production\": {message}"),
        };
        if !self.inline_secrets.is_empty() {
            if let Some(mode) = open_to_others(path)? {
                return Err(invalid(format!(
                    "the file holds secrets inline ({}) and group or others can open it (mode {mode:o}): chmod 600 it, or give them as env:NAME or file:PATH",
                    self.inline_secrets.join(", ")
                )));
            }
        }
        for f in &self.secret_files {
            if let Some(mode) = open_to_others(f)? {
                return Err(invalid(format!(
                    "secret file {} can be opened by group or others (mode {mode:o}): chmod 600 it",
                    f.display()
                )));
            }
        }
        Ok(())
    }

    /// Makes every relative path in the configuration (defaults included) relative to `base`,
    /// the config file's directory, so `serve` runs the same from any working directory.
    fn resolve_paths(&mut self, base: &Path) {
        if base.as_os_str().is_empty() {
            return;
        }
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.store.sqlite_path);
        fix(&mut self.prompts.dir);
        if let Some(t) = &mut self.server.tls {
            fix(&mut t.cert_file);
            fix(&mut t.key_file);
        }
        if let Some(s) = &mut self.server.control_socket {
            fix(s);
        }
        let secret = |v: &mut String| {
            if let Some(p) = v.strip_prefix("file:") {
                if Path::new(p).is_relative() {
                    *v = format!("file:{}", base.join(p).display());
                }
            }
        };
        if let Some(k) = &mut self.auth.signing_key {
            secret(k);
        }
        for c in &mut self.auth.clients {
            if let Some(v) = &mut c.secret {
                secret(v);
            }
        }
        for a in &mut self.accounts {
            for v in [&mut a.stripe_secret_key, &mut a.webhook_secret]
                .into_iter()
                .flatten()
            {
                secret(v);
            }
        }
        secret(&mut self.sms.twilio_auth_token);
    }

    /// Reads every secret setting given as `env:NAME` or `file:PATH`, and notes which are
    /// inline.
    fn resolve_secrets(&mut self) -> Result<(), String> {
        let mut inline = Vec::new();
        let mut files = Vec::new();
        let mut one = |setting: String, value: &mut Option<String>| -> Result<(), String> {
            let Some(v) = value.as_mut() else {
                return Ok(());
            };
            match resolve_secret(&setting, v)? {
                SecretSource::Inline => inline.push(setting),
                SecretSource::File(p) => files.push(p),
                SecretSource::Env => {}
            }
            Ok(())
        };
        one("auth.signing_key".into(), &mut self.auth.signing_key)?;
        for c in &mut self.auth.clients {
            one(format!("auth.clients {:?} secret", c.id), &mut c.secret)?;
        }
        for a in &mut self.accounts {
            one(
                format!("accounts {:?} stripe_secret_key", a.id),
                &mut a.stripe_secret_key,
            )?;
            one(
                format!("accounts {:?} webhook_secret", a.id),
                &mut a.webhook_secret,
            )?;
            one(
                format!("accounts {:?} psp_webhook_secret", a.id),
                &mut a.psp_webhook_secret,
            )?;
        }
        let mut token =
            Some(std::mem::take(&mut self.sms.twilio_auth_token)).filter(|t| !t.is_empty());
        one("sms.twilio_auth_token".into(), &mut token)?;
        self.sms.twilio_auth_token = token.unwrap_or_default();
        self.inline_secrets = inline;
        self.secret_files = files;
        Ok(())
    }

    /// Parses and checks configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        config
            .resolve_secrets()
            .map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        if self.server.mode == ServerMode::Production {
            if let Some(why) = self.production_refusal() {
                return Err(invalid(format!("server.mode = \"production\": {why}")));
            }
        }
        if !valid_node_name(&self.cluster.node) {
            return Err(invalid(format!(
                "cluster.node must be 1-64 letters, digits, '.', '_' or '-', got {:?}",
                self.cluster.node
            )));
        }
        if self.cluster.heartbeat_s == 0 || self.cluster.dead_after_s < 2 * self.cluster.heartbeat_s
        {
            return Err(invalid(format!(
                "cluster.heartbeat_s must be at least 1 and cluster.dead_after_s at least twice it (got {} and {}): one late heartbeat must not end a live node's captures",
                self.cluster.heartbeat_s, self.cluster.dead_after_s
            )));
        }
        if self.store.personal_data_days == 0 {
            return Err(invalid(
                "store.personal_data_days must be at least 1 (sessions being paid need their data)"
                    .into(),
            ));
        }
        if let Some(url) = &self.store.postgres_url {
            if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                // Not the URL itself: it may hold a password.
                return Err(invalid(
                    "store.postgres_url must be a postgresql:// URL".into(),
                ));
            }
        }
        if self.server.max_body_bytes < 1024 {
            return Err(invalid(
                "server.max_body_bytes must be at least 1024".into(),
            ));
        }
        let a = &self.auth;
        if a.failures_per_address == 0
            || a.failure_window_s == 0
            || a.lockout_s == 0
            || a.max_lockout_s < a.lockout_s
        {
            return Err(invalid(
                "auth.failures_per_address, failure_window_s and lockout_s \
                 must be at least 1, and auth.max_lockout_s at least auth.lockout_s"
                    .into(),
            ));
        }
        if a.verified_secret_cache_s > 3600 {
            return Err(invalid(format!(
                "auth.verified_secret_cache_s must be 0-3600, got {}",
                a.verified_secret_cache_s
            )));
        }
        let r = &self.relay;
        let sv = &self.server;
        if sv.header_timeout_s == 0
            || sv.idle_timeout_s < 20
            || sv.request_timeout_s == 0
            || sv.max_connections == 0
        {
            return Err(invalid(
                "server.header_timeout_s, request_timeout_s and max_connections must be at least 1, \
                 and server.idle_timeout_s at least 20 (event streams keep alive every 15 s)"
                    .into(),
            ));
        }
        if let Some(i) = &sv.internal {
            if i.listen == sv.listen && i.listen.port() != 0 {
                return Err(invalid(format!(
                    "server.internal.listen must differ from server.listen ({})",
                    sv.listen
                )));
            }
        }
        if !(0..=19).contains(&sv.nice) {
            return Err(invalid(format!(
                "server.nice must be 0-19, got {}",
                sv.nice
            )));
        }
        if r.port_min < 1024 || r.port_min >= r.port_max || r.port_max - r.port_min < 3 {
            return Err(invalid(format!(
                "relay.port_min..port_max must be a range of at least 4 ports above 1023, got {}..{}",
                r.port_min, r.port_max
            )));
        }
        if r.lookahead_frames > tonegate_dsp::masker::MAX_LOOKAHEAD {
            return Err(invalid(format!(
                "relay.lookahead_frames must be 0-{}, got {}",
                tonegate_dsp::masker::MAX_LOOKAHEAD,
                r.lookahead_frames
            )));
        }
        if r.lookahead_frames == 0 && !r.unsafe_no_lookahead {
            return Err(invalid(
                "relay.lookahead_frames = 0 lets the first 20 ms of every key reach the agent \
                 before it can be recognised; use 1 or more, or set relay.unsafe_no_lookahead = \
                 true to accept that (measurements only)"
                    .into(),
            ));
        }
        if self.ng.listen.is_some() {
            if !self.auth.clients.iter().any(|c| c.id == self.ng.owner) {
                return Err(invalid(format!(
                    "ng.owner {:?} is not a client in [[auth.clients]]",
                    self.ng.owner
                )));
            }
            if let Some(a) = &self.ng.account {
                if self.account(a).is_none() {
                    return Err(invalid(format!("ng.account {a:?} is not an account")));
                }
            }
            if self.ng.reply_cache_s < 30 {
                return Err(invalid(
                    "ng.reply_cache_s must be at least 30 (Kamailio retransmits for that long)"
                        .into(),
                ));
            }
            if self.ng.reply_cache_bytes < 1 << 20 {
                return Err(invalid(
                    "ng.reply_cache_bytes must be at least 1048576 (1 MiB: a few dozen of the largest replies)"
                        .into(),
                ));
            }
        }
        self.ng.allow_nets().map_err(invalid)?;
        self.sip.allow_nets().map_err(invalid)?;
        if self.sip.tls_listen.is_some() && self.sip.listen.is_none() {
            return Err(invalid(
                "sip.tls_listen needs sip.listen (UDP and TCP)".into(),
            ));
        }
        if self.sip.listen.is_some() {
            let sip = &self.sip;
            if !self.auth.clients.iter().any(|c| c.id == sip.owner) {
                return Err(invalid(format!(
                    "sip.owner {:?} is not a client in [[auth.clients]]",
                    sip.owner
                )));
            }
            if sip.after_payment == AfterPaymentSetting::Refer && sip.refer_to.is_none() {
                return Err(invalid(
                    "sip.after_payment = \"refer\" needs sip.refer_to (where to send the caller)"
                        .into(),
                ));
            }
            if sip.min_se_s < 90 || sip.session_expires_s < sip.min_se_s {
                return Err(invalid(
                    "sip.min_se_s must be at least 90 (RFC 4028) and sip.session_expires_s at least that"
                        .into(),
                ));
            }
            if sip.invites_per_second == 0 {
                return Err(invalid("sip.invites_per_second must be at least 1".into()));
            }
            if sip.tls_listen.is_some() && sip.tls.is_none() && self.server.tls.is_none() {
                return Err(invalid(
                    "sip.tls_listen needs a certificate: [sip.tls] (or [server.tls]) cert_file and key_file"
                        .into(),
                ));
            }
            let mut seen = std::collections::HashMap::new();
            for a in &self.accounts {
                let n = dialled_digits(&a.dtmf_fallback_number);
                if n.is_empty() {
                    continue;
                }
                if let Some(other) = seen.insert(n, &a.id) {
                    return Err(invalid(format!(
                        "accounts {other:?} and {:?} have the same dtmf_fallback_number: a call to it could not tell them apart",
                        a.id
                    )));
                }
            }
        }
        if !(8..=16).contains(&self.link.digits) {
            return Err(invalid(format!(
                "link.digits must be 8-16 (the check digit included), got {}",
                self.link.digits
            )));
        }
        if self.link.tries_per_call == 0 || self.link.tries_per_session == 0 {
            return Err(invalid(
                "link.tries_per_call and link.tries_per_session must be at least 1".into(),
            ));
        }
        if r.event_replacement().is_none() {
            return Err(invalid(format!(
                "relay.telephone_event_replacement must be \"drop\" or one key (0-9 * # A-D), got {:?}",
                r.telephone_event_replacement
            )));
        }
        if r.max_calls_per_client > r.max_calls {
            return Err(invalid(format!(
                "relay.max_calls_per_client must be 0 (automatic) or at most relay.max_calls ({}), \
                 got {}",
                r.max_calls, r.max_calls_per_client
            )));
        }
        if r.media_timeout_s == 0 || r.max_calls == 0 {
            return Err(invalid(
                "relay.media_timeout_s and relay.max_calls must be above 0".into(),
            ));
        }
        if r.workers > 64 {
            return Err(invalid(format!(
                "relay.workers must be 0 (automatic) to 64, got {}",
                r.workers
            )));
        }
        match self.sms.provider.as_str() {
            "outbox" => {}
            "twilio"
                if !self.sms.twilio_account_sid.is_empty()
                    && !self.sms.twilio_auth_token.is_empty() => {}
            "twilio" => {
                return Err(invalid(
                    "sms.provider = \"twilio\" needs twilio_account_sid and twilio_auth_token"
                        .into(),
                ))
            }
            other => {
                return Err(invalid(format!(
                    "sms.provider must be \"outbox\" or \"twilio\", got {other:?}"
                )))
            }
        }
        let mut account_ids = std::collections::HashSet::new();
        for a in &self.accounts {
            if !account_ids.insert(a.id.as_str()) {
                return Err(invalid(format!("accounts: id {:?} appears twice", a.id)));
            }
            if a.currency.len() != 3
                || !a.currency.chars().all(|c| c.is_ascii_uppercase())
                || crate::card::money::Currency::from_code(&a.currency).is_err()
            {
                return Err(invalid(format!(
                    "accounts {:?}: currency must be an ISO 4217 code like GBP, EUR or JPY",
                    a.id
                )));
            }
            if a.fields.first() != Some(&crate::capture::Field::Pan) {
                return Err(invalid(format!(
                    "accounts {:?}: fields must start with \"pan\"",
                    a.id
                )));
            }
            if a.psp == PspKind::Stripe
                && (a.stripe_base_url.is_none() || a.stripe_secret_key.is_none())
            {
                return Err(invalid(format!(
                    "accounts {:?}: psp = \"stripe\" needs stripe_base_url and stripe_secret_key",
                    a.id
                )));
            }
            if a.max_attempts == 0
                || a.payment_attempts == 0
                || a.link_attempts == 0
                || a.session_ttl_s == 0
                || a.link_ttl_s == 0
            {
                return Err(invalid(format!(
                    "accounts {:?}: max_attempts, payment_attempts, link_attempts and TTLs must be above 0",
                    a.id
                )));
            }
            if !a.wallets.is_empty() && a.psp_webhook_secret.as_deref().unwrap_or("").is_empty() {
                return Err(invalid(format!(
                    "accounts {:?}: wallets need psp_webhook_secret (the PSP's webhooks are how a wallet payment is known)",
                    a.id
                )));
            }
            if a.language
                .as_deref()
                .is_some_and(|l| crate::card::money::Locale::from_tag(l).is_none())
            {
                return Err(invalid(format!(
                    "accounts {:?}: language must be \"en\" or \"de\"",
                    a.id
                )));
            }
            // The logo's URL goes into the page and, whole, into its CSP: a plain https URL
            // or a path on this gateway, nothing that could end an attribute or a directive.
            if let Some(u) = &a.logo_url {
                let plain = u.len() <= 500
                    && !u.bytes().any(|b| {
                        b.is_ascii_whitespace()
                            || b.is_ascii_control()
                            || b"\"'<>;,\\`".contains(&b)
                    });
                let https = u
                    .strip_prefix("https://")
                    .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
                let local = u.starts_with('/') && !u.starts_with("//");
                if !plain || !(https || local) {
                    return Err(invalid(format!(
                        "accounts {:?}: logo_url must be an https:// URL or a path on this gateway",
                        a.id
                    )));
                }
            }
        }
        let mut ids = std::collections::HashSet::new();
        for c in &self.auth.clients {
            if !ids.insert(c.id.as_str()) {
                return Err(invalid(format!(
                    "auth.clients: client id {:?} appears twice",
                    c.id
                )));
            }
            match (&c.secret, &c.secret_hash) {
                (Some(_), None) => {}
                (None, Some(h)) => {
                    if argon2::password_hash::PasswordHash::new(h).is_err() {
                        return Err(invalid(format!(
                            "auth.clients {:?}: secret_hash is not an argon2 PHC string (make one with `tonegate hash-secret`)",
                            c.id
                        )));
                    }
                }
                _ => {
                    return Err(invalid(format!(
                        "auth.clients {:?}: set exactly one of secret (development) or secret_hash",
                        c.id
                    )))
                }
            }
            if c.scopes.is_empty() {
                return Err(invalid(format!("auth.clients {:?}: scopes is empty", c.id)));
            }
        }
        if let Some(k) = &self.auth.signing_key {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(k) {
                Ok(b) if b.len() >= 32 => {}
                _ => {
                    return Err(invalid(
                        "auth.signing_key must be base64 of at least 32 bytes".into(),
                    ))
                }
            }
        }
        if let Some(url) = &self.server.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "server.public_url must start with http:// or https://, got {url:?}"
                )));
            }
        }
        Ok(())
    }

    /// The first setting that is unsafe outside development, named, if any.
    pub fn production_refusal(&self) -> Option<String> {
        if let Some(c) = self.auth.clients.iter().find(|c| c.secret.is_some()) {
            return Some(format!(
                "auth.clients {:?} has a plain `secret`; use `secret_hash` (tonegate hash-secret)",
                c.id
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| a.psp == PspKind::Sandbox) {
            return Some(format!(
                "accounts {:?} uses the sandbox PSP, which approves test cards without charging",
                a.id
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| {
            a.stripe_base_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
        }) {
            return Some(format!(
                "accounts {:?} has a stripe_base_url that is not https://",
                a.id
            ));
        }
        if let Some(a) = self.accounts.iter().find(|a| {
            a.webhook_url
                .as_deref()
                .is_some_and(|u| !u.starts_with("https://"))
        }) {
            return Some(format!(
                "accounts {:?} has a webhook_url that is not https:// (results and their signatures would cross the network in clear)",
                a.id
            ));
        }
        if self.sms.provider != "outbox" && !self.sms.twilio_base_url.starts_with("https://") {
            return Some(
                "sms.twilio_base_url is not https:// (the auth token and payment links would cross the network in clear)"
                    .into(),
            );
        }
        match self.server.public_url.as_deref() {
            Some(u) if u.starts_with("https://") => {}
            _ => {
                return Some(
                    "server.public_url must be set to an https:// URL (payment links and the agent UI are built on it)"
                        .into(),
                )
            }
        }
        if !self.server.behind_tls_proxy && self.server.tls.is_none() {
            return Some(
                "tonegate would serve plain HTTP: set [server.tls] cert_file and key_file, or put it behind a TLS proxy and set server.behind_tls_proxy = true"
                    .into(),
            );
        }
        if self.server.adjustable_clock {
            return Some(
                "server.adjustable_clock lets the admin API move the clock (tests only)".into(),
            );
        }
        if self.auth.signing_key.is_none() {
            return Some("auth.signing_key is not set (tokens would not survive a restart)".into());
        }
        if self
            .sip
            .listen
            .is_some_and(|l| !l.ip().is_loopback() && self.sip.allow.is_none())
        {
            return Some(
                "sip.listen is not a loopback address: set sip.allow to the carriers, IVRs and proxies that may call"
                    .into(),
            );
        }
        if self
            .ng
            .listen
            .is_some_and(|l| !l.ip().is_loopback() && self.ng.allow.is_none())
        {
            return Some(
                "ng.listen is not a loopback address: set ng.allow to the SIP proxies that may send ng commands"
                    .into(),
            );
        }
        None
    }

    /// The base URL for links handed to clients, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("{}://{}", self.server.scheme(), self.server.listen),
        }
    }
}

/// Where a secret setting's value came from.
enum SecretSource {
    Inline,
    Env,
    File(PathBuf),
}

/// Replaces `env:NAME` with the environment variable NAME and `file:PATH` with the file's
/// content (one trailing newline dropped); any other value is the secret itself. Errors name
/// the setting and where it points, never a value.
fn resolve_secret(setting: &str, value: &mut String) -> Result<SecretSource, String> {
    let (resolved, source) = if let Some(name) = value.strip_prefix("env:") {
        let v = std::env::var(name)
            .map_err(|_| format!("{setting}: environment variable {name} is not set"))?;
        (v, SecretSource::Env)
    } else if let Some(p) = value.strip_prefix("file:") {
        let v =
            std::fs::read_to_string(p).map_err(|e| format!("{setting}: cannot read {p}: {e}"))?;
        let v = v.strip_suffix('\n').unwrap_or(&v);
        let v = v.strip_suffix('\r').unwrap_or(v).to_string();
        (v, SecretSource::File(PathBuf::from(p)))
    } else {
        return Ok(SecretSource::Inline);
    };
    if resolved.is_empty() {
        return Err(format!("{setting}: the secret it points to is empty"));
    }
    *value = resolved;
    Ok(source)
}
