//! The single-page app under `[static] dir`: caching by file kind, the
//! client-route fallback, and 404 for missing files.

use axum::http::{StatusCode, header};

use crate::support::{NAVIGATION, TempDir, TestRouter};

const INDEX: &str = "<!doctype html><title>SPA</title><script src=\"/app.3f9a2c1b.js\"></script>";
const ASSET: &str = "console.log('app');";

async fn spa(extra: &str) -> TestRouter {
    let dir = TempDir::new();
    dir.write("www/index.html", INDEX);
    dir.write("www/app.3f9a2c1b.js", ASSET);
    dir.write("www/robots.txt", "User-agent: *");
    TestRouter::with_dir(dir, &format!("[static]\ndir = \"{{dir}}/www\"\n{extra}")).await
}

#[tokio::test]
async fn the_root_serves_index_html_with_no_cache() {
    let app = spa("").await;
    let r = app.get("/", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), INDEX);
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html");
    assert_eq!(r.header(header::CACHE_CONTROL), "no-cache", "{r}");
    assert_eq!(r.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{r}");
    assert_eq!(r.header(header::REFERRER_POLICY), "same-origin", "{r}");
    assert_eq!(r.header(header::X_FRAME_OPTIONS), "DENY", "{r}");
}

#[tokio::test]
async fn index_html_by_name_is_no_cache() {
    let app = spa("").await;
    let r = app.get("/index.html", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), INDEX);
    assert_eq!(r.header(header::CACHE_CONTROL), "no-cache", "{r}");
}

#[tokio::test]
async fn a_hashed_asset_is_cached_for_a_year() {
    let app = spa("").await;
    let r = app.get("/app.3f9a2c1b.js", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), ASSET);
    assert_eq!(r.header(header::CONTENT_TYPE), "text/javascript");
    assert_eq!(
        r.header(header::CACHE_CONTROL),
        "public, max-age=31536000, immutable",
        "{r}"
    );
}

#[tokio::test]
async fn an_unhashed_file_is_no_cache() {
    let app = spa("").await;
    let r = app.get("/robots.txt", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.header(header::CACHE_CONTROL), "no-cache", "{r}");
}

#[tokio::test]
async fn extensionless_client_routes_fall_back_to_index_html() {
    let app = spa("").await;
    for path in ["/settings", "/settings/profile", "/users/42/edit"] {
        let r = app.get(path, NAVIGATION).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r}");
        assert_eq!(r.text(), INDEX, "{path}");
        assert_eq!(r.header(header::CACHE_CONTROL), "no-cache", "{path}: {r}");
    }
}

#[tokio::test]
async fn unknown_auth_paths_are_404_not_the_spa() {
    let app = spa("").await;
    for path in ["/auth/logni", "/auth/user/extra", "//auth/nothing", "/auth"] {
        let r = app.get(path, &[]).await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
        let r = app.get(path, NAVIGATION).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r}");
        assert_ne!(r.text(), INDEX, "{path}");
    }
}

