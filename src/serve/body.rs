//! Request bodies: the size limit's rejection and JSON that fails to parse, as
//! OpenAI-style errors that name the field at fault.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The body of a request as `T`: 413 past `--max-body`, 400 for malformed JSON or a
/// field of the wrong type or name (the field's path is the error's `param`).
pub fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server's --max-body".to_string()
        } else {
            rejection.body_text()
        };
        ApiError::new(status, message)
    })?;
    let mut json = serde_json::Deserializer::from_slice(&bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("invalid request body: {inner}"),
            )
        } else {
            ApiError::field(path.clone(), format!("{path}: {inner}"))
        }
    })?;
    json.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Body {
        turns: Vec<Turn>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Turn {
        role: String,
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let ok = parse::<Body>(Ok(Bytes::from_static(br#"{"turns":[{"role":"a"}]}"#))).unwrap();
        assert_eq!(ok.turns[0].role, "a");
        let e = parse::<Body>(Ok(Bytes::from_static(
            br#"{"turns":[{"role":"a"},{"role":1}]}"#,
        )))
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("turns[1].role"));
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse::<Body>(Ok(Bytes::from_static(b"{\"turns\": ["))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("EOF"), "{}", e.message);
    }
}
