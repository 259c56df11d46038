//! Error answers become pages when a browser navigated to the URL; API and
//! XHR callers keep the JSON. The handler's status and headers (a cookie
//! being cleared, say) are kept; the body and the page's own headers
//! replace the JSON's. Applied by the `respond` layer, innermost of its
//! steps, so the page sees the handler's own response.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;

use crate::error::ErrorInfo;
use crate::pages::{Pages, is_navigation};

/// For a browser navigation, the request ID its error page would show
/// (`Some`, holding `None` when the request has none); `None` for
/// everything else (the API calls that make up most traffic), which never
/// gets a page and so costs no copy of its request ID.
pub fn page_request(req: &Request) -> Option<Option<String>> {
    if !is_navigation(req.headers()) {
        return None;
    }
    Some(
        req.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    )
}

/// A navigation's answer: an error answer becomes its page (status and
/// headers kept, body and the page's own headers replacing the JSON's);
/// anything else passes as it is.
pub fn render(pages: &Pages, resp: Response, request_id: Option<&str>) -> Response {
    let Some(info) = resp.extensions().get::<ErrorInfo>().cloned() else {
        return resp;
    };
    let (parts, _) = resp.into_parts();
    let page = pages.error_page(&info, request_id);
    let (page_parts, body) = page.into_parts();
    let mut out = Response::from_parts(parts, Body::empty());
    for (name, value) in page_parts.headers.iter() {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out.headers_mut().remove(header::WWW_AUTHENTICATE);
    out.extensions_mut().extend(page_parts.extensions);
    let (parts, _) = out.into_parts();
    Response::from_parts(parts, body)
}