#[tokio::test]
async fn a_missing_file_with_an_extension_is_404() {
    let app = spa("").await;
    let r = app.get("/missing.3f9a2c1b.js", &[]).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
    // Also when the `.` is percent-encoded: it names the same file.
    let r = app.get("/missing%2ejs", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    assert_ne!(r.text(), INDEX);
}

#[tokio::test]
async fn a_missing_file_is_a_404_page_for_navigations() {
    let app = spa("").await;
    let r = app.get("/missing.html", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r}");
    assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    crate::errors::assert_page_security_headers(&r);
}

#[tokio::test]
async fn without_spa_fallback_client_routes_are_404() {
    let app = spa("spa_fallback = false\n").await;
    let r = app.get("/settings", &[]).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
}

#[tokio::test]
async fn the_static_app_answers_only_reads() {
    let app = spa("").await;
    let r = app
        .send(crate::support::request(
            axum::http::Method::POST,
            "/settings",
            &[("x-csrf", "1")],
            axum::body::Body::empty(),
        ))
        .await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
}

#[tokio::test]
async fn proxied_routes_take_precedence_over_the_static_app() {
    let app = spa("").await;
    let r = app.get("/api/items", &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{r}");
}

/// Whether a `Location` value keeps the browser on the gateway's origin:
/// a path with exactly one leading `/`, or an absolute URL on the public
/// origin.
fn stays_on_the_public_origin(location: &str) -> bool {
    let local_path =
        location.starts_with('/') && !location.starts_with("//") && !location.starts_with("/\\");
    local_path || location.starts_with(&format!("{}/", crate::support::PUBLIC_URL))
}

async fn spa_with_a_directory() -> TestRouter {
    let dir = TempDir::new();
    dir.write("www/index.html", INDEX);
    dir.write("www/assets/app.3f9a2c1b.js", ASSET);
    dir.write("www/evil.com/index.html", INDEX);
    TestRouter::with_dir(dir, "[static]\ndir = \"{dir}/www\"\n").await
}

#[tokio::test]
async fn a_directory_redirect_never_leads_to_another_host() {
    let app = spa_with_a_directory().await;
    let paths = [
        "/assets",
        "//assets",
        "///assets",
        "//assets?x=1",
        "//evil.com",
        "//evil.com/",
        "///evil.com",
        "/%2fevil.com",
        "/%2F%2Fevil.com",
        "/%5cevil.com",
        "/\\evil.com",
        "/\\/evil.com",
        "//\\evil.com",
        "/./assets",
        "/.//evil.com",
        "//assets//",
        "http://evil.example/assets",
        "https://evil.example//evil.com",
        "http://evil.example//assets?x=1",
    ];
    for path in paths {
        for headers in [&[][..], NAVIGATION] {
            let r = app.get(path, headers).await;
            for location in r.all(header::LOCATION) {
                assert!(
                    stays_on_the_public_origin(location),
                    "{path} redirects to {location}:\n{r}"
                );
            }
        }
    }
}

#[tokio::test]
async fn repeated_slashes_are_read_as_one_and_redirect_to_a_local_path() {
    let app = spa_with_a_directory().await;
    let r = app.get("//assets", &[]).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT, "{r}");
    assert_eq!(r.header(header::LOCATION), "/assets/", "{r}");
    let r = app.get("//assets?x=1", &[]).await;
    assert_eq!(r.header(header::LOCATION), "/assets/?x=1", "{r}");
    let r = app.get("//assets//app.3f9a2c1b.js", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), ASSET);
}

#[tokio::test]
async fn a_directory_redirect_ignores_the_authority_the_client_sent() {
    let app = spa_with_a_directory().await;
    // Host and target agree (else the request is a 400 before this).
    let r = app
        .get("http://evil.example/assets", &[("host", "evil.example")])
        .await;
    assert_eq!(r.header(header::LOCATION), "/assets/", "{r}");
    // They disagree: refused, nothing redirected anywhere.
    let r = app.get("http://evil.example/assets", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The Host header must name the same host as the request target's authority.",
    );
}

#[tokio::test]
async fn a_backslash_path_is_refused_by_the_static_app() {
    let app = spa_with_a_directory().await;
    let r = app.get("/\\evil.com", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "Paths with backslashes are not served.",
    );
    // The asterisk form is no path (`OPTIONS *` is answered before this).
    let r = app.get("*", &[]).await;
    r.assert_error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "The request target must be a path starting with /.",
    );
}

/// A static app whose directory also holds what a deployment leaves
/// behind (`.env`, `.git/`), a published `/.well-known/` file, and
/// symlinks: two leading out of the directory, one staying inside it.
async fn spa_with_leftovers() -> (TestRouter, String) {
    let dir = TempDir::new();
    dir.write("www/index.html", INDEX);
    dir.write("www/app.3f9a2c1b.js", ASSET);
    dir.write("www/.env", "DATABASE_PASSWORD=hunter2");
    dir.write("www/.git/config", "[remote \"origin\"]");
    dir.write("www/sub/.htpasswd", "admin:$apr1$x");
    dir.write(
        "www/.well-known/security.txt",
        "Contact: security@example.test",
    );
    let secret = dir.write("outside/secret.txt", "outside the app");
    dir.write("outside/index.html", "outside index");
    let www = dir.path().join("www");
    std::os::unix::fs::symlink(&secret, www.join("leak.txt")).expect("symlink");
    std::os::unix::fs::symlink(dir.path().join("outside"), www.join("leakdir")).expect("symlink");
    std::os::unix::fs::symlink(www.join("app.3f9a2c1b.js"), www.join("alias.js")).expect("symlink");
    (
        TestRouter::with_dir(dir, "[static]\ndir = \"{dir}/www\"\n").await,
        "outside the app".to_owned(),
    )
}

