use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use ripcord::CircuitBreaker;
use tower::{service_fn, Layer, ServiceExt};

use super::{ShedBody, ShedLayer};
use crate::body::tests::{data, drain, Frames};

type MakeFrames = fn() -> Vec<Result<Frame<Bytes>, String>>;

/// Calls a shedding service whose handler answers `status` (and, for
/// gRPC, `grpc-status` in the head when given) with `frames`.
async fn call(
    layer: &ShedLayer,
    status: u16,
    grpc_status: Option<&'static str>,
    frames: MakeFrames,
) -> Response<ShedBody<Frames>> {
    let svc = layer.layer(service_fn(move |_: Request<()>| async move {
        let mut r = Response::new(Frames::new(frames(), false));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(code) = grpc_status {
            r.headers_mut()
                .insert("grpc-status", http::HeaderValue::from_static(code));
        }
        Ok::<_, std::io::Error>(r)
    }));
    svc.oneshot(Request::new(())).await.unwrap()
}

fn counts(cb: &CircuitBreaker) -> (u64, u64, u64) {
    let s = cb.stats();
    (s.calls(), s.successes(), s.failures())
}

#[tokio::test]
async fn a_handlers_successful_head_is_judged_by_how_its_body_ends() {
    let cb = CircuitBreaker::builder("shed-body").build().unwrap();
    let layer = ShedLayer::new().circuit_breaker(cb.clone());

    let res = call(&layer, 200, None, || vec![data("a")]).await;
    assert_eq!(counts(&cb), (0, 0, 0), "not at the head");
    drain(res.into_body()).await;
    assert_eq!(counts(&cb), (1, 1, 0), "ended: a success");

    let mut body = call(&layer, 200, None, || vec![data("a"), data("b")])
        .await
        .into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(counts(&cb), (2, 2, 0), "dropped before its end: a success");

    let res = call(&layer, 200, None, || vec![data("a"), Err("reset".into())]).await;
    drain(res.into_body()).await;
    assert_eq!(counts(&cb), (3, 2, 1), "failed mid-body: a failure");

    let res = call(&layer, 500, None, || vec![data("a")]).await;
    assert_eq!(counts(&cb), (4, 2, 2), "a 5xx, at its head");
    drain(res.into_body()).await;
    assert_eq!(counts(&cb), (4, 2, 2), "recorded once");
}

#[cfg(feature = "grpc")]
#[tokio::test]
async fn a_grpc_stream_is_judged_by_its_trailers_and_ignored_if_dropped_first() {
    use crate::body::tests::trailers;

    let cb = CircuitBreaker::builder("shed-grpc").build().unwrap();
    let layer = ShedLayer::new().grpc().circuit_breaker(cb.clone());

    let res = call(&layer, 200, None, || {
        vec![data("a"), trailers("grpc-status", "14")]
    })
    .await;
    assert_eq!(counts(&cb), (0, 0, 0), "not at the head");
    drain(res.into_body()).await;
    assert_eq!(counts(&cb), (1, 0, 1), "UNAVAILABLE in the trailers");

    let res = call(&layer, 200, None, || {
        vec![data("a"), trailers("grpc-status", "0")]
    })
    .await;
    drain(res.into_body()).await;
    assert_eq!(counts(&cb), (2, 1, 1), "OK in the trailers");

    let res = call(&layer, 200, None, || vec![data("a")]).await;
    drain(res.into_body()).await;
    assert_eq!(counts(&cb), (3, 1, 2), "ended without a status: a failure");

    let mut body = call(&layer, 200, None, || {
        vec![data("a"), trailers("grpc-status", "0")]
    })
    .await
    .into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(
        counts(&cb),
        (3, 1, 2),
        "dropped before its trailers: ignored"
    );

    let res = call(&layer, 200, Some("13"), Vec::new).await;
    assert_eq!(
        counts(&cb),
        (4, 1, 3),
        "a trailers-only INTERNAL, at its head"
    );
    drop(res);
    assert_eq!(counts(&cb), (4, 1, 3));
}
