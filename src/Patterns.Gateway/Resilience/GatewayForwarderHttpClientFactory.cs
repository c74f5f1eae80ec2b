using Microsoft.Extensions.Logging;
using Patterns.Gateway.Health;
using Patterns.Gateway.LoadBalancing;
using Yarp.ReverseProxy;
using Yarp.ReverseProxy.Forwarder;

namespace Patterns.Gateway.Resilience;

/// <summary>YARP's client factory with the gateway's <see cref="ResilienceHandler"/> around each cluster's handler.</summary>
internal sealed class GatewayForwarderHttpClientFactory(
    ILogger<ForwarderHttpClientFactory> logger, IServiceProvider services, WeightedLoadBalancingPolicy balancer, OutlierDetector outliers, ResiliencePolicyRegistry registry, TimeProvider timeProvider)
    : ForwarderHttpClientFactory(logger)
{
    protected override void ConfigureHandler(ForwarderHttpClientContext context, SocketsHttpHandler handler)
    {
        base.ConfigureHandler(context, handler);

        // Connections that can tell an upload what the destination did while the client's body was still coming (HTTP/1.1).
        handler.ConnectCallback ??= DestinationConnection.ConnectAsync;

        // And the same through TLS, on the decrypted stream (HTTP/1.1 with TLS).
        handler.PlaintextStreamFilter ??= TlsDestinationConnection.FilterAsync;
    }

    protected override HttpMessageHandler WrapHandler(ForwarderHttpClientContext context, HttpMessageHandler handler)
    {
        var lookup = (IProxyStateLookup)services.GetService(typeof(IProxyStateLookup))!;
        var log = (ILoggerFactory?)services.GetService(typeof(ILoggerFactory));
        ILogger resilienceLogger = log is null ? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance : log.CreateLogger<ResilienceHandler>();
        return new ResilienceHandler(context.ClusterId, lookup, balancer, outliers, registry, timeProvider, resilienceLogger) { InnerHandler = base.WrapHandler(context, handler) };
    }
}
