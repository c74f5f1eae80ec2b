using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Health;

/// <summary>
/// YARP's passive health hook, named so a cluster can choose outlier detection. The counting itself happens elsewhere:
/// under a policy with resilience in the gateway's resilience handler, attempt by attempt (retries and hedges included);
/// otherwise in the route's transformer as the one attempt's response comes back (<see cref="OutlierDetector.RecordResponse"/>).
/// A cluster without outlier settings has nothing to count. So nothing is left to do here, and no per-request marker is
/// needed to say the attempts were counted.
/// </summary>
internal sealed class OutlierDetectionPolicy : IPassiveHealthCheckPolicy
{
    public string Name => GatewayPolicies.OutlierDetection;

    public void RequestProxied(HttpContext context, ClusterState cluster, DestinationState destination)
    {
    }
}
