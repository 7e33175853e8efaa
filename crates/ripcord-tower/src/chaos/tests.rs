use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ripcord::chaos::{Fault, Injected, Latency};
use ripcord::Chaos;
use tower::{service_fn, Layer, ServiceExt};

use super::ChaosLayer;

fn counted() -> (
    Arc<AtomicU32>,
    impl tower::Service<u32, Response = u32, Error = std::io::Error, Future = impl Send>
        + Clone
        + Send
        + 'static,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = service_fn(move |x: u32| {
        c.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, std::io::Error>(x) }
    });
    (calls, svc)
}

#[tokio::test(start_paused = true)]
async fn each_fault_is_answered_as_the_table_says() {
    let (calls, inner) = counted();
    let make = |b: ripcord::ChaosBuilder| ChaosLayer::new(b.build().unwrap()).layer(inner.clone());

    let err = make(Chaos::builder("a").abort(1.0))
        .oneshot(1)
        .await
        .unwrap_err();
    let injected = err.downcast_ref::<Injected>().unwrap();
    assert_eq!(injected.fault(), Fault::Abort { status: None });

    let err = make(Chaos::builder("r").reset(1.0))
        .oneshot(1)
        .await
        .unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);

    let err = make(Chaos::builder("e").error(1.0))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<Injected>().unwrap().fault(),
        Fault::Error
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0, "no faulted call is made");

    let stalled = make(Chaos::builder("s").stall(1.0)).oneshot(1);
    let r = tokio::time::timeout(Duration::from_secs(3600), stalled).await;
    assert!(r.is_err(), "a stall never answers");

    let forced = make(Chaos::builder("o").outcome(1.0, ripcord::Outcome::Failure));
    assert_eq!(forced.oneshot(5).await.unwrap(), 5);

    let start = tokio::time::Instant::now();
    let slow = make(Chaos::builder("l").latency(1.0, Latency::fixed(Duration::from_millis(700))));
    assert_eq!(slow.oneshot(6).await.unwrap(), 6);
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    assert_eq!(calls.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn a_spared_call_goes_straight_through() {
    let (calls, inner) = counted();
    let chaos = Chaos::builder("c").abort(0.5).seed(4).build().unwrap();
    let svc = ChaosLayer::new(chaos.clone()).layer(inner);
    let mut failed = 0;
    for i in 0..1024 {
        match svc.clone().oneshot(i).await {
            Ok(v) => assert_eq!(v, i),
            Err(_) => failed += 1,
        }
    }
    assert!((506..=518).contains(&failed), "{failed}");
    assert_eq!(calls.load(Ordering::Relaxed), 1024 - failed);
    assert_eq!(chaos.counts(), (1024, u64::from(failed)));
}

#[cfg(feature = "http")]
mod http {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use ripcord::Chaos;
    use tower::{service_fn, Layer, ServiceExt};

    use crate::chaos::HttpChaosLayer;

    fn hello() -> impl tower::Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = std::io::Error,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        service_fn(|_: Request<()>| async {
            Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_resets_and_stalled_bodies() {
        let layer = |b: ripcord::ChaosBuilder| HttpChaosLayer::new(b.build().unwrap());

        let r = layer(Chaos::builder("a").abort(1.0))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["x-ripcord-policy"], "chaos");
        let r = layer(Chaos::builder("a").abort(1.0).abort_status(418))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
        let r = layer(Chaos::builder("e").error(1.0))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);

        let err = layer(Chaos::builder("r").reset(1.0))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap_err();
        let io = err.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);

        // A stall: the head comes, the body never does.
        let r = layer(Chaos::builder("s").stall(1.0))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.body().is_stalled());
        let body = tokio::time::timeout(Duration::from_secs(3600), r.into_body().collect()).await;
        assert!(body.is_err(), "a stalled body never ends");

        // Spared: the inner body, whole.
        let r = layer(Chaos::builder("none"))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }

    #[cfg(feature = "grpc")]
    #[tokio::test]
    async fn grpc_aborts_are_trailers_only_with_their_code() {
        let layer = |b: ripcord::ChaosBuilder| HttpChaosLayer::new(b.build().unwrap()).grpc();
        let r = layer(Chaos::builder("a").abort(1.0).abort_status(8))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        let r = layer(Chaos::builder("a").abort(1.0).abort_status(503))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.headers()["grpc-status"], "14");
        let r = layer(Chaos::builder("e").error(1.0))
            .layer(hello())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(r.headers()["grpc-status"], "13");
    }
}
