// Package health serves kube-proxy's two kinds of health check, with the
// same status codes, headers and bodies as kube-proxy v1.36
// (k8s.io/kubernetes/pkg/proxy/healthcheck), so that load balancers, probes
// and scripts written for kube-proxy keep working:
//
//   - ProxyHealth: /healthz and /livez on --healthz-bind-address
//     (default 0.0.0.0:10256). Unhealthy when a change queued for some IP
//     family has not been programmed within the timeout (kube-proxy uses
//     2 × --sync-period); /healthz is also unhealthy while the Node is
//     deleted or tainted ToBeDeletedByClusterAutoscaler, /livez is not.
//   - ServiceHealth: one HTTP server per healthCheckNodePort (LoadBalancer
//     Services with externalTrafficPolicy Local), answering 200 while the
//     Service has a ready endpoint on this node and the proxy is healthy,
//     503 otherwise.
package health
