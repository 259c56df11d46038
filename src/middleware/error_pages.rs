//! Error answers become pages when a browser navigated to the URL; API and
//! XHR callers keep the JSON. The handler's status and headers (a cookie
//! being cleared, say) are kept; the body and the page's own headers
//! replace the JSON's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ErrorInfo;
use crate::pages::{Pages, is_navigation};

pub async fn render_errors(State(pages): State<Arc<Pages>>, req: Request, next: Next) -> Response {
    // Only a navigation can get a page: everything else (the API calls
    // that make up most traffic) passes without a copy of its request ID.
    if !is_navigation(req.headers()) {
        return next.run(req).await;
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let resp = next.run(req).await;
    let Some(info) = resp.extensions().get::<ErrorInfo>().cloned() else {
        return resp;
    };
    let (parts, _) = resp.into_parts();
    let page = pages.error_page(&info, request_id.as_deref());
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