#[tokio::test]
async fn hidden_files_and_directories_are_404_in_every_spelling() {
    let (app, _) = spa_with_leftovers().await;
    for path in [
        "/.env",
        "/%2eenv",
        "/%2Eenv",
        "/.git/config",
        "/.git/",
        "/.git",
        "/%2egit/config",
        "/.git%2fconfig",
        "/sub/.htpasswd",
        "/sub%2f.htpasswd",
        "/sub/%2ehtpasswd",
        "//.env",
        "/./index.html",
        "/%2e/index.html",
    ] {
        for headers in [&[][..], NAVIGATION] {
            let r = app.get(path, headers).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r}");
            assert!(!r.text().contains("hunter2"), "{path}: {r}");
            assert!(!r.text().contains("origin"), "{path}: {r}");
            assert!(!r.text().contains("apr1"), "{path}: {r}");
            assert_ne!(r.text(), INDEX, "{path}: {r}");
        }
        let r = app.get(path, &[]).await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
    }
    // RFC 8615's directory is published on purpose.
    let r = app.get("/.well-known/security.txt", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), "Contact: security@example.test");
}

#[tokio::test]
async fn a_symlink_leading_outside_the_directory_is_404_and_one_inside_it_is_served() {
    let (app, outside) = spa_with_leftovers().await;
    for path in [
        "/leak.txt",
        "/leakdir/secret.txt",
        "/leakdir/",
        "/leakdir",
        "/leakdir/index.html",
        "/leakdir%2fsecret.txt",
    ] {
        for headers in [&[][..], NAVIGATION] {
            let r = app.get(path, headers).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r}");
            assert!(!r.text().contains(&outside), "{path}: {r}");
            assert!(!r.text().contains("outside index"), "{path}: {r}");
        }
    }
    let r = app.get("/alias.js", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), ASSET);
}

#[tokio::test]
async fn names_longer_than_a_file_system_keeps_are_404_not_an_empty_500() {
    let app = spa("").await;
    let long_name = format!("/{}.js", "a".repeat(300));
    let deep = format!("/{}x.js", "abcdefgh/".repeat(600));
    let long_route = format!("/{}", "a".repeat(300));
    for path in [&long_name, &deep, &long_route] {
        let r = app.get(path, &[]).await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
        let r = app.get(path, NAVIGATION).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}: {r}", path.len());
        assert_eq!(r.header(header::CONTENT_TYPE), "text/html; charset=utf-8");
    }
}

#[tokio::test]
async fn client_routes_fall_back_to_index_html_only_for_requests_that_may_be_navigations() {
    let app = spa("").await;
    for headers in [
        &[("sec-fetch-mode", "cors"), ("accept", "*/*")][..],
        &[("sec-fetch-mode", "same-origin")],
        &[("sec-fetch-mode", "no-cors")],
        &[("x-requested-with", "XMLHttpRequest")],
        &[("accept", "application/json")],
        &[("accept", "application/json, text/plain;q=0.9")],
    ] {
        let r = app.get("/orders/42", headers).await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
    }
    for headers in [
        NAVIGATION,
        &[("sec-fetch-mode", "navigate"), ("accept", "*/*")][..],
        &[("accept", "text/html,application/xhtml+xml;q=0.9")],
        &[("accept", "*/*")],
        &[],
    ] {
        let r = app.get("/orders/42", headers).await;
        assert_eq!(r.status, StatusCode::OK, "{headers:?}: {r}");
        assert_eq!(r.text(), INDEX, "{headers:?}");
    }
    // Files are files whoever asks.
    let r = app
        .get("/app.3f9a2c1b.js", &[("sec-fetch-mode", "cors")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
}

#[tokio::test]
async fn the_health_endpoints_namespaces_are_404_not_the_app() {
    let app = spa("").await;
    for path in [
        "/healthz/",
        "/readyz/",
        "/readyz/x",
        "/healthz/deep/er",
        "/%72eadyz/",
        "/readyz%2fx",
        "/%61uth/x",
    ] {
        for headers in [&[][..], NAVIGATION] {
            let r = app.get(path, headers).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {r}");
            assert_ne!(r.text(), INDEX, "{path}");
        }
    }
    // A client route that only starts with the same letters is the app's.
    let r = app.get("/readyzone", NAVIGATION).await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), INDEX);
}

