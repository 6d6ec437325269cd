//! `POST /v1/login`: a name and a password (JSON `{"name","password"}`, or a form) for a
//! token with the user's scopes: `{"token","sub","scope","expires"}`.

use super::respond::{refuse, respond_with};
use super::Stream;
use crate::login::LoginError;
use crate::service::Service;
use http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use std::net::IpAddr;
use std::time::Duration;

/// The largest sign-in body read.
const MAX_BODY: usize = 4096;
/// How long the body may take to arrive.
const BODY_TIME: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

/// Signs a user in from `peer`.
pub(super) async fn login(
    stream: &mut Stream,
    service: &Service,
    content_type: Option<&str>,
    peer: IpAddr,
) {
    let body = match tokio::time::timeout(BODY_TIME, stream.read_body(MAX_BODY)).await {
        Ok(Ok(body)) => body,
        Ok(Err(why)) => return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", &why).await,
        Err(_) => {
            let message = "the sign-in body did not arrive within 10 s";
            return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", message).await;
        }
    };
    let Some(credentials) = credentials(&body, content_type) else {
        let message = "send {\"name\": \"...\", \"password\": \"...\"} as JSON, or \
                       name=...&password=... as a form";
        return refuse(stream, StatusCode::BAD_REQUEST, "bad_params", message).await;
    };
    let signed = service
        .login
        .sign_in(
            &service.store,
            &service.revoked,
            &credentials.name,
            &credentials.password,
            peer,
        )
        .await;
    let issued = match signed {
        Ok(issued) => issued,
        Err(e) => return refuse_login(stream, service, e).await,
    };
    tracing::info!(sub = %issued.claims.sub, "signed in");
    let expires = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(issued.claims.exp),
    )
    .to_string();
    let body = json!({
        "token": issued.token,
        "sub": issued.claims.sub,
        "scope": issued.claims.scope,
        "expires": expires,
    });
    respond_with(
        stream,
        StatusCode::OK,
        &body,
        Some(("cache-control", "no-store".into())),
    )
    .await
}

/// The name and password of a JSON or form body.
fn credentials(body: &[u8], content_type: Option<&str>) -> Option<Credentials> {
    let form = content_type.is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return serde_json::from_slice(body).ok();
    }
    let (mut name, mut password) = (None, None);
    for (key, value) in form_urlencoded::parse(body) {
        match key.as_ref() {
            "name" => name = Some(value.into_owned()),
            "password" => password = Some(value.into_owned()),
            _ => {}
        }
    }
    Some(Credentials {
        name: name?,
        password: password?,
    })
}

async fn refuse_login(stream: &mut Stream, service: &Service, error: LoginError) {
    let message = error.to_string();
    match error {
        LoginError::Wrong => {
            service
                .metrics
                .rejected(edge_proto::ErrorCode::Unauthorized);
            refuse(stream, StatusCode::UNAUTHORIZED, "unauthorized", &message).await
        }
        LoginError::Locked { retry_after } => {
            service.metrics.rejected(edge_proto::ErrorCode::RateLimited);
            let body = json!({"error": {
                "code": "rate_limited", "message": message, "retry_after": retry_after,
            }});
            let header = Some(("retry-after", retry_after.to_string()));
            respond_with(stream, StatusCode::TOO_MANY_REQUESTS, &body, header).await
        }
        LoginError::Off => refuse(stream, StatusCode::NOT_FOUND, "not_found", &message).await,
        LoginError::Unavailable(_) => {
            tracing::warn!("sign-in failed: {message}");
            refuse(
                stream,
                StatusCode::SERVICE_UNAVAILABLE,
                "internal",
                &message,
            )
            .await
        }
        LoginError::Store(_) => {
            tracing::warn!("sign-in failed: {message}");
            refuse(
                stream,
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                &message,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_as_json_or_as_a_form() {
        let json = credentials(
            br#"{"name":"ana","password":"p w"}"#,
            Some("application/json"),
        );
        assert_eq!(
            json.map(|c| (c.name, c.password)),
            Some(("ana".into(), "p w".into()))
        );
        let form = credentials(
            b"name=ana&password=p+w%21",
            Some("application/x-www-form-urlencoded"),
        );
        assert_eq!(
            form.map(|c| (c.name, c.password)),
            Some(("ana".into(), "p w!".into()))
        );
        assert!(credentials(b"name=ana", Some("application/x-www-form-urlencoded")).is_none());
        assert!(credentials(b"{}", None).is_none());
    }
}
