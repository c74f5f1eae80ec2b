using Microsoft.AspNetCore.Http;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.Model;

namespace Patterns.Gateway.Health;

/// <summary>
/// YARP's passive health hook. Attempts that went through the gateway's resilience handler were already counted
/// there, one by one; any other request is judged here by its final outcome.
/// </summary>
internal sealed class OutlierDetectionPolicy(OutlierDetector detector) : IPassiveHealthCheckPolicy
{
    public string Name => GatewayPolicies.OutlierDetection;

    public void RequestProxied(HttpContext context, ClusterState cluster, DestinationState destination)
    {
        if (context.Features.Get<AttemptsRecorded>() is not null || context.RequestAborted.IsCancellationRequested)
        {
            return;
        }

        var error = context.Features.Get<IForwarderErrorFeature>();
        var failure = error is not null
            ? error.Error is not (ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled or ForwarderError.ResponseBodyCanceled or ForwarderError.RequestBodyClient or ForwarderError.ResponseBodyClient)
            : context.Response.StatusCode >= 500;
        detector.Record(cluster, destination, failure);
    }
}
