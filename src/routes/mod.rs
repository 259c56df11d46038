//! HTTP handlers for the gateway's own endpoints (`/auth/*`, health,
//! metrics, the separate admin API) and the static app (the router's
//! fallback). Configured routes are served by the proxy's handlers.
//! Handlers stay short: sessions come from the extractors (`extract`), the
//! work from the flows (`flows`).

pub mod admin;
pub mod auth;
pub mod backchannel;
pub mod forward_auth;
pub mod frontchannel;
pub mod health;
pub mod jwks;
pub mod logout;
pub mod sessions;
pub mod static_files;
pub mod user;

/// Whether the request says its body is a URL-encoded form: exactly one
/// `Content-Type`, whose media type (parameters aside) is
/// `application/x-www-form-urlencoded` in any case (RFC 9110 §8.3.1: type
/// and subtype are case-insensitive); `…urlencodedXYZ` is not one.
pub(crate) fn is_form_urlencoded(headers: &axum::http::HeaderMap) -> bool {
    let mut types = headers.get_all(axum::http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        return false;
    };
    value.to_str().is_ok_and(|ct| {
        ct.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::is_form_urlencoded;

    fn with(types: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for t in types {
            h.append(header::CONTENT_TYPE, HeaderValue::from_static(t));
        }
        h
    }

    #[test]
    fn a_form_is_told_by_its_media_type_in_any_case_and_exactly() {
        for yes in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-Urlencoded",
            "application/x-www-form-urlencoded; charset=UTF-8",
            " application/x-www-form-urlencoded ;charset=utf-8",
        ] {
            assert!(is_form_urlencoded(&with(&[yes])), "{yes}");
        }
        for no in [
            "application/x-www-form-urlencodedXYZ",
            "application/x-www-form-urlencoded-evil",
            "application/json",
            "multipart/form-data",
            "",
        ] {
            assert!(!is_form_urlencoded(&with(&[no])), "{no}");
        }
        assert!(!is_form_urlencoded(&with(&[])), "no Content-Type");
        assert!(
            !is_form_urlencoded(&with(&[
                "application/x-www-form-urlencoded",
                "application/json"
            ])),
            "two Content-Types"
        );
    }
}
