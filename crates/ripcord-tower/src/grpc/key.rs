use http::Request;

use crate::keyed::ExtractKey;

/// Keys a gRPC call by its method, the request path
/// `/package.Service/Method` — one breaker per method, so a failing method
/// does not refuse calls to another.
///
/// ```
/// use ripcord_tower::grpc::MethodKey;
/// use ripcord_tower::keyed::ExtractKey;
///
/// let req = http::Request::post("http://h/grpc.health.v1.Health/Check").body(()).unwrap();
/// assert_eq!(MethodKey.extract(&req), "/grpc.health.v1.Health/Check");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MethodKey;

impl<B> ExtractKey<Request<B>> for MethodKey {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> String {
        req.uri().path().to_owned()
    }
}

/// Keys a gRPC call by its service, `/package.Service` (the request path
/// without the method) — one breaker per service.
///
/// ```
/// use ripcord_tower::grpc::ServiceKey;
/// use ripcord_tower::keyed::ExtractKey;
///
/// let req = http::Request::post("http://h/grpc.health.v1.Health/Watch").body(()).unwrap();
/// assert_eq!(ServiceKey.extract(&req), "/grpc.health.v1.Health");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceKey;

impl<B> ExtractKey<Request<B>> for ServiceKey {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> String {
        let path = req.uri().path();
        match path.rfind('/') {
            Some(at) if at > 0 => path[..at].to_owned(),
            _ => path.to_owned(),
        }
    }
}
