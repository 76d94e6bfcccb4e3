//! Bearer tokens for `/signaling` and `/api/*`: `Authorization: Bearer T` or `?token=T`.

use axum::http::HeaderMap;

/// True when no tokens are configured, or the request carries one of them.
pub fn authorized(tokens: &[String], headers: &HeaderMap, query: Option<&str>) -> bool {
    if tokens.is_empty() {
        return true;
    }
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let from_query = query.and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let offered = [from_header.map(str::to_string), from_query];
    offered.iter().flatten().any(|t| {
        tokens
            .iter()
            .any(|known| constant_time_eq(known.as_bytes(), t.as_bytes()))
    })
}

/// Compares without an early exit, so response time does not leak how much of a token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(axum::http::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn no_tokens_means_open() {
        assert!(authorized(&[], &headers(None), None));
    }

    #[test]
    fn header_or_query_token() {
        let tokens = vec!["s3cret".to_string()];
        assert!(authorized(&tokens, &headers(Some("Bearer s3cret")), None));
        assert!(authorized(
            &tokens,
            &headers(None),
            Some("a=1&token=s3cret")
        ));
        assert!(!authorized(&tokens, &headers(None), None), "missing");
        assert!(
            !authorized(&tokens, &headers(Some("Bearer nope")), None),
            "wrong"
        );
        assert!(
            !authorized(&tokens, &headers(None), Some("token=s3cre")),
            "prefix"
        );
        assert!(
            !authorized(&tokens, &headers(Some("s3cret")), None),
            "no Bearer"
        );
    }
}
