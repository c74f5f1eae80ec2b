using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Health;

/// <summary>
/// YARP's passive health hook, named so a cluster can choose outlier detection. Attempts are counted as they fail or their
/// answers' headers come: under a policy with resilience in the gateway's resilience handler, attempt by attempt (retries and
/// hedges included); otherwise in the route's transformer (<see cref="OutlierDetector.RecordResponse"/>). What is left for the
/// end of the request, when YARP calls this hook, is the body of the answer that went to the client: one the destination broke
/// off is a failure, a complete one ends a run of failures (<see cref="OutlierDetector.Completed"/>).
/// </summary>
internal sealed class OutlierDetectionPolicy(OutlierDetector outliers) : IPassiveHealthCheckPolicy
{
    public string Name => GatewayPolicies.OutlierDetection;

    public void RequestProxied(HttpContext context, ClusterState cluster, DestinationState destination) => outliers.Completed(context, cluster, destination);
}
