//! What a page costs to fetch: pages gzipped for a browser that asks, and
//! the two assets under names that change with their content, kept by the
//! browser for good.

use crate::common;

use common::TestServer;
use sha2::{Digest, Sha256};
use std::io::Read;

/// The path of the page's asset ending in `extension`, as the page links it.
pub fn linked_asset(page: &str, extension: &str) -> String {
    let end = page
        .find(&format!(".{extension}\""))
        .unwrap_or_else(|| panic!("no .{extension} link in {page}"));
    let start = page[..end].rfind("\"/ui/").expect("asset link") + 1;
    format!("{}.{extension}", &page[start..end])
}

#[tokio::test]
async fn pages_are_gzipped_when_asked_and_assets_cached_by_content() {
    let server = TestServer::start().await;
    let url = &server.url;
    let (status, _) = server
        .post(
            "/api/work-pools",
            serde_json::json!({"name": "p", "type": "process"}),
        )
        .await;
    assert_eq!(status, 201);
    let web = common::web_client();

    let plain = web.get(format!("{url}/")).send().await.expect("get");
    assert_eq!(plain.status(), 200);
    assert!(
        plain.headers().get("content-encoding").is_none(),
        "not asked"
    );
    let plain = plain.text().await.expect("page");

    let zipped = web
        .get(format!("{url}/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(zipped.status(), 200);
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let bytes = zipped.bytes().await.expect("body");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut unzipped)
        .expect("a gzip body");
    assert!(unzipped.contains("</html>"), "the whole page: {unzipped}");
    assert!(
        bytes.len() * 2 < unzipped.len(),
        "{} bytes for a {}-byte page",
        bytes.len(),
        unzipped.len()
    );

    for (extension, source) in [
        (
            "css",
            include_str!("../../../host/src/server/ui/assets/app.css"),
        ),
        (
            "js",
            include_str!("../../../host/src/server/ui/assets/app.js"),
        ),
    ] {
        let path = linked_asset(&plain, extension);
        let hash: String = Sha256::digest(source.as_bytes())[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            path,
            format!("/ui/app.{hash}.{extension}"),
            "named by content"
        );
        let asset = web.get(format!("{url}{path}")).send().await.expect("get");
        assert_eq!(asset.status(), 200, "{path}");
        let cache = asset.headers()["cache-control"].to_str().expect("text");
        assert!(
            cache.contains("immutable") && cache.contains("max-age=31536000"),
            "{cache}"
        );
        assert_eq!(asset.text().await.expect("asset"), source);
        // Another content's name is no asset: a stale page's link fails
        // loudly rather than getting today's file under yesterday's name.
        let stale = web
            .get(format!("{url}/ui/app.000000000000.{extension}"))
            .send()
            .await
            .expect("get");
        assert_eq!(stale.status(), 404);
    }
}
