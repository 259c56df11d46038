//! The single-page app served from `[static] dir`: files with their content
//! types, `index.html` for client-side routes, cache headers, and the
//! gateway's own paths never shadowed by it.

use reqwest::{Method, StatusCode};

use crate::harness::{Browser, GatewayBuilder, Upstream};

fn app_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("oidc-bff-spa-{:x}", rand::random::<u64>()));
    std::fs::create_dir_all(dir.join("assets")).expect("dir");
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>app</title><div id=app></div>",
    )
    .expect("index");
    std::fs::write(dir.join("assets/app-3f9a2c1b.js"), "console.log('hashed')").expect("js");
    std::fs::write(
        dir.join("favicon.svg"),
        "<svg xmlns='http://www.w3.org/2000/svg'/>",
    )
    .expect("svg");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_served_with_types_fallback_and_cache_headers() {
    let upstream = Upstream::start().await;
    let dir = app_dir();
    let gw = GatewayBuilder::new(&upstream)
        .configure(|c| c.static_files.dir = Some(dir.clone()))
        .start()
        .await;
    let mut b = Browser::new(&gw);

    let index = b.get("/").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(
        index.headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert_eq!(
        index.headers["cache-control"], "no-cache",
        "index.html must be revalidated"
    );
    assert!(index.body.contains("id=app"));

    // Client-side routes get index.html.
    let route = b.get("/orders/42").await;
    assert_eq!(route.status, StatusCode::OK);
    assert!(route.body.contains("id=app"));

    // Hashed assets are immutable; plain ones revalidated.
    let js = b.get("/assets/app-3f9a2c1b.js").await;
    assert_eq!(js.status, StatusCode::OK);
    assert!(
        js.headers["content-type"]
            .to_str()
            .expect("ct")
            .contains("javascript")
    );
    assert_eq!(
        js.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(js.headers["x-content-type-options"], "nosniff");
    let svg = b.get("/favicon.svg").await;
    assert_eq!(svg.headers["content-type"], "image/svg+xml");
    assert_eq!(svg.headers["cache-control"], "no-cache");

    // A missing file with an extension is a 404, not the app.
    let missing = b.get("/assets/missing.js").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Traversal stays inside the directory.
    for p in [
        "/../Cargo.toml",
        "/..%2FCargo.toml",
        "/assets/..%2F..%2FCargo.toml",
    ] {
        assert_eq!(b.get(p).await.status, StatusCode::NOT_FOUND, "{p}");
    }
    // Only GET and HEAD.
    assert_eq!(
        b.request(Method::POST, "/", &[], None).await.status,
        StatusCode::NOT_FOUND
    );
    // The gateway's paths win over the app.
    assert_eq!(b.get("/auth/user").await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.get("/api/x").await.status, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_dir_all(&dir);
}