#[tokio::test]
async fn the_apps_html_carries_its_content_security_policy() {
    let baseline = "base-uri 'self'; object-src 'none'; frame-ancestors 'none'";
    let app = spa("").await;
    for path in ["/", "/index.html", "/settings/profile"] {
        let r = app.get(path, NAVIGATION).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {r}");
        assert_eq!(
            r.header(header::CONTENT_SECURITY_POLICY),
            baseline,
            "{path}: {r}"
        );
    }
    let r = app.get("/app.3f9a2c1b.js", &[]).await;
    assert!(
        r.headers.get(header::CONTENT_SECURITY_POLICY).is_none(),
        "{r}"
    );

    let own = "default-src 'self'; frame-ancestors 'none'";
    let app = spa(&format!("content_security_policy = \"{own}\"\n")).await;
    let r = app.get("/", NAVIGATION).await;
    assert_eq!(r.header(header::CONTENT_SECURITY_POLICY), own, "{r}");

    let app = spa("content_security_policy = \"\"\n").await;
    let r = app.get("/", NAVIGATION).await;
    assert!(
        r.headers.get(header::CONTENT_SECURITY_POLICY).is_none(),
        "{r}"
    );
}

/// A FIFO (or socket, or device) in the directory is no file of the app:
/// opening one blocks a thread until a writer comes, so each request for
/// it would hold one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_regular_files_are_served_and_a_fifo_answers_at_once() {
    let dir = TempDir::new();
    dir.write("www/index.html", INDEX);
    dir.write("www/sub/keep.txt", "x");
    let fifo = dir.path().join("www/pipe.txt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo");
    let sub_fifo = dir.path().join("www/sub/index.html");
    let made = std::process::Command::new("mkfifo")
        .arg(&sub_fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo");
    // Should a request open a FIFO after all, a writer lets it go when the
    // test ends (the runtime waits for its blocked thread): a failure, not
    // a hang.
    struct Release(Vec<std::path::PathBuf>);
    impl Drop for Release {
        fn drop(&mut self) {
            for fifo in self.0.drain(..) {
                std::thread::spawn(move || std::fs::OpenOptions::new().write(true).open(fifo));
            }
        }
    }
    let _release = Release(vec![fifo, sub_fifo]);
    let app =
        std::sync::Arc::new(TestRouter::with_dir(dir, "[static]\ndir = \"{dir}/www\"\n").await);
    for path in ["/pipe.txt", "/sub/"] {
        // On a task of its own: a request that blocks its thread must not
        // stop this one's timer.
        let asking = tokio::spawn({
            let app = app.clone();
            async move { app.get(path, &[]).await }
        });
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), asking)
            .await
            .unwrap_or_else(|_| panic!("{path} still unanswered after 5 s"))
            .expect("the request task");
        r.assert_error(StatusCode::NOT_FOUND, "not_found", "There is nothing here.");
    }
}

/// RFC 9110 §14.2: a `Range` of an unknown unit or an invalid range is
/// ignored, and a server may ignore any `Range`; the whole file is the
/// answer then, never a 416 for a request that asked nothing impossible.
#[tokio::test]
async fn ranges_serve_dir_cannot_honour_are_ignored_and_the_whole_file_sent() {
    let app = spa("").await;
    let r = app.get("/app.3f9a2c1b.js", &[("range", "bytes=0-6")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{r}");
    assert_eq!(r.text(), "console");
    let r = app
        .get("/app.3f9a2c1b.js", &[("range", "bytes=1000-")])
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{r}");
    for range in [
        "items=0-5",
        "bytes=5-1",
        "bytes=0-1,3-4",
        "bytes=0-1,0-1,0-1,0-1",
        "bytes=a-",
    ] {
        let r = app.get("/app.3f9a2c1b.js", &[("range", range)]).await;
        assert_eq!(r.status, StatusCode::OK, "{range}: {r}");
        assert_eq!(r.text(), ASSET, "{range}");
    }
    let r = app
        .get(
            "/app.3f9a2c1b.js",
            &[("range", "bytes=0-6"), ("if-range", "\"some-etag\"")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r}");
    assert_eq!(r.text(), ASSET);
}
