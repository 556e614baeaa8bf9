//! [`Op`], one operation with the answers its extractors imply, and [`Doc`], the paths built
//! from them.

use super::*;

/// An operation being described. Its answers are those given with [`Op::answer`], and those
/// of the extractors it says it uses, unless given: [`Op::authed`] adds `Authed`'s 401 and 403,
/// [`Op::api_json`] `ApiJson`'s 400, 413 and 415, and every operation can answer 408 (the
/// timeout layer, for a request that outlives `server.request_timeout_s`).
pub(super) struct Op {
    op: OperationBuilder,
    responses: BTreeMap<String, RefOr<Response>>,
    authed: bool,
    api_json: bool,
    pub(super) schemas: Schemas,
}

impl Op {
    pub(super) fn new(summary: &str) -> Op {
        Op {
            op: OperationBuilder::new().summary(Some(summary)),
            responses: BTreeMap::new(),
            authed: false,
            api_json: false,
            schemas: Schemas::new(),
        }
    }

    /// `Authed` with `require(scope)` (or the relay's `access`): 401 without a valid token,
    /// 403 without the scope.
    pub(super) fn authed(mut self, scope: &str) -> Op {
        self.op = self
            .op
            .security(SecurityRequirement::new("oauth2", [scope]));
        self.authed = true;
        self
    }

    /// A token the handler checks itself (the agent payment UI's): security scheme `scheme`.
    pub(super) fn ui_token(mut self, scheme: &str) -> Op {
        self.op = self
            .op
            .security(SecurityRequirement::new::<_, [&str; 0], &str>(scheme, []));
        self
    }

    /// The body, read by `ApiJson<T>`: JSON errors for a malformed or mistyped body (400), an
    /// oversized one (413) or a wrong content type (415).
    pub(super) fn api_json<T: ToSchema>(mut self) -> Op {
        let schema = inline::<T>(&mut self.schemas);
        self.api_json_as(schema)
    }

    /// A body read by `ApiJson`, whose schema says more than its type's.
    pub(super) fn api_json_as(mut self, schema: RefOr<Schema>) -> Op {
        self.api_json = true;
        self.body("application/json", schema)
    }

    /// A body of `T` as `content_type`, read another way (axum's `Json` or `Form`: errors in
    /// plain text).
    pub(super) fn body_of<T: ToSchema>(mut self, content_type: &str) -> Op {
        let schema = inline::<T>(&mut self.schemas);
        self.body(content_type, schema)
    }

    /// A required body of `schema` as `content_type`.
    pub(super) fn body(mut self, content_type: &str, schema: RefOr<Schema>) -> Op {
        self.op = self.op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    content_type,
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build(),
        ));
        self
    }

    /// A path parameter (`Path<String>`). Its value must be UTF-8 once percent-decoded, or
    /// the router answers 400 in plain text (`BadPath`).
    pub(super) fn path_param(mut self, name: &str) -> Op {
        self.op = self.op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(string())),
        );
        self
    }

    /// The optional `Idempotency-Key` header of a create (`idempotency.rs`).
    pub(super) fn idempotency_key(mut self) -> Op {
        self.op = self.op.parameter(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Retry-safe creates: the same key with the same body answers the first \
                     answer again (24 h); another body is 422",
                ))
                .schema(Some(
                    string()
                        .min_length(Some(1))
                        .max_length(Some(255))
                        .pattern(Some("^[!-~]+$")),
                )),
        );
        self
    }

    /// The `Last-Event-ID` header a reconnecting `EventSource` sends (an event stream's resume
    /// point).
    pub(super) fn last_event_id(mut self) -> Op {
        self.op = self.op.parameter(
            ParameterBuilder::new()
                .name("Last-Event-ID")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Resume after this event (its `id:`): the stream sends the events after it, \
                     none twice",
                ))
                .schema(Some(
                    string().max_length(Some(20)).pattern(Some("^[0-9]+$")),
                )),
        );
        self
    }

    /// The query string, read by `Query<T>`.
    pub(super) fn query<T: IntoParams>(mut self) -> Op {
        let params: Vec<Parameter> = T::into_params(|| Some(ParameterIn::Query));
        self.op = self.op.parameters(Some(params));
        self
    }

    pub(super) fn answer(mut self, status: &str, response: impl Into<RefOr<Response>>) -> Op {
        self.responses.insert(status.into(), response.into());
        self
    }

    /// A shared answer (`components/responses`).
    pub(super) fn shared(self, status: &str, name: &str) -> Op {
        self.answer(status, shared(name))
    }

    /// A JSON answer: a reference to `T`'s schema.
    pub(super) fn json<T: ToSchema>(mut self, status: &str, description: &str) -> Op {
        let schema = named::<T>(&mut self.schemas);
        self.answer(status, answer(description, "application/json", schema))
    }

    /// A JSON answer: `T`'s schema inline.
    pub(super) fn json_inline<T: ToSchema>(mut self, status: &str, description: &str) -> Op {
        let schema = inline::<T>(&mut self.schemas);
        self.answer(status, answer(description, "application/json", schema))
    }

    pub(super) fn build(mut self) -> (Operation, Schemas) {
        let mut implied = vec![("408", "Timeout")];
        if self.api_json {
            implied.extend([
                ("400", "BadRequest"),
                ("413", "PayloadTooLarge"),
                ("415", "UnsupportedMediaType"),
            ]);
        }
        if self.authed {
            implied.extend([("401", "Unauthorized"), ("403", "Forbidden")]);
        }
        for (status, name) in implied {
            self.responses
                .entry(status.into())
                .or_insert_with(|| shared(name));
        }
        let responses = ResponsesBuilder::new()
            .responses_from_iter(self.responses)
            .build();
        (self.op.responses(responses).build(), self.schemas)
    }
}

/// The paths, and the schemas their operations name.
#[derive(Default)]
pub(super) struct Doc {
    pub(super) paths: Paths,
    pub(super) schemas: Schemas,
}

impl Doc {
    pub(super) fn add(&mut self, path: &str, method: HttpMethod, op: Op) {
        let (op, schemas) = op.build();
        self.schemas.extend(schemas);
        self.paths.add_path_operation(path, vec![method], op);
    }
}
